//! Regions, regional preferences, storage configuration (platform or BYOS) and its
//! validation, feature checks and routing information. A tenant key reaches only its own
//! tenant (another id is a 404); an operator key reaches any.

use actix_web::web::{Data, Path};
use actix_web::{get, patch, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::envelope::Reply;
use super::extract::{nullable, Json, ListQuery};
use super::{acting_tenant, require, ApiError, AppState};
use crate::auth::Principal;
use crate::ids::now_rfc3339;
use crate::regions::{self, FeatureCheck, Preferences, Refusal};
use crate::storage::{self, ByosProvider, ByosRequest, StorageMode, StorageRecord, Validation};
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
        .collect();
    Ok(Reply::ok(regions))
}

/// The tenant named in the path, if the caller may act on it, with its plan and flags.
async fn tenant_in_path(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    scope: &str,
) -> Result<dgidgi_actors::Tenant, ApiError> {
    require(principal, scope)?;
    let id = acting_tenant(state, principal, Some(tenant_id)).await?;
    Ok(state.tenants.get(&id).await?)
}

async fn preferences(state: &AppState, tenant_id: &str) -> Result<Preferences, ApiError> {
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
    responses((status = 200, body = crate::http::openapi::Envelope<Preferences>), crate::http::openapi::Errors)
)]
#[get("/regions/preferences/{tenant_id}")]
pub async fn get_preferences(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
) -> Result<Reply<Preferences>, ApiError> {
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
    responses((status = 200, body = crate::http::openapi::Envelope<Preferences>), crate::http::openapi::Errors)
)]
#[patch("/regions/preferences/{tenant_id}")]
pub async fn update_preferences(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
    body: Json<PreferencesPatch>,
) -> Result<Reply<Preferences>, ApiError> {
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

/// A storage configuration as responses show it: keys masked.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageView {
    storage_mode: StorageMode,
    platform_region: Option<String>,
    byos_provider: Option<ByosProvider>,
    byos_endpoint: Option<String>,
    byos_bucket: Option<String>,
    byos_region: Option<String>,
    byos_access_key: Option<String>,
    byos_secret_key: Option<String>,
    validated_at: Option<String>,
    updated_at: Option<String>,
}

impl StorageView {
    fn of(record: StorageRecord, platform_region: String) -> Self {
        let byos = record.byos;
        Self {
            storage_mode: record.mode,
            platform_region: (record.mode == StorageMode::Platform).then_some(platform_region),
            byos_provider: byos.as_ref().map(|b| b.provider),
            byos_endpoint: byos.as_ref().and_then(|b| b.endpoint.clone()),
            byos_bucket: byos.as_ref().map(|b| b.bucket.clone()),
            byos_region: byos.as_ref().and_then(|b| b.region.clone()),
            byos_access_key: byos.as_ref().map(|b| b.access_key_masked.clone()),
            byos_secret_key: byos.as_ref().map(|_| "****".to_string()),
            validated_at: record.validated_at,
            updated_at: record.updated_at,
        }
    }
}

fn failure(f: storage::Failure) -> ApiError {
    ApiError::internal(f.message)
}

async fn storage_view(state: &AppState, tenant_id: &str, record: StorageRecord) -> StorageView {
    let region = state.storage.platform_region(tenant_id, &record).await;
    StorageView::of(record, region)
}

/// `GET /regions/storage/:tenantId`
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = crate::http::openapi::Envelope<StorageView>), crate::http::openapi::Errors)
)]
#[get("/regions/storage/{tenant_id}")]
pub async fn get_storage(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
) -> Result<Reply<StorageView>, ApiError> {
    let tenant = tenant_in_path(&state, &principal, &tenant_id, "regions:read").await?;
    let record = state.storage.record(&tenant.id).await.map_err(failure)?;
    Ok(Reply::ok(storage_view(&state, &tenant.id, record).await))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageBody {
    storage_mode: String,
    platform_region: Option<String>,
    byos_provider: Option<String>,
    byos_endpoint: Option<String>,
    byos_bucket: Option<String>,
    byos_region: Option<String>,
    byos_access_key: Option<String>,
    byos_secret_key: Option<String>,
}

/// A BYOS configuration is validated with a real round trip before it is stored, so that
/// a run never writes to a bucket that was not checked.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSaved {
    #[serde(flatten)]
    storage: StorageView,
    validation: Option<Validation>,
}

/// `PUT /regions/storage/:tenantId`: platform storage (in `platformRegion`, default the
/// primary region) or the tenant's bucket. Keys left out keep the stored ones. A bucket is
/// stored only once it passed validation.
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = StorageBody,
    responses((status = 200, body = crate::http::openapi::Envelope<StorageSaved>, description = "Stored (a bucket only after it passed validation)"), crate::http::openapi::Errors)
)]
#[put("/regions/storage/{tenant_id}")]
pub async fn put_storage(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
    body: Json<StorageBody>,
) -> Result<Reply<StorageSaved>, ApiError> {
    let tenant = tenant_in_path(&state, &principal, &tenant_id, "regions:write").await?;
    let body = body.0;
    let prefs = preferences(&state, &tenant.id).await?;
    let stored = state.storage.record(&tenant.id).await.map_err(failure)?;
    let mut record = match body.storage_mode.as_str() {
        "platform" => {
            if let Some(region) = &body.platform_region {
                regions::region(&state.config, "platformRegion", region)?;
                if let Some(residency) = prefs.residency() {
                    if !regions::satisfies(&state.config, region, residency) {
                        return Err(ApiError::invalid(
                            "platformRegion",
                            format!("region '{region}' does not keep data in '{residency}'"),
                        ));
                    }
                }
            }
            let stray = [
                ("byosProvider", &body.byos_provider),
                ("byosEndpoint", &body.byos_endpoint),
                ("byosBucket", &body.byos_bucket),
                ("byosRegion", &body.byos_region),
                ("byosAccessKey", &body.byos_access_key),
                ("byosSecretKey", &body.byos_secret_key),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, v)| v.is_some()) {
                return Err(ApiError::invalid(
                    field,
                    "applies only to storageMode 'byos'",
                ));
            }
            StorageRecord {
                platform_region: body.platform_region,
                ..StorageRecord::platform()
            }
        }
        "byos" => {
            regions::require_feature(
                &state.config,
                &tenant.plan,
                &tenant.settings.features,
                "byos",
            )?;
            if body.platform_region.is_some() {
                return Err(ApiError::invalid(
                    "platformRegion",
                    "applies only to storageMode 'platform'",
                ));
            }
            let request = ByosRequest {
                provider: body.byos_provider,
                endpoint: body.byos_endpoint,
                bucket: body.byos_bucket,
                region: body.byos_region,
                access_key: body.byos_access_key,
                secret_key: body.byos_secret_key,
            };
            let byos = state
                .storage
                .byos_config(&tenant.id, request, stored.byos.as_ref())?;
            StorageRecord {
                mode: StorageMode::Byos,
                platform_region: None,
                byos: Some(byos),
                validated_at: None,
                updated_at: None,
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "storageMode",
                "must be 'platform' or 'byos'",
            ))
        }
    };
    let validation = if record.mode == StorageMode::Byos {
        let validation = run_validation(&state, &tenant.id, &record).await;
        if !validation.valid {
            let reason = validation
                .reason
                .clone()
                .expect("a failed validation has a reason");
            return Err(ApiError::Validation {
                message: format!(
                    "The bucket failed validation ({}): {}",
                    reason.code, reason.message
                ),
                details: json!({ "field": "storage", "reason": reason.code, "validation": validation }),
            });
        }
        record.validated_at = Some(now_rfc3339());
        Some(validation)
    } else {
        None
    };
    record.updated_at = Some(now_rfc3339());
    state
        .store
        .save_placement(&tenant.id, Placement::Storage, &record)
        .await?;
    tracing::info!(tenant_id = %tenant.id, mode = ?record.mode, "storage configuration changed");
    Ok(Reply::ok(StorageSaved {
        storage: storage_view(&state, &tenant.id, record).await,
        validation,
    }))
}

async fn run_validation(state: &AppState, tenant_id: &str, record: &StorageRecord) -> Validation {
    match state.storage.tenant_root(tenant_id, record, true).await {
        Ok(root) => storage::validate(root).await,
        Err(failure) => Validation {
            valid: false,
            checks: Vec::new(),
            reason: Some(failure),
        },
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    storage_mode: StorageMode,
    provider: Option<ByosProvider>,
    bucket: Option<String>,
    #[serde(flatten)]
    validation: Validation,
    validated_at: String,
}

/// `POST /regions/storage/:tenantId/validate`: a round trip to the stored configuration's
/// storage, each check with its latency. A failed validation is a 200 whose `valid` is false.
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = crate::http::openapi::Envelope<ValidationReport>, description = "The round trip ran; valid says whether every check passed"), crate::http::openapi::Errors)
)]
#[post("/regions/storage/{tenant_id}/validate")]
pub async fn validate_storage(
    principal: Principal,
    state: Data<AppState>,
    tenant_id: Path<String>,
) -> Result<Reply<ValidationReport>, ApiError> {
    let tenant = tenant_in_path(&state, &principal, &tenant_id, "regions:write").await?;
    let mut record = state.storage.record(&tenant.id).await.map_err(failure)?;
    let validation = run_validation(&state, &tenant.id, &record).await;
    let now = now_rfc3339();
    if validation.valid {
        record.validated_at = Some(now.clone());
        state
            .store
            .save_placement(&tenant.id, Placement::Storage, &record)
            .await?;
    } else if let Some(reason) = &validation.reason {
        tracing::warn!(tenant_id = %tenant.id, reason = reason.code, "storage validation failed");
    }
    Ok(Reply::ok(ValidationReport {
        storage_mode: record.mode,
        provider: record.byos.as_ref().map(|b| b.provider),
        bucket: record.byos.as_ref().map(|b| b.bucket.clone()),
        validation,
        validated_at: now,
    }))
}

/// `GET /regions/features/:tenantId/check/:featureKey`
#[utoipa::path(
    tag = "regions",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("feature_key" = String, Path, description = "secondaryRegion, byos, dataResidency or compliance.<level>")),
    responses((status = 200, body = crate::http::openapi::Envelope<FeatureCheck>), crate::http::openapi::Errors)
)]
#[get("/regions/features/{tenant_id}/check/{feature_key}")]
pub async fn check_feature(
    principal: Principal,
    state: Data<AppState>,
    path: Path<(String, String)>,
) -> Result<Reply<FeatureCheck>, ApiError> {
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
    responses((status = 200, body = crate::http::openapi::Envelope<Value>, description = "{nodeId, nodeRegion, tenantId, primaryRegion, secondaryRegion, servedHere, reason}"), crate::http::openapi::Errors)
)]
#[get("/routing-info")]
pub async fn routing_info(
    principal: Principal,
    state: Data<AppState>,
    query: ListQuery,
) -> Result<Reply<Value>, ApiError> {
    require(&principal, "regions:read")?;
    let node = json!({ "id": state.config.node_id(), "region": state.config.node.region });
    let tenant_id = match (&principal.tenant_id, &query.tenant_id) {
        (None, None) => None,
        (_, named) => Some(acting_tenant(&state, &principal, named.as_deref()).await?),
    };
    let Some(tenant_id) = tenant_id else {
        return Ok(Reply::ok(json!({
            "nodeId": node["id"], "nodeRegion": node["region"],
            "tenantId": null, "primaryRegion": null, "secondaryRegion": null,
            "servedHere": true, "reason": "operator",
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
    })))
}
