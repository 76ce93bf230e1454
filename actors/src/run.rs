//! Agent runs: the domain, the `RunActor` that drives one run through its steps, and the
//! cheap-clone [`Runs`] handle.
//!
//! A run is `queued -> running -> completed | failed | cancelled`. Each step is one
//! streaming LLM call plus the tool calls the model asked for. Every event is persisted
//! (batched for tokens) before it is published; a step is recorded when it finishes, so a
//! restarted run resumes after its last finished step.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::events::{DomainEvent, EventHub, EventLog, RunEvent, StreamEvent};
use crate::llm::{complete, now, EventWriter};
use crate::provider::{ChatMessage, ChatRequest, ProviderSet, ToolCall, Usage};
use crate::registry::{ActorError, ActorMeta, Registry};
use crate::store::{retrying, StoreFailure};
use crate::tenant::Tenants;
use crate::tools::{self, Artifact, Workspace, Workspaces};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    RequiresAction,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::RequiresAction => "requires_action",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::RequiresAction,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// How a run is to be carried out: the agent as it was when the run was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub system_prompt: Option<String>,
    /// The provider to use, then the fallbacks in order.
    pub providers: Vec<String>,
    pub model: Option<String>,
    /// Tools offered to the model (empty at autonomy `low`).
    pub tools: Vec<String>,
    pub max_steps: u32,
    pub temperature: Option<f32>,
    pub timeout_secs: u64,
}

/// A tool's answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolResult {
    pub tool_call_id: String,
    pub name: String,
    pub output: String,
    pub is_error: bool,
}

/// One finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    pub index: u32,
    pub provider: String,
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_results: Vec<ToolResult>,
    pub usage: Usage,
    pub started_at: String,
    pub finished_at: String,
}

/// Why a run failed: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl RunError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }
}

impl From<StoreFailure> for RunError {
    fn from(e: StoreFailure) -> Self {
        RunError::new("store_failure", e.message)
    }
}

/// An agent run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    pub id: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub project_id: String,
    pub goal: String,
    pub input: Value,
    pub status: RunStatus,
    pub steps: Vec<Step>,
    pub output: Option<String>,
    pub usage: Usage,
    pub error: Option<RunError>,
    pub artifacts: Vec<Artifact>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    #[serde(skip)]
    pub spec: RunSpec,
    /// The seq of the run's last stored event.
    #[serde(skip)]
    pub last_seq: i64,
}

/// What the run actor needs from the store.
#[async_trait]
pub trait RunStore: EventLog {
    /// The run with its finished steps and last event seq.
    /// Stores a new (queued) run.
    async fn create_run(&self, run: &Run) -> Result<(), StoreFailure>;
    async fn load_run(&self, id: &str) -> Result<Option<Run>, StoreFailure>;
    /// Marks the run running, with `event` (`run.started`) and the `agent.started` domain event.
    /// Stores the run as started, `event` and (in the same transaction) `domain`.
    async fn start_run(
        &self,
        run: &Run,
        event: &StreamEvent,
        domain: DomainEvent,
    ) -> Result<(), StoreFailure>;
    /// Records a finished step, the run's artifacts and usage so far, and `event`.
    async fn save_step(
        &self,
        run: &Run,
        step: &Step,
        event: &StreamEvent,
    ) -> Result<(), StoreFailure>;
    /// Records the run's end (status, output, error, usage), `event`, and the domain event.
    /// Stores the run's end, `event` and (in the same transaction) `domain`, if any.
    async fn finish_run(
        &self,
        run: &Run,
        event: &StreamEvent,
        domain: Option<DomainEvent>,
    ) -> Result<(), StoreFailure>;
    /// Runs left `queued` or `running` (by a stop or a crash).
    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreFailure>;
}

/// Retry, timeout and batching settings of run execution.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Attempts after the first for retryable provider errors (429, 5xx, timeouts).
    pub max_retries: u32,
    /// The first backoff; each retry doubles it.
    pub retry_base: Duration,
    /// A stream with no chunk for this long has stalled.
    pub idle_timeout: Duration,
    /// The longest wait for a provider to start answering (its client's retries included).
    pub start_timeout: Duration,
    /// Tokens are written in batches at most this far apart.
    pub flush_every: Duration,
    /// ... or of at most this many events.
    pub flush_batch: usize,
    /// How long a write that fails on a database outage is retried before it counts.
    pub store_retry: Duration,
    /// The most text one step (or chat reply) may stream, in bytes.
    pub max_step_output: usize,
    /// The most arguments one tool call may carry, in bytes.
    pub max_tool_arguments: usize,
}

/// What every run actor shares.
pub struct RunDeps {
    pub store: Arc<dyn RunStore>,
    pub hub: EventHub,
    pub providers: Arc<dyn ProviderSet>,
    pub tenants: Tenants,
    pub settings: RunSettings,
    /// Project files for the tools, through each tenant's storage configuration.
    pub workspaces: Arc<dyn Workspaces>,
}

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
            drive(deps.clone(), id.clone(), cancel, meta),
            span,
        ))
        .catch_unwind();
        let meta = self.meta.clone();
        ctx.spawn(driver.into_actor(self).map(move |outcome, act, ctx| {
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
    deps: Arc<RunDeps>,
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

    /// Stores the new run and starts it: it waits for one of its tenant's slots, then runs.
    pub async fn create(&self, run: &Run) -> Result<(), StoreFailure> {
        self.deps.store.create_run(run).await?;
        self.start(&run.id);
        Ok(())
    }

    /// Starts (or finds) the actor of stored run `id`.
    pub fn start(&self, id: &str) {
        self.registry.activate(id, self.make(id));
    }

    /// Cancels run `id`, starting its actor if needed so that a queued run is cancelled too.
    pub async fn cancel(&self, id: &str) -> Result<(), ActorError> {
        self.registry.send(id, self.make(id), CancelRun).await
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
    ) -> impl Fn(&mut Context<RunActor>, Arc<ActorMeta>) -> RunActor + Send + Clone + 'static {
        let (deps, registry, id) = (self.deps.clone(), self.registry.clone(), id.to_string());
        move |_, meta| RunActor {
            id: id.clone(),
            deps: deps.clone(),
            cancel: CancellationToken::new(),
            ended: false,
            registry: registry.clone(),
            meta,
        }
    }
}

async fn fail_after_panic(deps: Arc<RunDeps>, id: String) {
    let Ok(Some(mut run)) = deps.store.load_run(&id).await else {
        return;
    };
    if run.status.is_terminal() {
        return;
    }
    let mut log = EventWriter::new(
        &id,
        run.last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    );
    finish(
        &*deps.store,
        &mut run,
        &mut log,
        Err(RunError::new(
            "internal_error",
            "the run stopped on an internal error",
        )),
    )
    .await;
    deps.tenants.release(&run.tenant_id, &id).await;
}

/// Drives run `id` from where the store says it is to its end.
async fn drive(deps: Arc<RunDeps>, id: String, cancel: CancellationToken, meta: Arc<ActorMeta>) {
    meta.set_state("loading");
    let mut run = match deps.store.load_run(&id).await {
        Ok(Some(run)) if !run.status.is_terminal() => run,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(run_id = %id, error = %e, "run not loaded; it stays as it is until the next start");
            return;
        }
    };
    let mut log = EventWriter::new(
        &id,
        run.last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    );
    let tenant = run.tenant_id.clone();
    tracing::Span::current().record("tenant_id", tenant.as_str());
    meta.set_owner(&tenant);
    meta.set_state("queued");

    // Admission: wait for a slot under the tenant's concurrency limit, unless cancelled.
    let admitted = tokio::select! {
        admitted = deps.tenants.admit(&tenant, &id) => admitted,
        _ = cancel.cancelled() => {
            deps.tenants.release(&tenant, &id).await;
            finish(&*deps.store, &mut run, &mut log, Ok(Ending::Cancelled)).await;
            return;
        }
    };
    if let Err(e) = admitted {
        tracing::warn!(run_id = %id, error = %e, "admission not confirmed; running anyway");
    }

    meta.set_state("running");
    tracing::info!("run started");
    let began = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(run.spec.timeout_secs);
    let mut ending = Ok(Ending::Cancelled);
    if !cancel.is_cancelled() {
        ending = match start(&*deps.store, &mut run, &mut log).await {
            Err(e) => Err(e),
            Ok(()) => tokio::select! {
                outcome = run_steps(&deps, &mut run, &mut log) => outcome.map(Ending::Completed),
                _ = cancel.cancelled() => Ok(Ending::Cancelled),
                _ = tokio::time::sleep_until(deadline) => Err(RunError::new(
                    "run_timeout",
                    format!("the run did not finish within {} s", run.spec.timeout_secs),
                )),
            },
        };
    }
    // Whatever was streamed before a cancel or a failure is kept.
    if let Err(e) = log.flush().await {
        tracing::error!(run_id = %id, error = %e.message, "partial tokens not saved");
    }
    if let Err(e) = &ending {
        meta.record_error(&format!("{}: {}", e.code, e.message));
    }
    meta.set_state("finishing");
    finish(&*deps.store, &mut run, &mut log, ending).await;
    let took = began.elapsed();
    metrics::histogram!("dgidgi_run_duration_seconds").record(took.as_secs_f64());
    tracing::info!(
        status = run.status.as_str(),
        millis = took.as_millis() as u64,
        "run ended"
    );
    deps.tenants.release(&tenant, &id).await;
}

enum Ending {
    Completed(String),
    Cancelled,
}

async fn start(store: &dyn RunStore, run: &mut Run, log: &mut EventWriter) -> Result<(), RunError> {
    if run.status == RunStatus::Running {
        return log
            .emit(&RunEvent::RunResumed {
                after_step: run.steps.len(),
            })
            .await;
    }
    run.status = RunStatus::Running;
    run.started_at = Some(now());
    metrics::counter!("dgidgi_runs_started_total").increment(1);
    let event = log.event(&RunEvent::RunStarted {
        run_id: run.id.clone(),
        agent_id: run.agent_id.clone(),
    });
    let started = DomainEvent::AgentStarted;
    retrying(log.store_retry(), || store.start_run(run, &event, started)).await?;
    log.publish(&event);
    Ok(())
}

async fn finish(
    store: &dyn RunStore,
    run: &mut Run,
    log: &mut EventWriter,
    ending: Result<Ending, RunError>,
) {
    // The run's end decides its event on the stream and the domain event webhooks get.
    let (ended, domain) = match ending {
        Ok(Ending::Completed(output)) => {
            run.status = RunStatus::Completed;
            run.output = Some(output.clone());
            let usage = run.usage;
            (
                RunEvent::RunCompleted { output, usage },
                Some(DomainEvent::AgentCompleted),
            )
        }
        Ok(Ending::Cancelled) => {
            run.status = RunStatus::Cancelled;
            let steps = run.steps.len();
            (RunEvent::RunCancelled { steps }, None)
        }
        Err(error) => {
            run.status = RunStatus::Failed;
            run.error = Some(error.clone());
            (
                RunEvent::RunFailed { error },
                Some(DomainEvent::AgentFailed),
            )
        }
    };
    run.finished_at = Some(now());
    metrics::counter!("dgidgi_runs_finished_total", "status" => run.status.as_str()).increment(1);
    let event = log.event(&ended);
    match retrying(log.store_retry(), || store.finish_run(run, &event, domain)).await {
        Ok(()) => log.publish(&event),
        Err(e) => {
            tracing::error!(run_id = %run.id, error = %e, "run end not saved; it resumes at the next start")
        }
    }
    log.end();
}

/// The step loop: stops when the model answers without tool calls or the budget is spent.
async fn run_steps(
    deps: &Arc<RunDeps>,
    run: &mut Run,
    log: &mut EventWriter,
) -> Result<String, RunError> {
    let tool_specs = tools::specs(&run.spec.tools);
    let workspace = if tool_specs.is_empty() {
        Workspace::new(Err("this run has no tools".into()))
    } else {
        Workspace::new(deps.workspaces.open(&run.tenant_id, &run.project_id).await)
    };
    while (run.steps.len() as u32) < run.spec.max_steps {
        let index = run.steps.len() as u32;
        let started_at = now();
        let step_began = std::time::Instant::now();
        log.emit(&RunEvent::StepStarted { step: index }).await?;
        let request = ChatRequest {
            model: run.spec.model.clone(),
            messages: conversation(run),
            tools: tool_specs.clone(),
            temperature: run.spec.temperature,
            max_tool_arguments: deps.settings.max_tool_arguments,
        };
        let answer = complete(
            &*deps.providers,
            &deps.settings,
            &run.spec.providers,
            request,
            &|delta: &str| RunEvent::Token {
                step: index,
                delta: delta.to_string(),
            },
            log,
        )
        .await?;
        let mut step = Step {
            index,
            provider: answer.provider,
            model: answer.model,
            text: answer.text,
            tool_calls: answer.tool_calls,
            tool_results: Vec::new(),
            usage: answer.usage,
            started_at,
            finished_at: String::new(),
        };
        for call in &step.tool_calls {
            log.emit(&RunEvent::ToolCalled {
                step: index,
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .await?;
            let outcome = workspace.run(call).await;
            if let Some(artifact) = outcome.artifact {
                run.artifacts.retain(|a| a.path != artifact.path);
                run.artifacts.push(artifact);
            }
            log.emit(&RunEvent::ToolResult {
                step: index,
                id: call.id.clone(),
                name: call.name.clone(),
                output: outcome.output.clone(),
                is_error: outcome.is_error,
            })
            .await?;
            step.tool_results.push(ToolResult {
                tool_call_id: call.id.clone(),
                name: call.name.clone(),
                output: outcome.output,
                is_error: outcome.is_error,
            });
        }
        step.finished_at = now();
        metrics::histogram!("dgidgi_step_duration_seconds")
            .record(step_began.elapsed().as_secs_f64());
        run.usage.add(step.usage);
        log.flush().await?;
        let done = step.tool_calls.is_empty();
        let event = log.event(&RunEvent::StepCompleted {
            step: index,
            usage: step.usage,
            tool_calls: step.tool_calls.len(),
        });
        run.steps.push(step);
        let step = run.steps.last().expect("just pushed");
        retrying(deps.settings.store_retry, || {
            deps.store.save_step(run, step, &event)
        })
        .await?;
        log.publish(&event);
        if done {
            return Ok(run.steps.last().map(|s| s.text.clone()).unwrap_or_default());
        }
    }
    Err(RunError::new(
        "step_budget_exhausted",
        format!(
            "the model still asked for tools after {} steps",
            run.spec.max_steps
        ),
    ))
}

/// The messages of the next step: instructions, the goal, then every finished step.
fn conversation(run: &Run) -> Vec<ChatMessage> {
    let system = run.spec.system_prompt.clone().unwrap_or_else(|| {
        "You are an autonomous agent. Work towards the user's goal step by step, using the tools offered when they help, and answer with the result.".into()
    });
    let mut goal = run.goal.clone();
    if !run.input.is_null() {
        goal.push_str(&format!("\n\nInput:\n{}", run.input));
    }
    let mut messages = vec![
        ChatMessage::System { content: system },
        ChatMessage::User { content: goal },
    ];
    for step in &run.steps {
        messages.push(ChatMessage::Assistant {
            content: step.text.clone(),
            tool_calls: step.tool_calls.clone(),
        });
        for result in &step.tool_results {
            messages.push(ChatMessage::Tool {
                tool_call_id: result.tool_call_id.clone(),
                content: result.output.clone(),
            });
        }
    }
    messages
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
