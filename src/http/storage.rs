//! A tenant's storage configuration: platform storage or its own bucket (BYOS), validated
//! with a real round trip before it is stored, and validated again on demand. A tenant key
//! reaches only its own tenant (another id is a 404); an operator key reaches any.

use actix_web::web::{Data, Path};
use actix_web::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::dto;
use super::envelope::Reply;
use super::extract::Json;
use super::regions::{preferences, tenant_in_path};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::ids::now_rfc3339;
use crate::regions::{self};
use crate::storage::{self, ByosRequest, StorageMode, StorageRecord, Validation};
use crate::store::Placement;

/// A storage configuration as responses show it: keys masked.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageView {
    storage_mode: dto::StorageMode,
    platform_region: Option<String>,
    byos_provider: Option<dto::ByosProvider>,
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
            storage_mode: record.mode.into(),
            platform_region: (record.mode == StorageMode::Platform).then_some(platform_region),
            byos_provider: byos.as_ref().map(|b| b.provider.into()),
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

pub(super) fn failure(f: storage::Failure) -> ApiError {
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
    validation: Option<dto::Validation>,
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
        validation: validation.map(Into::into),
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
    storage_mode: dto::StorageMode,
    provider: Option<dto::ByosProvider>,
    bucket: Option<String>,
    #[serde(flatten)]
    validation: dto::Validation,
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
        storage_mode: record.mode.into(),
        provider: record.byos.as_ref().map(|b| b.provider.into()),
        bucket: record.byos.as_ref().map(|b| b.bucket.clone()),
        validation: validation.into(),
        validated_at: now,
    }))
}
