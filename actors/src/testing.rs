//! What the actors' own tests share: in-memory tenant and run stores (the tenant store can
//! be told to fail), a provider set of one provider, and project files that are never there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::chat::Message;
use crate::events::{DomainEvent, EventLog, Fence, StreamEvent};
use crate::provider::{LlmProvider, ProviderSet};
use crate::run::{Admit, Budget, Created, Pause, Reservation, Run, RunStatus, RunStore, Step};
use crate::store::{StoreFailure, TenantStore};
use crate::tenant::{Tenant, TenantSettings};
use crate::tools::{FileStore, RemoteTool, RemoteTools, ToolOutcome, Workspaces};

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

/// Runs and their events, in memory.
#[derive(Default)]
pub struct MemoryRuns {
    pub runs: Mutex<HashMap<String, Run>>,
    pub events: Mutex<HashMap<String, Vec<StreamEvent>>>,
    pub domain: Mutex<Vec<DomainEvent>>,
}

impl MemoryRuns {
    pub fn append(&self, stream: &str, events: &[StreamEvent]) {
        let mut all = self.events.lock().unwrap();
        all.entry(stream.to_string())
            .or_default()
            .extend_from_slice(events);
    }

    pub fn kinds(&self, stream: &str) -> Vec<String> {
        self.events.lock().unwrap()[stream]
            .iter()
            .map(|e| e.kind.clone())
            .collect()
    }

    pub fn save(&self, run: &Run) {
        self.runs
            .lock()
            .unwrap()
            .insert(run.id.clone(), run.clone());
    }
}

#[async_trait]
impl EventLog for MemoryRuns {
    async fn append_events(
        &self,
        stream: &str,
        events: &[StreamEvent],
        _: Option<&Fence>,
    ) -> Result<(), StoreFailure> {
        self.append(stream, events);
        Ok(())
    }

    async fn events_after(
        &self,
        stream: &str,
        after: i64,
    ) -> Result<Vec<StreamEvent>, StoreFailure> {
        let all = self.events.lock().unwrap();
        Ok(all
            .get(stream)
            .map(|e| e.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl RunStore for MemoryRuns {
    async fn claim_run(&self, id: &str) -> Result<Option<i64>, StoreFailure> {
        let mut runs = self.runs.lock().unwrap();
        Ok(runs
            .get_mut(id)
            .filter(|r| !r.status.is_terminal())
            .map(|r| {
                r.epoch += 1;
                r.epoch
            }))
    }

    async fn take_slot(&self, _: &Run, _: u32) -> Result<bool, StoreFailure> {
        Ok(true)
    }

    async fn request_cancel(&self, id: &str) -> Result<bool, StoreFailure> {
        let mut runs = self.runs.lock().unwrap();
        Ok(runs
            .get_mut(id)
            .filter(|r| !r.status.is_terminal())
            .map(|r| r.cancel_requested = true)
            .is_some())
    }

    async fn create_run(
        &self,
        run: &Run,
        _: Option<&Message>,
        admit: Admit,
    ) -> Result<Option<Created>, StoreFailure> {
        let queued = (self.runs.lock().unwrap().values())
            .filter(|r| r.tenant_id == run.tenant_id && r.status == RunStatus::Queued)
            .count();
        if queued >= admit.max_queued as usize {
            return Ok(None);
        }
        let mut run = run.clone();
        run.epoch = 1;
        self.save(&run);
        Ok(Some(Created {
            epoch: 1,
            admitted: true,
        }))
    }

    async fn load_run(&self, id: &str) -> Result<Option<Run>, StoreFailure> {
        let mut run = self.runs.lock().unwrap().get(id).cloned();
        if let Some(run) = run.as_mut() {
            run.last_seq = self
                .events
                .lock()
                .unwrap()
                .get(run.stream())
                .and_then(|e| e.last())
                .map_or(0, |e| e.seq);
        }
        Ok(run)
    }

    async fn start_run(
        &self,
        run: &Run,
        events: &[StreamEvent],
        domain: Option<DomainEvent>,
    ) -> Result<(), StoreFailure> {
        self.save(run);
        self.append(run.stream(), events);
        self.domain.lock().unwrap().extend(domain);
        Ok(())
    }

    async fn pause_run(
        &self,
        run: &Run,
        events: &[StreamEvent],
        domain: DomainEvent,
    ) -> Result<(), StoreFailure> {
        self.start_run(run, events, Some(domain)).await
    }

    async fn reserve(
        &self,
        _: &Run,
        _: Reservation,
        _: Budget,
    ) -> Result<Option<&'static str>, StoreFailure> {
        Ok(None)
    }

    async fn spent_this_month(&self, _: &str) -> Result<Reservation, StoreFailure> {
        Ok(Reservation::default())
    }

    async fn record_decisions(
        &self,
        id: &str,
        before: &Pause,
        after: &Pause,
    ) -> Result<bool, StoreFailure> {
        let mut runs = self.runs.lock().unwrap();
        let Some(run) = runs.get_mut(id) else {
            return Ok(false);
        };
        if run.status != RunStatus::RequiresAction || run.pause.as_ref() != Some(before) {
            return Ok(false);
        }
        run.pause = Some(after.clone());
        if after.answered() {
            run.status = RunStatus::Queued;
        }
        Ok(true)
    }

    async fn save_step(
        &self,
        run: &Run,
        _: &Step,
        events: &[StreamEvent],
    ) -> Result<(), StoreFailure> {
        self.save(run);
        self.append(run.stream(), events);
        Ok(())
    }

    async fn finish_run(
        &self,
        run: &Run,
        _: bool,
        events: &[StreamEvent],
        domain: Option<DomainEvent>,
        _: Option<&Message>,
    ) -> Result<(), StoreFailure> {
        self.save(run);
        self.append(run.stream(), events);
        self.domain.lock().unwrap().extend(domain);
        Ok(())
    }

    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreFailure> {
        Ok(self
            .runs
            .lock()
            .unwrap()
            .values()
            .filter(|r| !r.status.is_terminal())
            .map(|r| r.id.clone())
            .collect())
    }
}

/// Project files that are never there.
pub struct NoFiles;

#[async_trait]
impl FileStore for NoFiles {
    async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    async fn list(&self, _: &str, _: usize) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Workspaces for NoFiles {
    async fn open(&self, _: &str, _: &str) -> Result<Arc<dyn FileStore>, String> {
        Ok(Arc::new(NoFiles))
    }
}

/// No MCP servers: every tool entry that names one resolves to nothing.
pub struct NoRemoteTools;

#[async_trait]
impl RemoteTools for NoRemoteTools {
    async fn resolve(&self, _: &str, _: &[String]) -> Result<Vec<RemoteTool>, String> {
        Ok(Vec::new())
    }
    async fn call(
        &self,
        _: &str,
        tool: &RemoteTool,
        _: serde_json::Map<String, serde_json::Value>,
    ) -> ToolOutcome {
        ToolOutcome::error(format!("no MCP server for {}", tool.canonical()))
    }
}
