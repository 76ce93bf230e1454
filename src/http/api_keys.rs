//! API keys: created in the caller's tenant (or, by an operator, in the tenant it names),
//! shown once, listed without their secret, revoked at once.

use actix_web::web::{Data, Path};
use actix_web::{delete, get, post};
use serde::Deserialize;

use super::dto;
use super::envelope::Reply;
use super::extract::{Json, ListQuery};
use super::tenants::CreatedKey;
use super::{acting_tenant, require, text, ApiError, AppState};
use crate::auth::{generate_key, KeyType, Principal, TENANT_SCOPES};
use crate::ids::{now_rfc3339, IdKind};
use crate::store::NewApiKey;

const ENVIRONMENTS: [&str; 4] = ["production", "staging", "development", "test"];

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(rename = "type")]
    key_type: String,
    scopes: Option<Vec<String>>,
    environment: Option<String>,
    #[serde(alias = "expiresAt")]
    expires_at: Option<String>,
    #[serde(alias = "tenantId")]
    tenant_id: Option<String>,
}

#[utoipa::path(
    tag = "api-keys",
    request_body = CreateKey,
    responses((status = 201, body = crate::http::openapi::Envelope<CreatedKey>, description = "Created; the secret is shown here only"), crate::http::openapi::Errors)
)]
#[post("/api-keys")]
pub async fn create_key(
    principal: Principal,
    state: Data<AppState>,
    body: Json<CreateKey>,
) -> Result<Reply<CreatedKey>, ApiError> {
    require(&principal, "keys:write")?;
    let body = body.0;
    let name = text("name", &body.name, 1, 200)?;
    let key_type = KeyType::parse(&body.key_type).ok_or_else(|| {
        ApiError::invalid(
            "type",
            "must be one of sdk, cli, ci, int, mkt (or op, for operators)",
        )
    })?;
    let tenant_id = if key_type == KeyType::Operator {
        if !principal.is_operator() {
            return Err(ApiError::Forbidden(
                "Only platform operators can create operator keys".into(),
            ));
        }
        if body.tenant_id.is_some() {
            return Err(ApiError::invalid(
                "tenant_id",
                "an operator key belongs to no tenant",
            ));
        }
        None
    } else {
        Some(acting_tenant(&state, &principal, body.tenant_id.as_deref()).await?)
    };
    let scopes = match (key_type, body.scopes) {
        (KeyType::Operator, Some(_)) => {
            return Err(ApiError::invalid(
                "scopes",
                "operator keys hold every scope",
            ))
        }
        (KeyType::Operator, None) => Vec::new(),
        (_, Some(asked)) => checked_scopes(&principal, asked)?,
        (_, None) => TENANT_SCOPES
            .iter()
            .filter(|s| principal.has(s))
            .map(|s| s.to_string())
            .collect(),
    };
    let environment = body.environment.unwrap_or_else(|| "production".into());
    if !ENVIRONMENTS.contains(&environment.as_str()) {
        return Err(ApiError::invalid(
            "environment",
            format!("must be one of {}", ENVIRONMENTS.join(", ")),
        ));
    }
    let now = now_rfc3339();
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|at| future_time(at, &now))
        .transpose()?;
    let secret = generate_key(key_type);
    let record = state
        .store
        .create_key(&NewApiKey {
            id: IdKind::ApiKey.new_id(),
            tenant_id,
            name,
            key_type: key_type.as_str().into(),
            prefix: secret.prefix,
            hash: secret.hash,
            scopes,
            environment,
            expires_at,
            created_at: now,
        })
        .await?;
    Ok(Reply::created(CreatedKey {
        record: record.into(),
        key: secret.secret,
    })
    .carrying_secret())
}

#[utoipa::path(
    tag = "api-keys",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::ApiKeyRecord>>), crate::http::openapi::Errors)
)]
#[get("/api-keys")]
pub async fn list_keys(
    principal: Principal,
    state: Data<AppState>,
    query: ListQuery,
) -> Result<Reply<Vec<dto::ApiKeyRecord>>, ApiError> {
    require(&principal, "keys:read")?;
    // An operator without tenant_id lists the operator keys.
    let tenant_id = match (&principal.tenant_id, &query.tenant_id) {
        (None, None) => None,
        _ => Some(acting_tenant(&state, &principal, query.tenant_id.as_deref()).await?),
    };
    let page = state
        .store
        .list_keys(tenant_id.as_deref(), &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::ApiKeyRecord>), crate::http::openapi::Errors)
)]
#[delete("/api-keys/{id}")]
pub async fn revoke_key(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::ApiKeyRecord>, ApiError> {
    require(&principal, "keys:write")?;
    // A key may revoke only keys whose scopes it holds itself, as it may only create those.
    if let Some(target) = state.store.key_by_id(&id).await? {
        if target.key.tenant_id.is_some() && target.key.tenant_id == principal.tenant_id {
            if let Some(scope) = target.key.scopes.iter().find(|s| !principal.has(s)) {
                return Err(ApiError::Forbidden(format!(
                    "A key cannot revoke a key with the '{scope}' scope it lacks"
                )));
            }
        }
    }
    let revoked = state
        .store
        .revoke_key(&id, principal.tenant_id.as_deref(), &now_rfc3339())
        .await?
        .ok_or_else(|| ApiError::not_found("api_key", &id))?;
    state
        .forget_keys(crate::store::KeysChanged::Key(revoked.id.clone()))
        .await;
    Ok(Reply::ok(revoked))
}

/// Scopes a new key asks for: known ones, each held by the caller.
fn checked_scopes(principal: &Principal, asked: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut scopes = Vec::with_capacity(asked.len());
    for scope in asked {
        if !TENANT_SCOPES.contains(&scope.as_str()) {
            return Err(ApiError::invalid(
                "scopes",
                format!("unknown scope '{scope}'"),
            ));
        }
        if !principal.has(&scope) {
            return Err(ApiError::Forbidden(format!(
                "A key cannot grant the '{scope}' scope it lacks"
            )));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

/// An RFC 3339 time after `now`, in the stored (UTC, milliseconds) form.
fn future_time(at: &str, now: &str) -> Result<String, ApiError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(at).map_err(|_| {
        ApiError::invalid(
            "expires_at",
            "must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z",
        )
    })?;
    let stored = dgidgi_actors::time::format(parsed.with_timezone(&chrono::Utc));
    if stored.as_str() <= now {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    Ok(stored)
}
