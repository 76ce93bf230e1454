//! The application's shared state (`AppState`: configuration, store, actor handles,
//! providers, secrets, limits) and the authenticator every authenticated request goes
//! through: API key or JWT, checked against a live key of its kind, cached briefly.

use std::sync::Arc;

use dashmap::DashMap;
use dgidgi_actors::chat::Sessions;
use dgidgi_actors::provider::ProviderSet;
use dgidgi_actors::run::Runs;
use dgidgi_actors::Tenants;

use super::{unix_now, ApiError};
use crate::auth::{hash_key, parse_key, JwtIssuer, KeyType, Principal};
use crate::config::{Config, PlanLimits, OPERATOR_PLAN};
use crate::ids::now_rfc3339;
use crate::ratelimit::{Decision, RateLimiter};
use crate::store::{KeyWithPlan, KeysChanged, Store};

/// What the application is built from; [`AppState::new`] adds the per-process parts.
pub struct Services {
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
    /// This node's heartbeat (see `cluster`).
    pub heartbeat: crate::cluster::Heartbeat,
    /// Keys read lately; the cluster listener clears what other nodes revoke.
    pub keys: KeyCache,
    /// Tenants' MCP servers: lists their tools, calls them.
    pub mcp_client: crate::mcp::McpClient,
}

/// Keys read in the last [`KEY_CACHE_SECS`], by `h:<hash>` or `i:<id>`: most requests
/// authenticate without a query. A revocation or a plan change clears the entries at once
/// on the node that made it, and (on PostgreSQL) on every other node when its
/// announcement arrives.
#[derive(Clone, Default)]
pub struct KeyCache(Arc<DashMap<String, (KeyWithPlan, u64)>>);

impl KeyCache {
    /// Drops the cached copies of the keys `change` names.
    pub fn forget(&self, change: &KeysChanged) {
        self.0.retain(|_, (cached, _)| match change {
            KeysChanged::Key(id) => cached.key.id != *id,
            KeysChanged::Tenant(id) => cached.key.tenant_id.as_deref() != Some(id.as_str()),
        });
    }
}

/// What every handler may use; one per process, shared by all workers: the services
/// (reached through `Deref`: `state.store`), and what lives only in this process.
pub struct AppState {
    services: Services,
    pub limiter: RateLimiter,
    /// Cancelled when the server begins to stop: open event streams end, so that the
    /// graceful stop does not wait on connections that never finish by themselves.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// When each key's `last_used_at` was last written (Unix seconds), so that it is
    /// written at most once a minute per key rather than on every request.
    key_touched: DashMap<String, u64>,
    /// Event streams open now, by `k:<key id>` and `t:<tenant id>` (see `sse::StreamSlot`).
    pub open_streams: Arc<DashMap<String, usize>>,
    /// `POST /mcp`: the tenants' agents as an MCP server.
    pub mcp: super::mcp::McpService,
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

/// How often `last_used_at` is written for one key.
const TOUCH_EVERY_SECS: u64 = 60;

impl AppState {
    pub fn new(services: Services) -> Arc<Self> {
        Arc::new(Self {
            limiter: RateLimiter::new(services.config.rate_limit.window_secs),
            mcp: super::mcp::service(&services.config),
            services,
            shutdown: tokio_util::sync::CancellationToken::new(),
            key_touched: DashMap::new(),
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
        let cache = &self.keys.0;
        if let Some(hit) = cache.get(&cache_key) {
            if now < hit.1 + KEY_CACHE_SECS {
                return Ok(Some(hit.0.clone()));
            }
        }
        let found = load.await?;
        if let Some(key) = &found {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(cache_key, (key.clone(), now));
        }
        Ok(found)
    }

    /// Drops the cached copies of the keys `change` names (after a revocation or a plan
    /// change), here and on every other node.
    pub async fn forget_keys(&self, change: KeysChanged) {
        self.keys.forget(&change);
        if let Err(e) = self.store.announce_keys(&change).await {
            tracing::warn!(error = %e, ?change, "other nodes not told of a key change; their caches expire it");
        }
    }

    /// Counts one request of `principal` at Unix time `now` against its key's and its
    /// tenant's budgets: in the database when several nodes share it, else here.
    pub async fn count_request(
        &self,
        principal: &Principal,
        now: u64,
    ) -> Result<Decision, ApiError> {
        let limits = self.limits_for(&principal.plan);
        if !self.store.shares_rate_limits() {
            return Ok(self
                .limiter
                .check(&principal.key_id, principal.scope_key(), limits, now));
        }
        let window = self.config.rate_limit.window_secs.max(1);
        let start = now - now % window;
        let (allowed, by_key, by_tenant) = self
            .store
            .count_request(
                &principal.key_id,
                principal.scope_key(),
                start,
                limits.per_key,
                limits.per_tenant,
            )
            .await?;
        let left = |limit: u32, used: i64| (i64::from(limit) - used).max(0) as u32;
        Ok(Decision {
            allowed,
            limit: limits.per_key,
            remaining: left(limits.per_key, by_key).min(left(limits.per_tenant, by_tenant)),
            reset: start + window,
        })
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
