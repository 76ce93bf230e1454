//! The persistence traits actors talk through. The `dgidgi` crate implements them over
//! sqlx; tests may implement them over anything that keeps state.

use async_trait::async_trait;

use crate::tenant::{Tenant, TenantSettings};

/// A failure of the durable store, opaque to actors: they only report it.
#[derive(Debug, thiserror::Error)]
#[error("store failure: {0}")]
pub struct StoreFailure(pub String);

/// What the tenant actor needs from the store.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Loads a tenant, `None` when it does not exist.
    async fn load_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreFailure>;
    /// Persists a tenant's plan and settings and returns the stored tenant.
    async fn save_tenant(
        &self,
        id: &str,
        plan: &str,
        settings: &TenantSettings,
    ) -> Result<Option<Tenant>, StoreFailure>;
}
