//! The HTTP layer: the only module that knows HTTP, JSON and SSE. Handlers parse and
//! validate, then ask an actor or the store; they hold no business rules.

mod agents;
mod api_keys;
mod auth;
mod chat;
pub mod dto;
pub mod envelope;
pub mod error;
mod extract;
mod health;
mod mcp;
mod mcp_servers;
mod middleware;
mod openapi;
mod ops;
mod projects;
mod regions;
mod runs;
pub mod sse;
mod state;
mod storage;
mod tenants;
mod usage;
mod users;
mod webhooks;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa_actix_web::scope;

use crate::auth::Principal;
use crate::ids::IdKind;
pub use error::ApiError;
pub use middleware::{request_context as middleware_request_context, unix_now};
pub use state::{AppState, KeyCache, Services};

/// Unknown routes: 404 in the seed's envelope; a known path with another method: 405.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if openapi::serves(req.path()) {
        return Err(ApiError::MethodNotAllowed);
    }
    Err(ApiError::NotFound {
        message: format!("No route for {} {}", req.method(), req.path()),
        details: serde_json::json!({ "path": req.path() }),
    })
}

/// Every route, registered once: each handler declares its method and path (its actix
/// route attribute) and its documentation (`#[utoipa::path]`); registering it here both
/// serves it and puts it in the OpenAPI document. `/healthz`, `/readyz`, the pages and
/// `/api/v1/auth/*` need no credentials and are not rate limited; `/metrics` and the rest
/// of `/api/v1` are authenticated (and POSTs there honour `Idempotency-Key`).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(openapi::openapi_json)
        .service(openapi::docs)
        .service(ops::dashboard)
        .service(
            scope("/metrics")
                .wrap(from_fn(middleware::authenticate))
                .service(ops::metrics),
        )
        .service(scope("/api/v1/auth").service(auth::issue_token))
        .service(
            scope("/mcp")
                .wrap(from_fn(middleware::authenticate))
                .service(mcp::endpoint),
        )
        .service(
            scope("/api/v1")
                .wrap(from_fn(middleware::idempotency))
                .wrap(from_fn(middleware::authenticate))
                .service(agents::create_agent)
                .service(agents::list_agents)
                .service(agents::get_agent)
                .service(agents::update_agent)
                .service(agents::delete_agent)
                .service(api_keys::create_key)
                .service(api_keys::list_keys)
                .service(api_keys::revoke_key)
                .service(chat::create_session)
                .service(chat::list_sessions)
                .service(chat::get_session)
                .service(chat::delete_session)
                .service(chat::post_message)
                .service(chat::list_messages)
                .service(chat::cancel_reply)
                .service(chat::stream_session)
                .service(mcp_servers::create_mcp_server)
                .service(mcp_servers::list_mcp_servers)
                .service(mcp_servers::get_mcp_server)
                .service(mcp_servers::update_mcp_server)
                .service(mcp_servers::delete_mcp_server)
                .service(mcp_servers::refresh_mcp_server)
                .service(mcp_servers::list_mcp_tools)
                .service(ops::actors)
                .service(ops::actors_stream)
                .service(projects::create_project)
                .service(projects::list_projects)
                .service(projects::get_project)
                .service(projects::update_project)
                .service(projects::delete_project)
                .service(regions::list_regions)
                .service(regions::get_preferences)
                .service(regions::update_preferences)
                .service(storage::get_storage)
                .service(storage::put_storage)
                .service(storage::validate_storage)
                .service(regions::check_feature)
                .service(regions::routing_info)
                .service(runs::execute_agent)
                .service(runs::get_run)
                .service(runs::list_runs)
                .service(runs::cancel_run)
                .service(runs::approve_run)
                .service(runs::stream_run)
                .service(tenants::create_tenant)
                .service(tenants::list_tenants)
                .service(tenants::get_tenant)
                .service(tenants::update_tenant_settings)
                .service(usage::get_usage)
                .service(users::create_user)
                .service(users::list_users)
                .service(webhooks::create_endpoint)
                .service(webhooks::list_endpoints)
                .service(webhooks::get_endpoint)
                .service(webhooks::update_endpoint)
                .service(webhooks::delete_endpoint)
                .service(webhooks::list_deliveries)
                .service(webhooks::redeliver)
                .service(webhooks::test_endpoint)
                .service(webhooks::rotate_secret)
                .default_service(web::to(not_found)),
        );
}

/// Checks that the caller holds `scope` (403 otherwise).
fn require(principal: &Principal, scope: &str) -> Result<(), ApiError> {
    if principal.has(scope) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "This key lacks the '{scope}' scope"
        )))
    }
}

/// The tenant a tenant-scoped request acts in: a tenant key's own (naming another tenant is
/// a 404, so existence never leaks), or the one an operator names.
async fn acting_tenant(
    state: &AppState,
    principal: &Principal,
    named: Option<&str>,
) -> Result<String, ApiError> {
    match (&principal.tenant_id, named) {
        (Some(own), None) => Ok(own.clone()),
        (Some(own), Some(named)) if named == own => Ok(own.clone()),
        (Some(_), Some(named)) => Err(ApiError::not_found("tenant", named)),
        (None, None) => Err(ApiError::invalid(
            "tenant_id",
            "is required with a platform-operator key",
        )),
        (None, Some(named)) if !IdKind::Tenant.is_valid(named) => {
            Err(ApiError::not_found("tenant", named))
        }
        (None, Some(named)) => {
            state.tenants.get(named).await.map_err(|e| match e {
                dgidgi_actors::tenant::Error::NotFound => ApiError::not_found("tenant", named),
                other => other.into(),
            })?;
            Ok(named.to_string())
        }
    }
}

/// The tenant of a tenant-scoped request whose caller must hold `scope`.
async fn in_tenant(
    state: &AppState,
    principal: &Principal,
    query: &extract::ListQuery,
    scope: &str,
) -> Result<String, ApiError> {
    require(principal, scope)?;
    acting_tenant(state, principal, query.tenant_id.as_deref()).await
}

/// Checks a required text field: trimmed, between `min` and `max` characters.
fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_string())
}

/// An optional text field: `None` stays `None`, an empty string becomes `None`.
/// A user-supplied URL the server will call (a webhook endpoint, an MCP server), as the
/// outbound guard allows it: http(s), no credentials, no forbidden address or name.
fn outbound_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    if raw.len() > 2048 {
        return Err(ApiError::invalid("url", "must be at most 2048 characters"));
    }
    crate::outbound::check_url(raw.trim(), state.config.outbound.allow_private_targets)
        .map(|u| u.to_string())
        .map_err(|why| ApiError::invalid("url", why))
}

fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, 1, max).map(Some),
    }
}
