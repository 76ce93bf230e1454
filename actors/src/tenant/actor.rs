//! The `TenantActor`, single writer of one tenant's live state (settings, plan, run
//! admission under the plan's cap), and the cheap-clone [`Tenants`] handle.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Error, GetTenant, Tenant, UpdateTenant};
use crate::registry::{ActorMeta, Registry};
use crate::store::{StoreFailure, TenantStore};

/// How long an actor whose tenant is missing (or failed to load) stays to answer the
/// messages already queued for it.
const GONE_AFTER: Duration = Duration::from_millis(100);

enum State {
    Loading,
    Live(Box<Tenant>),
    Missing,
    Failed(StoreFailure),
}

/// The single writer of one tenant's live state.
pub struct TenantActor {
    id: String,
    store: Arc<dyn TenantStore>,
    state: State,
    /// When the actor last handled a message; it passivates after `idle_after` without one.
    last_active: Instant,
    idle_after: Duration,
    /// Where this actor is registered, so that it can take itself out as it passivates.
    registry: Registry<TenantActor>,
    /// Each plan's ceiling on concurrent runs, over any tenant setting.
    plan_caps: PlanCaps,
    meta: Arc<ActorMeta>,
    /// Runs holding one of the tenant's `max_concurrent_runs` slots.
    running: HashSet<String>,
    /// Runs waiting for a slot, first come first served.
    waiting: VecDeque<(String, oneshot::Sender<()>)>,
}

impl TenantActor {
    fn touch(&mut self) {
        self.last_active = Instant::now();
    }

    fn current(&self) -> Result<Tenant, Error> {
        match &self.state {
            State::Live(t) => Ok(t.as_ref().clone()),
            State::Missing => Err(Error::NotFound),
            State::Failed(e) => Err(e.clone().into()),
            State::Loading => Err(Error::Unavailable("tenant is loading".into())),
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Loading;
        let store = self.store.clone();
        let id = self.id.clone();
        // `wait` holds the mailbox until the state is loaded: no message sees `Loading`.
        ctx.wait(
            async move { store.load_tenant(&id).await }
                .into_actor(self)
                .map(|loaded, act, ctx| {
                    act.state = match loaded {
                        Ok(Some(t)) => State::Live(Box::new(t)),
                        Ok(None) => State::Missing,
                        Err(e) => {
                            act.meta.record_error(&e.message);
                            State::Failed(e)
                        }
                    };
                    act.meta.set_state(match act.state {
                        State::Live(_) => "live",
                        State::Missing => "missing",
                        _ => "failed",
                    });
                    if !matches!(act.state, State::Live(_)) {
                        // Answer what is queued, then go, so the next activation looks again.
                        ctx.run_later(GONE_AFTER, Self::passivate_if_idle);
                    }
                }),
        );
    }

    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        let busy = !self.running.is_empty() || !self.waiting.is_empty();
        let idle = self.last_active.elapsed() >= self.idle_after && !busy;
        let dead = matches!(self.state, State::Missing | State::Failed(_));
        if idle || dead {
            tracing::debug!(tenant_id = %self.id, "tenant actor passivating");
            self.registry.forget(&self.id, &ctx.address());
            ctx.stop();
        }
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx);
        let check = (self.idle_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        ctx.run_interval(check, Self::passivate_if_idle);
    }
}

impl Supervised for TenantActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(tenant_id = %self.id, "tenant actor restarting; state reloads from the store");
        self.meta.restarted();
        self.touch();
    }
}

impl Handler<GetTenant> for TenantActor {
    type Result = Result<Tenant, Error>;

    fn handle(&mut self, _: GetTenant, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        self.current()
    }
}

impl Handler<UpdateTenant> for TenantActor {
    type Result = AtomicResponse<Self, Result<Tenant, Error>>;

    fn handle(&mut self, msg: UpdateTenant, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let current = match self.current() {
            Ok(t) => t,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let plan = msg.plan.unwrap_or(current.plan);
        // The plan caps the runs a tenant may ask for; admission applies the same cap.
        if let Some(wanted) = msg.settings.max_concurrent_runs {
            if let Err(e) = self.allows_run_slots(&plan, wanted) {
                return AtomicResponse::new(Box::pin(fut::ready(Err(e))));
            }
        }
        let settings = current.settings.patched(msg.settings);
        let store = self.store.clone();
        let id = self.id.clone();
        // Atomic: no other message is handled until the write is done and the state updated.
        AtomicResponse::new(Box::pin(
            async move { store.save_tenant(&id, &plan, &settings).await }
                .into_actor(self)
                .map(|saved, act, _| match saved {
                    Ok(Some(t)) => {
                        act.state = State::Live(Box::new(t.clone()));
                        Ok(t)
                    }
                    Ok(None) => {
                        act.state = State::Missing;
                        Err(Error::NotFound)
                    }
                    Err(e) => Err(e.into()),
                }),
        ))
    }
}

/// Ask for one of the tenant's run slots; the receiver fires when the run may start.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, Error>")]
pub struct AdmitRun {
    pub run_id: String,
}

/// Give a run's slot (or its place in the queue) back.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ReleaseRun {
    pub run_id: String,
}

impl TenantActor {
    fn limit(&self) -> usize {
        match &self.state {
            State::Live(t) => run_slots(t, &self.plan_caps) as usize,
            _ => 1,
        }
    }

    /// Refuses more concurrent runs than `plan` includes, naming its limit and a plan that
    /// allows them.
    fn allows_run_slots(&self, plan: &str, wanted: u32) -> Result<(), Error> {
        let Some(&limit) = self.plan_caps.get(plan) else {
            return Ok(());
        };
        if wanted <= limit {
            return Ok(());
        }
        let roomier = self
            .plan_caps
            .iter()
            .filter(|(_, cap)| **cap >= wanted)
            .min_by_key(|(_, cap)| **cap)
            .map(|(name, _)| format!(" (the {name} plan allows {wanted})"))
            .unwrap_or_default();
        Err(Error::Invalid {
            field: "max_concurrent_runs".into(),
            reason: format!("must be at most {limit}, the {plan} plan's limit{roomier}"),
        })
    }

    /// Starts waiting runs while slots are free.
    fn admit_waiting(&mut self) {
        while self.running.len() < self.limit() {
            let Some((run_id, admitted)) = self.waiting.pop_front() else {
                break;
            };
            // A waiter that went away (cancelled) takes no slot.
            if admitted.send(()).is_ok() {
                self.running.insert(run_id);
            }
        }
    }
}

impl Handler<AdmitRun> for TenantActor {
    type Result = Result<oneshot::Receiver<()>, Error>;

    fn handle(&mut self, msg: AdmitRun, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        self.current()?;
        let (admitted, wait) = oneshot::channel();
        if self.running.contains(&msg.run_id) {
            let _ = admitted.send(());
        } else {
            self.waiting.push_back((msg.run_id, admitted));
            self.admit_waiting();
        }
        Ok(wait)
    }
}

impl Handler<ReleaseRun> for TenantActor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseRun, _: &mut Context<Self>) {
        self.touch();
        self.running.remove(&msg.run_id);
        self.waiting.retain(|(id, _)| *id != msg.run_id);
        self.admit_waiting();
    }
}

/// A run's place in its tenant's queue: granted at once, or when a slot frees up.
pub struct Admission {
    /// `None` once the slot is known to be granted.
    wait: Option<oneshot::Receiver<()>>,
}

impl Admission {
    /// Whether the run has to wait for a slot (none was free when it asked).
    pub fn waits(&mut self) -> bool {
        let Some(wait) = &mut self.wait else {
            return false;
        };
        match wait.try_recv() {
            Ok(()) => {
                self.wait = None;
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
        }
    }

    /// Waits until the run may start.
    pub async fn granted(self) -> Result<(), Error> {
        match self.wait {
            None => Ok(()),
            Some(wait) => wait
                .await
                .map_err(|_| Error::Unavailable("the tenant actor stopped".into())),
        }
    }
}

/// How many runs tenant `t` may run at once: its setting, at most its plan's cap.
fn run_slots(t: &Tenant, caps: &BTreeMap<String, u32>) -> u32 {
    let cap = caps.get(&t.plan).copied().unwrap_or(u32::MAX);
    t.settings.max_concurrent_runs.min(cap).max(1)
}

/// Each plan's most concurrent runs, by plan name.
pub type PlanCaps = Arc<BTreeMap<String, u32>>;

/// The cheap-clone handle through which the rest of the program talks to tenant actors.
#[derive(Clone)]
pub struct Tenants {
    registry: Registry<TenantActor>,
    store: Arc<dyn TenantStore>,
    idle_after: Duration,
    plan_caps: PlanCaps,
}

impl Tenants {
    /// Tenant actors run on `arbiters`, load through `store`, passivate after `idle_after`;
    /// a tenant runs at most its plan's cap in `plan_caps` at once, whatever its settings say.
    pub fn new(
        store: Arc<dyn TenantStore>,
        arbiters: Vec<ArbiterHandle>,
        idle_after: Duration,
        plan_caps: PlanCaps,
    ) -> Self {
        Self {
            registry: Registry::new("tenant", arbiters),
            store,
            idle_after,
            plan_caps,
        }
    }

    /// The live tenant actors (how many, what operators see of each).
    pub fn actors(&self) -> &Registry<TenantActor> {
        &self.registry
    }

    /// The tenant's live state.
    pub async fn get(&self, id: &str) -> Result<Tenant, Error> {
        self.send(id, GetTenant).await?
    }

    /// How many runs tenant `id` may run at once (across every node).
    pub async fn run_slots(&self, id: &str) -> Result<u32, Error> {
        Ok(self.slots_of(&self.get(id).await?))
    }

    /// How many runs `tenant` (as just loaded) may run at once (across every node).
    pub fn slots_of(&self, tenant: &Tenant) -> u32 {
        run_slots(tenant, &self.plan_caps)
    }

    /// Waits until run `run_id` may start under the tenant's concurrency limit.
    pub async fn admit(&self, tenant_id: &str, run_id: &str) -> Result<(), Error> {
        self.ask(tenant_id, run_id).await?.granted().await
    }

    /// Asks for a slot for run `run_id`: the answer says whether the run waits for it.
    pub async fn ask(&self, tenant_id: &str, run_id: &str) -> Result<Admission, Error> {
        let wait = self
            .send(
                tenant_id,
                AdmitRun {
                    run_id: run_id.into(),
                },
            )
            .await??;
        Ok(Admission { wait: Some(wait) })
    }

    /// Gives run `run_id`'s slot back (or takes it out of the queue).
    pub async fn release(&self, tenant_id: &str, run_id: &str) {
        if let Err(e) = self
            .send(
                tenant_id,
                ReleaseRun {
                    run_id: run_id.into(),
                },
            )
            .await
        {
            tracing::warn!(%tenant_id, %run_id, error = %e, "run slot not released");
        }
    }

    /// Changes the tenant's plan and settings through its actor.
    pub async fn update(&self, id: &str, update: UpdateTenant) -> Result<Tenant, Error> {
        self.send(id, update).await?
    }

    async fn send<M>(&self, id: &str, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        TenantActor: Handler<M>,
    {
        let (store, registry, idle_after, key, plan_caps) = (
            self.store.clone(),
            self.registry.clone(),
            self.idle_after,
            id.to_string(),
            self.plan_caps.clone(),
        );
        let make = move |_: &mut Context<TenantActor>, meta: Arc<ActorMeta>| TenantActor {
            meta,
            id: key.clone(),
            store: store.clone(),
            state: State::Loading,
            last_active: Instant::now(),
            idle_after,
            registry: registry.clone(),
            plan_caps: plan_caps.clone(),
            running: HashSet::new(),
            waiting: VecDeque::new(),
        };
        Ok(self.registry.send(id, make, msg).await?)
    }
}
