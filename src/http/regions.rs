//! Regions, regional preferences, feature checks and routing information (storage
//! configuration is in `storage.rs`). A tenant key reaches only its own
//! tenant (another id is a 404); an operator key reaches any.

use actix_web::web::{Data, Path};
use actix_web::{get, patch};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dto;
use super::envelope::Reply;
use super::extract::{nullable, Json, ListQuery};
use super::storage::failure;
use super::{acting_tenant, require, ApiError, AppState};
use crate::auth::Principal;
use crate::regions::{self, Preferences, Refusal};
use crate::storage::StorageMode;
use crate::store::Placement;

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid { field, reason } => ApiError::invalid(&field, reason),
            Refusal::Gated(check) => {
                let needed = match &check.required_plan {
                    Some(plan) => format!("the {plan} plan or above"),
                    None => "a plan that no tenant plan offers".into(),
                };
                ApiError::PlanRequired {
                    message: format!(
                        "{} needs {needed}; this tenant is on the {} plan",
                        check.feature_key, check.plan
                    ),
                    details: json!({
                        "feature": check.feature_key,
                        "plan": check.plan,
                        "requiredPlan": check.required_plan,
                    }),
                }
            }
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    id: String,
    name: String,
    location: String,
    available: bool,
    compliance_levels: Vec<String>,
    residency: Vec<String>,
}

/// `GET /regions`: the deployment's regions.
#[utoipa::path(
    tag = "regions",
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<Region>>), crate::http::openapi::Errors)
)]
#[get("/regions")]
pub async fn list_regions(
    principal: Principal,
    state: Data<AppState>,
) -> Result<Reply<Vec<Region>>, ApiError> {
    require(&principal, "regions:read")?;
    let regions = state
        .config
        .regions
        .iter()
        .map(|(id, r)| Region {
            id: id.clone(),
            name: r.name.clone(),
            location: r.location.clone(),
            available: r.available,
            compliance_levels: r.compliance.clone(),
            residency: r.residency.clone(),
        })
        .collect::<Vec<_>>();
    Ok(Reply::ok(regions))
}

/// The tenant named in the path, if the caller may act on it, with its plan and flags.
pub(super) async fn tenant_in_path(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    scope: &str,
) -> Result<dgidgi_actors::Tenant, ApiError> {
    require(principal, scope)?;
    let id = acting_tenant(state, principal, Some(tenant_id)).await?;
    Ok(state.tenants.get(&id).await?)
}

pub(super) async fn preferences(
    state: &AppState,
    tenant_id: &str,
) -> Result<Preferences, ApiError> {
    Ok(state
        .store
        .placement(tenant_id, Placement::Preferences)
        .await?
        .unwrap_or_else(|| Preferences::defaults(&state.config)))
}

/// `GET /regions/preferences/:tenantId`
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Preferences>), crate::http::openapi::Errors)
)]
#[get("/regions/preferences/{tenant_id}")]
pub async fn get_preferences(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
) -> Result<Reply<dto::Preferences>, ApiError> {
    let tenant = tenant_in_path(&state, &principal, &tenant_id, "regions:read").await?;
    Ok(Reply::ok(preferences(&state, &tenant.id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreferencesPatch {
    primary_region: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    secondary_region: Option<Option<String>>,
    data_residency_required: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    data_residency_region: Option<Option<String>>,
    compliance_level: Option<String>,
}

/// `PATCH /regions/preferences/:tenantId`: fields left out keep their value; `null` clears
/// `secondaryRegion` or `dataResidencyRegion`.
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = PreferencesPatch,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Preferences>), crate::http::openapi::Errors)
)]
#[patch("/regions/preferences/{tenant_id}")]
pub async fn update_preferences(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
    body: Json<PreferencesPatch>,
) -> Result<Reply<dto::Preferences>, ApiError> {
    let tenant = tenant_in_path(&state, &principal, &tenant_id, "regions:write").await?;
    let patch = body.0;
    let mut prefs = preferences(&state, &tenant.id).await?;
    let mut changed = Vec::new();
    if let Some(v) = patch.primary_region {
        prefs.primary_region = v;
        changed.push("primaryRegion");
    }
    if let Some(v) = patch.secondary_region {
        prefs.secondary_region = v;
        changed.push("secondaryRegion");
    }
    if let Some(v) = patch.data_residency_required {
        prefs.data_residency_required = v;
        changed.push("dataResidencyRequired");
    }
    if let Some(v) = patch.data_residency_region {
        prefs.data_residency_region = v;
        changed.push("dataResidencyRegion");
    }
    if let Some(v) = patch.compliance_level {
        prefs.compliance_level = v;
        changed.push("complianceLevel");
    }
    let flags = &tenant.settings.features;
    regions::check_preferences(&state.config, &tenant.plan, flags, &prefs, &changed)?;
    // Platform storage pinned to a region must keep to the residency rule too.
    let stored = state.storage.record(&tenant.id).await.map_err(failure)?;
    if let (Some(residency), StorageMode::Platform, Some(region)) =
        (prefs.residency(), stored.mode, &stored.platform_region)
    {
        if !regions::satisfies(&state.config, region, residency) {
            return Err(ApiError::invalid(
                "dataResidencyRegion",
                format!("platform storage is in '{region}', outside '{residency}'; move it first"),
            ));
        }
    }
    state
        .store
        .save_placement(&tenant.id, Placement::Preferences, &prefs)
        .await?;
    Ok(Reply::ok(prefs))
}

/// `GET /regions/features/:tenantId/check/:featureKey`
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("feature_key" = String, Path, description = "secondaryRegion, byos, dataResidency or compliance.<level>")),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::FeatureCheck>), crate::http::openapi::Errors)
)]
#[get("/regions/features/{tenant_id}/check/{feature_key}")]
pub async fn check_feature(
    principal: Principal,
    state: Data<AppState>,
    path: Path<(String, String)>,
) -> Result<Reply<dto::FeatureCheck>, ApiError> {
    let (tenant_id, feature_key) = path.into_inner();
    let tenant = tenant_in_path(&state, &principal, &tenant_id, "regions:read").await?;
    regions::check_feature(
        &state.config,
        &tenant.plan,
        &tenant.settings.features,
        &feature_key,
    )
    .map(Reply::ok)
    .ok_or_else(|| ApiError::NotFound {
        message:
            "Feature not found: use secondaryRegion, byos, dataResidency or compliance.<level>"
                .to_string(),
        details: json!({ "featureKey": feature_key }),
    })
}

/// `GET /routing-info`: this node, and where the caller's tenant lives.
#[utoipa::path(
    tag = "regions",
    params(crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<Value>, description = "{nodeId, nodeRegion, tenantId, primaryRegion, secondaryRegion, servedHere, reason, nodes: [{id, region, runs, this}]} (nodes: the live nodes sharing the database)"), crate::http::openapi::Errors)
)]
#[get("/routing-info")]
pub async fn routing_info(
    principal: Principal,
    state: Data<AppState>,
    query: ListQuery,
) -> Result<Reply<Value>, ApiError> {
    require(&principal, "regions:read")?;
    let node = json!({ "id": state.config.node_id(), "region": state.config.node.region });
    let nodes: Vec<Value> = super::ops::live_nodes(&state)
        .await
        .into_iter()
        .map(|n| json!({ "id": n.id, "region": n.region, "runs": n.runs, "this": n.this }))
        .collect();
    let tenant_id = match (&principal.tenant_id, &query.tenant_id) {
        (None, None) => None,
        (_, named) => Some(acting_tenant(&state, &principal, named.as_deref()).await?),
    };
    let Some(tenant_id) = tenant_id else {
        return Ok(Reply::ok(json!({
            "nodeId": node["id"], "nodeRegion": node["region"],
            "tenantId": null, "primaryRegion": null, "secondaryRegion": null,
            "servedHere": true, "reason": "operator", "nodes": nodes,
        })));
    };
    let prefs = preferences(&state, &tenant_id).await?;
    let (served, reason) = regions::serves(&state.config, &prefs);
    Ok(Reply::ok(json!({
        "nodeId": node["id"], "nodeRegion": node["region"],
        "tenantId": tenant_id,
        "primaryRegion": prefs.primary_region,
        "secondaryRegion": prefs.secondary_region,
        "servedHere": served,
        "reason": reason,
        "nodes": nodes,
    })))
}
