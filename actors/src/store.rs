//! The persistence traits actors talk through. The `dgidgi` crate implements them over
//! sqlx; tests may implement them over anything that keeps state.

use async_trait::async_trait;

use crate::tenant::{Tenant, TenantSettings};

/// A failure of the durable store, opaque to actors: they report it, and tell a passing
/// outage (retry later: 503) from anything else.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("store failure: {message}")]
pub struct StoreFailure {
    pub message: String,
    /// The database is out of reach or out of space; the same call may work later.
    pub unavailable: bool,
    /// The write was refused because this node no longer owns what it wrote to (another
    /// node claimed the run): the writer stops, without side effects.
    pub fenced: bool,
}

impl StoreFailure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: false,
            fenced: false,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: true,
            fenced: false,
        }
    }

    pub fn fenced(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: false,
            fenced: true,
        }
    }
}

/// Runs `write` until it succeeds, fails for a reason other than an outage, or `budget` has
/// passed, backing off from 100 ms to 2 s between tries: a run or a reply outlives a short
/// database outage instead of failing on it.
pub async fn retrying<T, F, Fut>(
    budget: std::time::Duration,
    mut write: F,
) -> Result<T, StoreFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreFailure>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match write().await {
            Err(e) if e.unavailable && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e.message, retry_in_ms = pause.as_millis() as u64, "store unavailable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

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
