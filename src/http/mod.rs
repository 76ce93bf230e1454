//! The HTTP layer: the only module that knows HTTP, JSON and SSE. Handlers parse and
//! validate, then ask an actor or the store; they hold no business rules.

mod agents;
mod api_keys;
mod auth;
mod chat;
pub mod envelope;
pub mod error;
mod extract;
mod health;
mod middleware;
mod openapi;
mod ops;
mod projects;
mod regions;
mod runs;
pub mod sse;
mod tenants;
mod users;
mod webhooks;

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use dashmap::DashMap;
use dgidgi_actors::chat::Sessions;
use dgidgi_actors::provider::ProviderSet;
use dgidgi_actors::run::Runs;
use dgidgi_actors::Tenants;
use utoipa_actix_web::scope;

use crate::auth::{hash_key, parse_key, JwtIssuer, KeyType, Principal};
use crate::config::{Config, PlanLimits, OPERATOR_PLAN};
use crate::ids::{now_rfc3339, IdKind};
use crate::ratelimit::RateLimiter;
use crate::store::{KeyWithPlan, Store};
pub use error::ApiError;
pub use middleware::{request_context as middleware_request_context, unix_now};

/// What every handler may use; one per process, shared by all workers.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub tenants: Tenants,
    pub runs: Runs,
    pub sessions: Sessions,
    pub providers: Arc<dyn ProviderSet>,
    pub jwt: JwtIssuer,
    /// Seals and opens stored secrets (webhook secrets).
    pub sealer: crate::sealing::Sealer,
    pub storage: crate::storage::Storage,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub webhook_actor: std::sync::Arc<dgidgi_actors::ActorMeta>,
    pub limiter: RateLimiter,
    /// Cancelled when the server begins to stop: open event streams end, so that the
    /// graceful stop does not wait on connections that never finish by themselves.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// When each key's `last_used_at` was last written (Unix seconds), so that it is
    /// written at most once a minute per key rather than on every request.
    key_touched: DashMap<String, u64>,
    /// Keys read in the last [`KEY_CACHE_SECS`], by `h:<hash>` or `i:<id>`: most requests
    /// authenticate without a query. Revocations and plan changes on this node clear them
    /// at once; another node sees them within the cache's age.
    key_cache: DashMap<String, (KeyWithPlan, u64)>,
    /// Event streams open now, by `k:<key id>` and `t:<tenant id>` (see `sse::StreamSlot`).
    pub open_streams: Arc<DashMap<String, usize>>,
}

/// How often `last_used_at` is written for one key.
const TOUCH_EVERY_SECS: u64 = 60;

/// What the application is built from; [`AppState::new`] adds the per-process parts.
pub struct Services {
    pub config: Config,
    pub store: Store,
    pub tenants: Tenants,
    pub runs: Runs,
    pub sessions: Sessions,
    pub providers: Arc<dyn ProviderSet>,
    pub jwt: JwtIssuer,
    pub sealer: crate::sealing::Sealer,
    pub storage: crate::storage::Storage,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub webhook_actor: std::sync::Arc<dgidgi_actors::ActorMeta>,
}

impl AppState {
    pub fn new(services: Services) -> Arc<Self> {
        let Services {
            config,
            store,
            tenants,
            runs,
            sessions,
            providers,
            jwt,
            sealer,
            storage,
            metrics,
            webhook_actor,
        } = services;
        let limiter = RateLimiter::new(config.rate_limit.window_secs);
        Arc::new(Self {
            config,
            store,
            tenants,
            runs,
            sessions,
            providers,
            jwt,
            sealer,
            storage,
            metrics,
            webhook_actor,
            limiter,
            shutdown: tokio_util::sync::CancellationToken::new(),
            key_touched: DashMap::new(),
            key_cache: DashMap::new(),
            open_streams: Arc::new(DashMap::new()),
        })
    }

    /// The rate limits of `plan`.
    pub fn limits_for(&self, plan: &str) -> PlanLimits {
        self.config.plan(plan).rate_limit
    }

    /// The principal of an `Authorization: Bearer <API key | JWT>` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let unauthorized = |why: &str| ApiError::Unauthorized(why.to_string());
        let header = header.ok_or_else(|| unauthorized("Missing Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be 'Bearer <API key or token>'"))?;
        let (found, scopes) = if token.starts_with("chy_") {
            parse_key(token).ok_or_else(|| unauthorized("Invalid API key"))?;
            let hash = hash_key(token);
            let found = self
                .cached_key(format!("h:{hash}"), self.store.key_by_hash(&hash))
                .await?;
            let found = found.ok_or_else(|| unauthorized("Invalid API key"))?;
            let scopes = found.key.scopes.clone();
            (found, scopes)
        } else {
            let claims = self
                .jwt
                .verify(token)
                .ok_or_else(|| unauthorized("Invalid or expired token"))?;
            let found = self
                .cached_key(
                    format!("i:{}", claims.sub),
                    self.store.key_by_id(&claims.sub),
                )
                .await?;
            // The token must name a live key of its kind: a tenant token a key of that
            // tenant, an operator token an operator key; and it carries no scope its key
            // does not hold.
            let found = found
                .filter(|k| k.key.tenant_id == claims.tid)
                .filter(|k| (k.key.key_type == KeyType::Operator.as_str()) == claims.tid.is_none())
                .ok_or_else(|| unauthorized("Invalid or expired token"))?;
            let scopes = claims
                .scp
                .into_iter()
                .filter(|s| found.key.scopes.contains(s))
                .collect();
            (found, scopes)
        };
        self.check_usable(&found)?;
        self.touch(&found.key.id);
        Ok(Principal {
            key_id: found.key.id,
            tenant_id: found.key.tenant_id,
            key_type: found.key.key_type,
            scopes,
            plan: found.plan.unwrap_or_else(|| OPERATOR_PLAN.to_string()),
        })
    }

    /// The key under `cache_key` if read less than [`KEY_CACHE_SECS`] ago, else `load`ed
    /// (and kept when found).
    async fn cached_key(
        &self,
        cache_key: String,
        load: impl std::future::Future<Output = crate::store::Result<Option<KeyWithPlan>>>,
    ) -> Result<Option<KeyWithPlan>, ApiError> {
        let now = unix_now();
        if let Some(hit) = self.key_cache.get(&cache_key) {
            if now < hit.1 + KEY_CACHE_SECS {
                return Ok(Some(hit.0.clone()));
            }
        }
        let found = load.await?;
        if let Some(key) = &found {
            if self.key_cache.len() > 100_000 {
                self.key_cache.clear();
            }
            self.key_cache.insert(cache_key, (key.clone(), now));
        }
        Ok(found)
    }

    /// Drops cached keys that `stale` matches (after a revocation or a plan change).
    pub fn forget_keys(&self, stale: impl Fn(&KeyWithPlan) -> bool) {
        self.key_cache.retain(|_, (key, _)| !stale(key));
    }

    /// Refuses revoked and expired keys.
    pub fn check_usable(&self, found: &KeyWithPlan) -> Result<(), ApiError> {
        if found.key.revoked_at.is_some() {
            return Err(ApiError::Unauthorized("API key has been revoked".into()));
        }
        if found
            .key
            .expires_at
            .as_deref()
            .is_some_and(|at| at <= now_rfc3339().as_str())
        {
            return Err(ApiError::Unauthorized("API key has expired".into()));
        }
        Ok(())
    }

    fn touch(&self, key_id: &str) {
        let now = unix_now();
        let due = match self.key_touched.get(key_id) {
            Some(last) => now >= *last + TOUCH_EVERY_SECS,
            None => true,
        };
        if due {
            self.key_touched.insert(key_id.to_string(), now);
            let (store, key_id) = (self.store.clone(), key_id.to_string());
            actix_web::rt::spawn(async move {
                if let Err(e) = store.touch_key(&key_id, &now_rfc3339()).await {
                    tracing::warn!(error = %e, "last_used_at not written");
                }
            });
        }
    }
}

/// How long an authenticated key is trusted without reading it again.
const KEY_CACHE_SECS: u64 = 5;

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
                .service(regions::get_storage)
                .service(regions::put_storage)
                .service(regions::validate_storage)
                .service(regions::check_feature)
                .service(regions::routing_info)
                .service(runs::execute_agent)
                .service(runs::get_run)
                .service(runs::list_runs)
                .service(runs::cancel_run)
                .service(runs::stream_run)
                .service(tenants::create_tenant)
                .service(tenants::list_tenants)
                .service(tenants::get_tenant)
                .service(tenants::update_tenant_settings)
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
                dgidgi_actors::TenantError::NotFound => ApiError::not_found("tenant", named),
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
fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, 1, max).map(Some),
    }
}
