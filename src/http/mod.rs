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
use actix_web::{web, HttpRequest, HttpResponse, Resource};
use dashmap::DashMap;
use dgidgi_actors::chat::Sessions;
use dgidgi_actors::provider::ProviderSet;
use dgidgi_actors::run::Runs;
use dgidgi_actors::Tenants;

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

/// A resource whose other methods get 405 in the seed's envelope.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Unknown routes: 404 in the seed's envelope.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        message: format!("No route for {} {}", req.method(), req.path()),
        details: serde_json::json!({ "path": req.path() }),
    })
}

/// All routes. `/healthz`, `/readyz` and `/api/v1/auth/*` need no credentials and are not
/// rate limited; everything else under `/api/v1` does and is.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/ops").route(web::get().to(ops::dashboard)))
        .service(resource("/docs").route(web::get().to(openapi::docs)))
        .service(resource("/api/v1/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(
            web::scope("/metrics")
                .wrap(from_fn(middleware::authenticate))
                .service(resource("").route(web::get().to(ops::metrics))),
        )
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(
            web::scope("/api/v1/auth")
                .service(resource("/token").route(web::post().to(auth::issue_token))),
        )
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(middleware::idempotency))
                .wrap(from_fn(middleware::authenticate))
                .service(
                    resource("/tenants")
                        .route(web::get().to(tenants::list_tenants))
                        .route(web::post().to(tenants::create_tenant)),
                )
                .service(resource("/tenants/{id}").route(web::get().to(tenants::get_tenant)))
                .service(
                    resource("/tenants/{id}/settings")
                        .route(web::patch().to(tenants::update_tenant_settings)),
                )
                .service(resource("/ops/actors").route(web::get().to(ops::actors)))
                .service(resource("/ops/actors/stream").route(web::get().to(ops::actors_stream)))
                .service(resource("/regions").route(web::get().to(regions::list_regions)))
                .service(
                    resource("/regions/preferences/{tenant_id}")
                        .route(web::get().to(regions::get_preferences))
                        .route(web::patch().to(regions::update_preferences)),
                )
                .service(
                    resource("/regions/storage/{tenant_id}")
                        .route(web::get().to(regions::get_storage))
                        .route(web::put().to(regions::put_storage)),
                )
                .service(
                    resource("/regions/storage/{tenant_id}/validate")
                        .route(web::post().to(regions::validate_storage)),
                )
                .service(
                    resource("/regions/features/{tenant_id}/check/{feature_key}")
                        .route(web::get().to(regions::check_feature)),
                )
                .service(resource("/routing-info").route(web::get().to(regions::routing_info)))
                .service(
                    resource("/users")
                        .route(web::get().to(users::list_users))
                        .route(web::post().to(users::create_user)),
                )
                .service(
                    resource("/api-keys")
                        .route(web::get().to(api_keys::list_keys))
                        .route(web::post().to(api_keys::create_key)),
                )
                .service(resource("/api-keys/{id}").route(web::delete().to(api_keys::revoke_key)))
                .service(
                    resource("/projects")
                        .route(web::get().to(projects::list_projects))
                        .route(web::post().to(projects::create_project)),
                )
                .service(
                    resource("/projects/{id}")
                        .route(web::get().to(projects::get_project))
                        .route(web::patch().to(projects::update_project))
                        .route(web::delete().to(projects::delete_project)),
                )
                .service(
                    resource("/agents")
                        .route(web::get().to(agents::list_agents))
                        .route(web::post().to(agents::create_agent)),
                )
                .service(
                    resource("/agents/{id}")
                        .route(web::get().to(agents::get_agent))
                        .route(web::patch().to(agents::update_agent))
                        .route(web::delete().to(agents::delete_agent)),
                )
                .service(
                    resource("/agents/{id}/execute").route(web::post().to(runs::execute_agent)),
                )
                .service(resource("/agents/{id}/runs").route(web::get().to(runs::list_runs)))
                .service(resource("/agents/{id}/runs/{run_id}").route(web::get().to(runs::get_run)))
                .service(
                    resource("/agents/{id}/runs/{run_id}/cancel")
                        .route(web::post().to(runs::cancel_run)),
                )
                .service(
                    resource("/agents/{id}/runs/{run_id}/stream")
                        .route(web::get().to(runs::stream_run)),
                )
                .service(
                    resource("/chat/sessions")
                        .route(web::get().to(chat::list_sessions))
                        .route(web::post().to(chat::create_session)),
                )
                .service(
                    resource("/chat/sessions/{id}")
                        .route(web::get().to(chat::get_session))
                        .route(web::delete().to(chat::delete_session)),
                )
                .service(
                    resource("/chat/sessions/{id}/messages")
                        .route(web::get().to(chat::list_messages))
                        .route(web::post().to(chat::post_message)),
                )
                .service(
                    resource("/chat/sessions/{id}/cancel")
                        .route(web::post().to(chat::cancel_reply)),
                )
                .service(
                    resource("/chat/sessions/{id}/stream")
                        .route(web::get().to(chat::stream_session)),
                )
                .service(
                    resource("/webhooks")
                        .route(web::get().to(webhooks::list_endpoints))
                        .route(web::post().to(webhooks::create_endpoint)),
                )
                .service(
                    resource("/webhooks/{id}")
                        .route(web::get().to(webhooks::get_endpoint))
                        .route(web::patch().to(webhooks::update_endpoint))
                        .route(web::delete().to(webhooks::delete_endpoint)),
                )
                .service(
                    resource("/webhooks/{id}/deliveries")
                        .route(web::get().to(webhooks::list_deliveries)),
                )
                .service(
                    resource("/webhooks/{id}/deliveries/{delivery_id}/redeliver")
                        .route(web::post().to(webhooks::redeliver)),
                )
                .service(
                    resource("/webhooks/{id}/test").route(web::post().to(webhooks::test_endpoint)),
                )
                .service(
                    resource("/webhooks/{id}/rotate-secret")
                        .route(web::post().to(webhooks::rotate_secret)),
                )
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
