//! What the actors' own tests share: an in-memory tenant store that can be told to fail,
//! and a provider set of one provider.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::provider::{LlmProvider, ProviderSet};
use crate::store::{StoreFailure, TenantStore};
use crate::tenant::{Tenant, TenantSettings};

/// Tenants in memory: `ten_1` ("Acme", free) with the settings it was made with.
#[derive(Default)]
pub struct MemoryTenants {
    pub tenants: Mutex<HashMap<String, Tenant>>,
    /// While set, every save fails.
    pub failing: AtomicBool,
}

impl MemoryTenants {
    pub fn with_ten_1(settings: TenantSettings) -> Arc<Self> {
        let store = Self::default();
        store.tenants.lock().unwrap().insert(
            "ten_1".into(),
            Tenant {
                id: "ten_1".into(),
                name: "Acme".into(),
                plan: "free".into(),
                settings,
                created_at: "2026-01-01T00:00:00.000Z".into(),
                updated_at: "2026-01-01T00:00:00.000Z".into(),
            },
        );
        Arc::new(store)
    }
}

#[async_trait]
impl TenantStore for MemoryTenants {
    async fn load_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreFailure> {
        Ok(self.tenants.lock().unwrap().get(id).cloned())
    }

    async fn save_tenant(
        &self,
        id: &str,
        plan: &str,
        settings: &TenantSettings,
    ) -> Result<Option<Tenant>, StoreFailure> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreFailure::new("disk on fire"));
        }
        let mut tenants = self.tenants.lock().unwrap();
        Ok(tenants.get_mut(id).map(|t| {
            t.plan = plan.to_string();
            t.settings = settings.clone();
            t.clone()
        }))
    }
}

/// Every name resolves to the one provider.
pub struct One(pub &'static str, pub Arc<dyn LlmProvider>);

impl ProviderSet for One {
    fn get(&self, _: &str) -> Option<Arc<dyn LlmProvider>> {
        Some(self.1.clone())
    }
    fn default_name(&self) -> &str {
        self.0
    }
    fn names(&self) -> Vec<String> {
        vec![self.0.into()]
    }
}
