//! The `RunActor`, single writer of one run (it owns the driver task and its
//! cancellation), and the cheap-clone [`Runs`] handle.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::driver::{drive, fail_after_panic, Seed};
use super::{Admit, DecideError, Decision, Error, NewRun, Pause, Run, RunDeps, RunSpec, RunStatus};
use crate::agent::RunDefaults;
use crate::chat::Message;
use crate::events::EventHub;
use crate::registry::{self, ActorMeta, Registry};
use crate::store::StoreFailure;
use crate::time;

/// Stop the run: the LLM stream is dropped at once; a queued run never starts.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct CancelRun;

/// The single writer of one run: owns the driver task and its cancellation.
pub struct RunActor {
    id: String,
    deps: Arc<RunDeps>,
    cancel: CancellationToken,
    /// The driver has run to its end: the actor only waits to go away. (Its supervisor
    /// restarts it while a sender still holds its address, a cancel that raced the end,
    /// say; a restart must neither drive the run again nor spin.)
    ended: bool,
    /// The run as it was just created (`Runs::submit`, a run with its own stream), so that
    /// its first start need neither load nor claim it again; a restart loads it.
    seed: Option<Seed>,
    registry: Registry<RunActor>,
    meta: Arc<ActorMeta>,
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.ended {
            ctx.run_later(Duration::from_millis(50), |_, ctx| ctx.stop());
            return;
        }
        let (deps, id, cancel, meta) = (
            self.deps.clone(),
            self.id.clone(),
            self.cancel.clone(),
            self.meta.clone(),
        );
        // A panic in the driver fails this run; the arbiter and every other run go on.
        let span = tracing::info_span!("run", run_id = %id, tenant_id = tracing::field::Empty);
        let driver = AssertUnwindSafe(tracing::Instrument::instrument(
            drive(deps.clone(), id.clone(), self.seed.take(), cancel, meta),
            span,
        ))
        .catch_unwind();
        let meta = self.meta.clone();
        ctx.spawn(driver.into_actor(self).map(move |outcome, act, ctx| {
            match &outcome {
                // The run waits for a human: driven again at the wait's deadline (sooner
                // if the wait is answered or cancelled), by this node or, if it stops
                // first, by whichever node reclaims it then.
                Ok(Some(until)) => {
                    let runs = Runs {
                        registry: act.registry.clone(),
                        deps: act.deps.clone(),
                    };
                    let (id, wait) = (act.id.clone(), time::until(until));
                    actix::spawn(async move {
                        tokio::time::sleep(wait + Duration::from_millis(10)).await;
                        runs.start(&id);
                    });
                }
                Ok(None) => {}
                Err(_) => {}
            }
            if let Err(panic) = outcome {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(run_id = %id, panic = %what, "run driver panicked; the run fails");
                meta.record_error(&format!("panic: {what}"));
                actix::spawn(fail_after_panic(deps, id.clone()));
            }
            act.ended = true;
            act.registry.forget(&act.id, &ctx.address());
            ctx.stop();
        }));
    }
}

impl Supervised for RunActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if self.ended {
            return;
        }
        tracing::warn!(run_id = %self.id, "run actor restarting; the run reloads from the store");
        self.meta.restarted();
        self.seed = None;
        self.cancel = CancellationToken::new();
    }
}

impl Handler<CancelRun> for RunActor {
    type Result = ();

    fn handle(&mut self, _: CancelRun, _: &mut Context<Self>) {
        self.cancel.cancel();
    }
}

/// The handle through which the rest of the program starts and cancels runs.
#[derive(Clone)]
pub struct Runs {
    registry: Registry<RunActor>,
    pub(super) deps: Arc<RunDeps>,
}

impl Runs {
    pub fn new(deps: RunDeps, arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            registry: Registry::new("run", arbiters),
            deps: Arc::new(deps),
        }
    }

    pub fn hub(&self) -> &EventHub {
        &self.deps.hub
    }

    /// The live run actors (how many, what operators see of each).
    pub fn actors(&self) -> &Registry<RunActor> {
        &self.registry
    }

    /// Makes a run of `new.agent` (its budget, providers and model from the agent, its
    /// tenant's settings and the server's defaults: `RunSpec::for_agent`), stores it queued
    /// and starts it: it waits for one of its tenant's slots, then runs. Refused when the
    /// tenant already has `max_queued_per_tenant` runs waiting.
    pub async fn submit(&self, new: NewRun<'_>) -> Result<Run, Error> {
        let tenant = self.deps.tenants.get(&new.tenant_id).await?;
        // A tenant whose monthly budget is spent gets no more runs this month.
        let monthly = tenant.settings.monthly_budget();
        if !monthly.is_unlimited() {
            let spent = self.deps.store.spent_this_month(&tenant.id).await?;
            let next = super::Reservation {
                tokens: 1,
                cost_micros: 1,
            };
            if let Some(which) = monthly.exceeded_by(spent, next) {
                return Err(Error::BudgetSpent(which));
            }
        }
        let defaults = RunDefaults {
            provider: self.deps.providers.default_name().to_string(),
            timeout_secs: self.deps.settings.default_timeout_secs,
        };
        let mut spec = RunSpec::for_agent(new.agent, &tenant.settings, &defaults);
        let now = time::now();
        // A chat reply's message is stored with its run: each names the other.
        let reply = new.reply.map(|to| {
            let mut reply =
                Message::reply(&to.session_id, &to.message_id, &to.turn.in_reply_to, &now);
            reply.run_id = Some(new.id.clone());
            spec.chat = Some(to.turn);
            reply
        });
        let admit = Admit {
            max_queued: self.deps.settings.max_queued_per_tenant,
            slots: self.deps.tenants.slots_of(&tenant),
        };
        let mut run = Run {
            id: new.id,
            tenant_id: new.tenant_id,
            agent_id: new.agent.id.clone(),
            project_id: new.project_id,
            goal: new.goal,
            input: new.input,
            status: RunStatus::Queued,
            steps: Vec::new(),
            output: None,
            usage: Default::default(),
            error: None,
            artifacts: Vec::new(),
            created_at: now.clone(),
            started_at: None,
            finished_at: None,
            updated_at: now,
            session_id: reply.as_ref().map(|r| r.session_id.clone()),
            message_id: reply.as_ref().map(|r| r.id.clone()),
            spec,
            last_seq: 0,
            epoch: 0,
            cancel_requested: false,
            pause: None,
            reserved: Default::default(),
        };
        let created = self
            .deps
            .store
            .create_run(&run, reply.as_ref(), admit)
            .await?
            .ok_or(Error::Busy(admit.max_queued))?;
        run.epoch = created.epoch;
        // A run of its own stream starts as made; a chat reply's run writes on in its
        // session's stream, whose last seq the load reads.
        let seed = run.session_id.is_none().then(|| Seed {
            run: run.clone(),
            admitted: created.admitted,
        });
        self.registry.activate(&run.id, self.make(&run.id, seed));
        Ok(run)
    }

    /// Stored run `id`, with its steps.
    pub async fn get(&self, id: &str) -> Result<Option<Run>, StoreFailure> {
        self.deps.store.load_run(id).await
    }

    /// Records a human's answers to calls of run `id` that wait for one (see
    /// [`Pause::decide`]); once every call is answered the run is queued and driven again.
    /// Answers the run's pause as recorded.
    pub async fn decide(
        &self,
        id: &str,
        decisions: Vec<(String, Decision)>,
    ) -> Result<Pause, DecideError> {
        // Two answers to different calls may race: each is recorded on the pause the other
        // left (a compare-and-set), so neither is lost.
        for _ in 0..8 {
            let run = self
                .deps
                .store
                .load_run(id)
                .await?
                .ok_or(DecideError::NotWaiting("gone"))?;
            let Some(before) = run
                .pause
                .filter(|_| run.status == RunStatus::RequiresAction)
            else {
                return Err(DecideError::NotWaiting(run.status.as_str()));
            };
            let mut after = before.clone();
            after.decide(decisions.clone())?;
            if self
                .deps
                .store
                .record_decisions(id, &before, &after)
                .await?
            {
                if after.answered() {
                    self.start(id);
                }
                return Ok(after);
            }
        }
        Err(DecideError::Store(StoreFailure::new(
            "the run's pending calls kept changing; try again",
        )))
    }

    /// Starts (or finds) the actor of stored run `id`.
    pub fn start(&self, id: &str) {
        self.registry.activate(id, self.make(id, None));
    }

    /// Cancels run `id` wherever it is driven: the cancel is recorded (its owner, on any
    /// node, is told; a next owner honours it), and a run nobody drives is taken here so
    /// that a queued run is cancelled too.
    pub async fn cancel(&self, id: &str) -> Result<(), registry::Error> {
        match self.deps.store.request_cancel(id).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                // Driven here: it stops now. Driven nowhere: its driver starts here and finds
                // the cancel. Driven by another node: that node was told.
                match self.registry.get(id) {
                    Some(actor) => actor.do_send(CancelRun),
                    None => self.start(id),
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(run_id = %id, error = %e, "cancel not recorded; cancelling here only");
                self.registry.send(id, self.make(id, None), CancelRun).await
            }
        }
    }

    /// Cancels run `id` if this node drives it (a cancel recorded through another node).
    pub fn cancel_here(&self, id: &str) {
        if let Some(actor) = self.registry.get(id) {
            actor.do_send(CancelRun);
        }
    }

    /// Starts every run left unfinished by an earlier process; returns how many.
    pub async fn recover(&self) -> Result<usize, StoreFailure> {
        let ids = self.deps.store.unfinished_runs().await?;
        for id in &ids {
            self.start(id);
        }
        Ok(ids.len())
    }

    /// Resumes the unfinished runs that have no live actor (one gave up when the store was
    /// out of reach, or its process died); returns how many.
    pub async fn reclaim(&self) -> Result<usize, StoreFailure> {
        let orphans: Vec<String> = self
            .deps
            .store
            .unfinished_runs()
            .await?
            .into_iter()
            .filter(|id| self.registry.meta(id).is_none())
            .collect();
        for id in &orphans {
            self.start(id);
        }
        Ok(orphans.len())
    }

    fn make(
        &self,
        id: &str,
        seed: Option<Seed>,
    ) -> impl Fn(&mut Context<RunActor>, Arc<ActorMeta>) -> RunActor + Send + Clone + 'static {
        let (deps, registry, id) = (self.deps.clone(), self.registry.clone(), id.to_string());
        move |_, meta| RunActor {
            id: id.clone(),
            deps: deps.clone(),
            cancel: CancellationToken::new(),
            ended: false,
            seed: seed.clone(),
            registry: registry.clone(),
            meta,
        }
    }
}
