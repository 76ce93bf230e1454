//! Who a request acts as, and what it may do.

/// A permission a key carries. Tenant keys carry some of [`TENANT_SCOPES`]; operator keys
/// may do everything, in every tenant.
pub type Scope = &'static str;

/// Every scope a tenant key can carry; a tenant's first key gets them all.
pub const TENANT_SCOPES: &[Scope] = &[
    "tenants:read",
    "tenants:write",
    "users:read",
    "users:write",
    "keys:read",
    "keys:write",
    "projects:read",
    "projects:write",
    "agents:read",
    "agents:write",
    "agents:execute",
    "chat:read",
    "chat:write",
    "webhooks:read",
    "webhooks:write",
    "regions:read",
    "regions:write",
];

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key the request is made with (directly or through a JWT).
    pub key_id: String,
    /// The caller's tenant; `None` for a platform operator.
    pub tenant_id: Option<String>,
    pub key_type: String,
    pub scopes: Vec<String>,
    /// The tenant's plan (`platform` for operators), which selects the rate limits.
    pub plan: String,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.tenant_id.is_none()
    }

    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: &str) -> bool {
        self.is_operator() || self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the caller may see tenant `id`: its own, or any for an operator.
    pub fn sees_tenant(&self, id: &str) -> bool {
        self.tenant_id.as_deref().is_none_or(|own| own == id)
    }

    /// The bucket idempotency keys and rate limits are counted in.
    pub fn scope_key(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or("platform")
    }
}
