//! Webhook endpoints: register (the secret shown once), list, read, change, delete; their
//! deliveries with every attempt; redeliver; a test ping; secret rotation.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{delete, get, patch, post};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dto;
use super::envelope::Reply;
use super::extract::{nullable, Json, ListQuery};
use super::{acting_tenant, optional_text, outbound_url, require, ApiError, AppState};
use crate::auth::Principal;
use crate::store::{Endpoint, NewEndpoint};
use crate::webhooks::signing;
use dgidgi_actors::events::DomainEvent;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    url: String,
    events: Vec<String>,
    secret: Option<String>,
    description: Option<String>,
    #[serde(alias = "tenantId")]
    tenant_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    endpoint: dto::Endpoint,
    /// Shown here only.
    secret: String,
}

/// Whose endpoints a request deals with: a tenant's, or (operator without `tenant_id`) the
/// platform-wide ones.
async fn owner(
    state: &AppState,
    principal: &Principal,
    named: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match (principal.is_operator(), named) {
        (true, None) => Ok(None),
        _ => Ok(Some(acting_tenant(state, principal, named).await?)),
    }
}

#[utoipa::path(
    tag = "webhooks",
    params(crate::http::openapi::TenantParam),
    request_body = CreateEndpoint,
    responses((status = 201, body = crate::http::openapi::Envelope<WithSecret>, description = "Created; the secret is shown here only"), crate::http::openapi::Errors)
)]
#[post("/webhooks")]
pub async fn create_endpoint(
    principal: Principal,
    state: Data<AppState>,
    body: Json<CreateEndpoint>,
) -> Result<Reply<WithSecret>, ApiError> {
    require(&principal, "webhooks:write")?;
    let body = body.0;
    let tenant_id = owner(&state, &principal, body.tenant_id.as_deref()).await?;
    let url = outbound_url(&state, &body.url)?;
    let events = events(body.events)?;
    let secret = secret(body.secret)?;
    let endpoint = state
        .store
        .create_endpoint(NewEndpoint {
            tenant_id,
            url,
            events,
            description: optional_text("description", body.description.as_deref(), 500)?,
            sealed_secret: state.sealer.seal(&secret),
            secret_hint: signing::hint(&secret),
        })
        .await?;
    Ok(Reply::created(WithSecret {
        endpoint: endpoint.into(),
        secret,
    })
    .carrying_secret())
}

#[utoipa::path(
    tag = "webhooks",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Endpoint>>), crate::http::openapi::Errors)
)]
#[get("/webhooks")]
pub async fn list_endpoints(
    principal: Principal,
    state: Data<AppState>,
    query: ListQuery,
) -> Result<Reply<Vec<dto::Endpoint>>, ApiError> {
    require(&principal, "webhooks:read")?;
    let tenant_id = owner(&state, &principal, query.tenant_id.as_deref()).await?;
    let page = state
        .store
        .list_endpoints(tenant_id.as_deref(), &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Endpoint>), crate::http::openapi::Errors)
)]
#[get("/webhooks/{id}")]
pub async fn get_endpoint(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::Endpoint>, ApiError> {
    require(&principal, "webhooks:read")?;
    Ok(Reply::ok(find(&state, &principal, &id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    url: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = UpdateEndpoint,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Endpoint>), crate::http::openapi::Errors)
)]
#[patch("/webhooks/{id}")]
pub async fn update_endpoint(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<UpdateEndpoint>,
) -> Result<Reply<dto::Endpoint>, ApiError> {
    require(&principal, "webhooks:write")?;
    let mut endpoint = find(&state, &principal, &id).await?;
    let body = body.0;
    if let Some(u) = body.url {
        endpoint.url = outbound_url(&state, &u)?;
    }
    if let Some(e) = body.events {
        endpoint.events = events(e)?;
    }
    if let Some(d) = body.description {
        endpoint.description = optional_text("description", d.as_deref(), 500)?;
    }
    if let Some(enabled) = body.enabled {
        endpoint.enabled = enabled;
    }
    state
        .store
        .save_endpoint(&endpoint, principal.tenant_id.as_deref())
        .await?;
    Ok(Reply::ok(find(&state, &principal, &id).await?))
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = crate::http::openapi::Envelope<crate::http::openapi::Deleted>), crate::http::openapi::Errors)
)]
#[delete("/webhooks/{id}")]
pub async fn delete_endpoint(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    require(&principal, "webhooks:write")?;
    find(&state, &principal, &id).await?;
    state
        .store
        .delete_endpoint(&id, principal.tenant_id.as_deref())
        .await?;
    Ok(Reply::ok(json!({ "id": id.as_str(), "deleted": true })))
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Delivery>>), crate::http::openapi::Errors)
)]
#[get("/webhooks/{id}/deliveries")]
pub async fn list_deliveries(
    principal: Principal,
    state: Data<AppState>,
    query: ListQuery,
    id: Path<String>,
) -> Result<Reply<Vec<dto::Delivery>>, ApiError> {
    require(&principal, "webhooks:read")?;
    find(&state, &principal, &id).await?;
    let page = state.store.list_deliveries(&id, &query.page()?).await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses((status = 202, body = crate::http::openapi::Envelope<Value>, description = "Queued again under the same webhook-id"), crate::http::openapi::Errors)
)]
#[post("/webhooks/{id}/deliveries/{delivery_id}/redeliver")]
pub async fn redeliver(
    principal: Principal,
    state: Data<AppState>,
    ids: Path<(String, String)>,
) -> Result<Reply<Value>, ApiError> {
    require(&principal, "webhooks:write")?;
    find(&state, &principal, &ids.0).await?;
    if !state.store.redeliver(&ids.0, &ids.1).await? {
        return Err(ApiError::not_found("delivery", &ids.1));
    }
    Ok(Reply::with_status(
        StatusCode::ACCEPTED,
        json!({ "delivery_id": ids.1, "status": "pending" }),
    ))
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 202, body = crate::http::openapi::Envelope<Value>, description = "A webhook.test ping is queued"), crate::http::openapi::Errors)
)]
#[post("/webhooks/{id}/test")]
pub async fn test_endpoint(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    require(&principal, "webhooks:write")?;
    let endpoint = find(&state, &principal, &id).await?;
    let delivery = state.store.queue_test_delivery(&endpoint).await?;
    Ok(Reply::with_status(
        StatusCode::ACCEPTED,
        json!({ "delivery_id": delivery, "event_type": "webhook.test" }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    secret: Option<String>,
}

#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = Option<Rotate>,
    responses((status = 200, body = crate::http::openapi::Envelope<WithSecret>), crate::http::openapi::Errors)
)]
#[post("/webhooks/{id}/rotate-secret")]
pub async fn rotate_secret(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
    body: Option<Json<Rotate>>,
) -> Result<Reply<WithSecret>, ApiError> {
    require(&principal, "webhooks:write")?;
    find(&state, &principal, &id).await?;
    let secret = secret(body.and_then(|b| b.0.secret))?;
    let window = std::time::Duration::from_secs(state.config.webhooks.rotation_window_secs);
    let until = dgidgi_actors::time::later(window);
    state
        .store
        .rotate_secret(
            &id,
            principal.tenant_id.as_deref(),
            &state.sealer.seal(&secret),
            &signing::hint(&secret),
            &until,
        )
        .await?;
    Ok(Reply::ok(WithSecret {
        endpoint: find(&state, &principal, &id).await?.into(),
        secret,
    })
    .carrying_secret())
}

/// Endpoint `id` if the caller may see it: its tenant's, or any for an operator.
async fn find(state: &AppState, principal: &Principal, id: &str) -> Result<Endpoint, ApiError> {
    state
        .store
        .get_endpoint(id, principal.tenant_id.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", id))
}

fn events(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::invalid("events", "name at least one event"));
    }
    let mut out = Vec::new();
    for name in names {
        if DomainEvent::parse(&name).is_none() {
            let known: Vec<&str> = DomainEvent::ALL.iter().map(|e| e.as_str()).collect();
            return Err(ApiError::invalid(
                "events",
                format!("unknown event '{name}'; known: {}", known.join(", ")),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The given secret, checked, or a new `whsec_` one.
fn secret(given: Option<String>) -> Result<String, ApiError> {
    match given {
        None => Ok(signing::generate_secret()),
        Some(s) if s.is_empty() || s.len() > 256 => {
            Err(ApiError::invalid("secret", "must be 1 to 256 characters"))
        }
        Some(s) => {
            signing::secret_bytes(&s).map_err(|why| ApiError::invalid("secret", why))?;
            Ok(s)
        }
    }
}
