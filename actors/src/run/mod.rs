//! Agent runs: the domain, the `RunActor` that drives one run through its steps, and the
//! cheap-clone [`Runs`] handle.
//!
//! A run is `queued -> running -> completed | failed | cancelled`. Each step is one
//! streaming LLM call plus the tool calls the model asked for. Every event is persisted
//! (batched for tokens) before it is published; a step is recorded when it finishes, so a
//! restarted run resumes after its last finished step.
//!
//! - this file: the run domain (status, spec, steps, errors, settings) and the store trait;
//! - [`actor`]: the `RunActor` (one per live run) and the [`Runs`] handle;
//! - `driver`: the driver task a run actor runs, its step loop and its ending.

mod actor;
mod driver;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{Agent, Approvals};
use crate::chat::Message;
use crate::events::{DomainEvent, EventHub, EventLog, StreamEvent, View};
use crate::provider::{ChatMessage, ProviderSet, ToolCall, Usage};
use crate::store::StoreFailure;
use crate::tenant::{self, Tenants};
use crate::tools::{Artifact, RemoteTools, Workspaces};

pub use actor::{CancelRun, RunActor, Runs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The tools whose calls wait for a human's yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
    /// How long a call waits for its human.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
    /// What one run may use (the agent's `maxTokensPerRun`, `maxCostPerRun`).
    #[serde(default, skip_serializing_if = "Budget::is_unlimited")]
    pub budget: Budget,
    /// For a run that writes a chat reply: the conversation it continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatTurn>,
}

/// A limit on LLM use: tokens and cost (millionths of a US dollar); `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
}

impl Budget {
    pub fn is_unlimited(&self) -> bool {
        self.tokens.is_none() && self.cost_micros.is_none()
    }

    /// Which limit `spent` plus `more` passes, if one does (`tokens` or `cost`).
    pub fn exceeded_by(&self, spent: Reservation, more: Reservation) -> Option<&'static str> {
        let over = |limit: Option<u64>, spent: u64, more: u64| {
            limit.is_some_and(|limit| spent.saturating_add(more) > limit)
        };
        if over(self.tokens, spent.tokens, more.tokens) {
            Some("tokens")
        } else if over(self.cost_micros, spent.cost_micros, more.cost_micros) {
            Some("cost")
        } else {
            None
        }
    }
}

/// Tokens and cost (millionths of a US dollar) set aside for a step before it runs: its
/// worst case, settled to what it used when the step is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    pub tokens: u64,
    pub cost_micros: u64,
}

fn default_approval_timeout() -> u64 {
    crate::agent::DEFAULT_APPROVAL_TIMEOUT_SECS
}

impl RunSpec {
    /// Whether a call of `tool` waits for a human's yes.
    pub fn needs_approval(&self, tool: &str) -> bool {
        self.approvals.as_ref().is_some_and(|a| a.covers(tool))
    }
}

/// What a run that answers a chat message knows of its session: the message it answers
/// (its goal) and the conversation before it (earlier messages, tool calls and results),
/// kept with the run so that a resumed run continues the same conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTurn {
    pub in_reply_to: String,
    pub history: Vec<ChatMessage>,
}

/// A tool's answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub tool_call_id: String,
    pub name: String,
    pub output: String,
    pub is_error: bool,
}

/// One finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl Step {
    /// The step as the model sees it in a later conversation: its answer (with the tool
    /// calls it asked for), then each tool's result.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let mut messages = vec![ChatMessage::Assistant {
            content: self.text.clone(),
            tool_calls: self.tool_calls.clone(),
        }];
        messages.extend(self.tool_results.iter().map(|result| ChatMessage::Tool {
            tool_call_id: result.tool_call_id.clone(),
            content: result.output.clone(),
        }));
        messages
    }

    /// The results in the order of the calls they answer.
    pub fn order_results(&mut self) {
        let at = |id: &str| self.tool_calls.iter().position(|c| c.id == id);
        let mut results = std::mem::take(&mut self.tool_results);
        results.sort_by_key(|r| at(&r.tool_call_id));
        self.tool_results = results;
    }
}

/// A step whose tool calls wait for a human (the run is `requires_action`): the step as
/// far as it went (the model's answer, the results of the calls that needed nobody), the
/// calls that wait, each with its answer once given, and when the wait ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub step: Step,
    pub calls: Vec<PendingCall>,
    /// The wait's deadline (stored time form); then the run fails with `approval_timeout`.
    pub until: String,
}

/// A tool call that waits for a human, and the answer once given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub tool_call_id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// A human's answer to one pending call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub approve: bool,
    /// Approved with these arguments (JSON text) instead of the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Why it was denied: the model sees it as the tool's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why decisions were not recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecideError {
    /// The run does not wait for anyone (its status).
    #[error("the run is {0}, not waiting for approval")]
    NotWaiting(&'static str),
    /// A decision names a call that does not wait.
    #[error("no pending tool call '{0}'")]
    Unknown(String),
    /// A decision names a call answered already.
    #[error("tool call '{0}' has been answered already")]
    Answered(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
}

impl Pause {
    /// Whether every waiting call has its answer.
    pub fn answered(&self) -> bool {
        self.calls.iter().all(|c| c.decision.is_some())
    }

    /// Records `decisions` (by tool call id): each must name a call that waits and has no
    /// answer yet; none is recorded unless all can be.
    pub fn decide(&mut self, decisions: Vec<(String, Decision)>) -> Result<(), DecideError> {
        let mut next = self.calls.clone();
        for (id, decision) in decisions {
            let call = next
                .iter_mut()
                .find(|c| c.tool_call_id == id)
                .ok_or_else(|| DecideError::Unknown(id.clone()))?;
            if call.decision.is_some() {
                return Err(DecideError::Answered(id));
            }
            call.decision = Some(decision);
        }
        self.calls = next;
        Ok(())
    }

    /// The step as it stands when the wait ends without the calls running (a cancel, a
    /// timeout): each call that did not run gets `why` as its (error) result, so that a
    /// later conversation has an answer for every call.
    pub fn abandon(mut self, why: &str) -> Step {
        for call in &self.calls {
            self.step.tool_results.push(ToolResult {
                tool_call_id: call.tool_call_id.clone(),
                name: call.name.clone(),
                output: why.to_string(),
                is_error: true,
            });
        }
        self.step.order_results();
        self.step.finished_at = crate::time::now();
        self.step
    }
}

/// Why a run failed: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }
}

impl Failure {
    /// The code of a write refused because another node claimed the run.
    pub const FENCED: &'static str = "fenced";
}

impl From<StoreFailure> for Failure {
    fn from(e: StoreFailure) -> Self {
        let code = if e.fenced {
            Failure::FENCED
        } else {
            "store_failure"
        };
        Failure::new(code, e.message)
    }
}

/// An agent run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub error: Option<Failure>,
    pub artifacts: Vec<Artifact>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    /// For a chat reply: the session whose stream the run writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// For a chat reply: the reply message the run writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip)]
    pub spec: RunSpec,
    /// The seq of the run's last stored event.
    #[serde(skip)]
    pub last_seq: i64,
    /// The epoch of the claim its driver holds (see [`RunStore::claim_run`]).
    #[serde(skip)]
    pub epoch: i64,
    /// A cancel was asked for (through any node); the run's driver, now or next, stops it.
    #[serde(skip)]
    pub cancel_requested: bool,
    /// What the run's step in flight has set aside of its tenant's monthly budget (written
    /// with each of the driver's writes; zero between steps).
    #[serde(skip)]
    pub reserved: Reservation,
    /// While `requires_action`: the step whose tool calls wait for a human.
    #[serde(
        rename = "pending_tool_calls",
        skip_serializing_if = "Option::is_none",
        serialize_with = "pending_calls"
    )]
    pub pause: Option<Pause>,
}

/// A run's pause as its `pending_tool_calls`.
fn pending_calls<S: serde::Serializer>(pause: &Option<Pause>, out: S) -> Result<S::Ok, S::Error> {
    let calls: &[PendingCall] = pause.as_ref().map_or(&[], |p| &p.calls);
    calls.serialize(out)
}

impl Run {
    /// The stream the run's events are in: its own, or its session's for a chat reply.
    pub fn stream(&self) -> &str {
        self.session_id.as_deref().unwrap_or(&self.id)
    }

    /// What of [`Run::stream`] is this run's.
    pub fn view(&self) -> View {
        match &self.message_id {
            Some(reply) => View::Reply(reply.clone()),
            None => View::All,
        }
    }
}

/// What the run actor needs from the store.
#[async_trait]
pub trait RunStore: EventLog {
    /// Makes this node the run's owner if the run is unfinished and no other live node owns
    /// it (its lease has expired, or it never had one): answers the claim's epoch, which
    /// every later write of this driver carries. `None`: another node drives it.
    async fn claim_run(&self, id: &str) -> Result<Option<i64>, StoreFailure>;
    /// Gives `run` one of its tenant's `slots` run slots if one is free across every node
    /// (or it holds one already); false: all are taken, try again later.
    async fn take_slot(&self, run: &Run, slots: u32) -> Result<bool, StoreFailure>;
    /// Records that run `id` is to stop and tells its owner; false when it has ended.
    async fn request_cancel(&self, id: &str) -> Result<bool, StoreFailure>;
    /// Stores a new (queued) run, claimed by this node, and (in the same transaction) the
    /// chat `reply` it is to write, streaming and empty, if it answers a message; gives it
    /// one of its tenant's run slots in the same transaction if one is free (see
    /// [`RunStore::take_slot`]). `None`: refused, `admit.max_queued` of the tenant's runs
    /// already wait for a slot.
    async fn create_run(
        &self,
        run: &Run,
        reply: Option<&Message>,
        admit: Admit,
    ) -> Result<Option<Created>, StoreFailure>;
    /// The run with its finished steps and the last event seq of its stream.
    async fn load_run(&self, id: &str) -> Result<Option<Run>, StoreFailure>;
    /// Stores the run as started (or resumed after a pause), `events` and (in the same
    /// transaction) `domain`, if any.
    async fn start_run(
        &self,
        run: &Run,
        events: &[StreamEvent],
        domain: Option<DomainEvent>,
    ) -> Result<(), StoreFailure>;
    /// Stores the run as waiting for a human (`requires_action`, with `run.pause`),
    /// `events` and (in the same transaction) `domain`; the run lets go of its owner and
    /// its run slot: whoever resumes it claims it and takes a slot again.
    async fn pause_run(
        &self,
        run: &Run,
        events: &[StreamEvent],
        domain: DomainEvent,
    ) -> Result<(), StoreFailure>;
    /// Replaces the pause of waiting run `id`, if it is still `before` (false: it changed
    /// meanwhile, or the run no longer waits), with `after`; when `after` has every answer,
    /// the run is queued again in the same write.
    async fn record_decisions(
        &self,
        id: &str,
        before: &Pause,
        after: &Pause,
    ) -> Result<bool, StoreFailure>;
    /// Sets `want` aside for `run`'s next step from its tenant's budget for this month,
    /// `monthly`, if what the tenant's runs used this month, what its other runs have set
    /// aside and `want` stay within it, for every node at once. `Some(which)`: refused,
    /// the budget that would pass (`tokens` or `cost`).
    async fn reserve(
        &self,
        run: &Run,
        want: Reservation,
        monthly: Budget,
    ) -> Result<Option<&'static str>, StoreFailure>;
    /// What tenant `tenant_id`'s runs have used this calendar month (UTC).
    async fn spent_this_month(&self, tenant_id: &str) -> Result<Reservation, StoreFailure>;
    /// Records a finished step, the run's artifacts and usage so far, and `events` (its
    /// `step.completed` last).
    async fn save_step(
        &self,
        run: &Run,
        step: &Step,
        events: &[StreamEvent],
    ) -> Result<(), StoreFailure>;
    /// Stores the run's end, `events` (what was still unwritten of its stream, its end
    /// last) and (in the same transaction) `domain`, if any, and the chat `reply` the run
    /// wrote, if it answered a message. With `last_step`, the run's last step
    /// (`run.steps.last()`, whose `step.completed` is among `events`) is saved in the same
    /// transaction.
    async fn finish_run(
        &self,
        run: &Run,
        last_step: bool,
        events: &[StreamEvent],
        domain: Option<DomainEvent>,
        reply: Option<&Message>,
    ) -> Result<(), StoreFailure>;
    /// Unfinished runs this node may drive: unowned, owned by this node, or whose owner's
    /// lease has expired (a stop, a crash, a node that went away).
    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreFailure>;
}

/// How a new run is let in (`RunStore::create_run`).
#[derive(Debug, Clone, Copy)]
pub struct Admit {
    /// Refused when this many of the tenant's runs already wait for a slot.
    pub max_queued: u32,
    /// The tenant's run slots across every node.
    pub slots: u32,
}

/// A run just stored (`RunStore::create_run`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Created {
    /// The claim this node holds on it.
    pub epoch: i64,
    /// Whether it holds one of its tenant's run slots already.
    pub admitted: bool,
}

/// A run to submit: the agent it runs, what for, and where its files go.
pub struct NewRun<'a> {
    /// Chosen by the caller, so that it can follow the run's events before it starts.
    pub id: String,
    pub tenant_id: String,
    pub agent: &'a Agent,
    pub project_id: String,
    pub goal: String,
    pub input: Value,
    /// Set when the run answers a chat message.
    pub reply: Option<ReplyTo>,
}

/// The chat message a run answers and the reply it writes.
pub struct ReplyTo {
    pub session_id: String,
    /// The reply message the run writes.
    pub message_id: String,
    pub turn: ChatTurn,
}

/// Why a run was not submitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tenant(#[from] tenant::Error),
    /// The tenant already has this many runs waiting for a slot.
    #[error("{0} runs of this tenant already wait for a slot")]
    Busy(u32),
    /// The tenant's monthly budget (`tokens` or `cost`) is spent.
    #[error("the tenant's monthly {0} budget is spent")]
    BudgetSpent(&'static str),
    #[error(transparent)]
    Store(#[from] StoreFailure),
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
    /// A run's time limit when its agent sets none.
    pub default_timeout_secs: u64,
    /// Runs of one tenant that may wait for a slot; a submission past it is refused.
    pub max_queued_per_tenant: u32,
    /// The most tokens one step's answer may have when a budget applies (sent to the
    /// provider as `max_tokens`; with the prompt's estimate, the step's worst case).
    pub max_tokens_per_step: u32,
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
    /// The tenants' MCP servers, for the agents that name their tools.
    pub remote_tools: Arc<dyn RemoteTools>,
}

/// Settings for tests: no provider retries, short waits, small batches.
#[cfg(test)]
impl RunSettings {
    pub(crate) fn quick() -> Self {
        Self {
            max_retries: 0,
            retry_base: Duration::from_millis(1),
            idle_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(5),
            flush_every: Duration::from_millis(1),
            flush_batch: 8,
            store_retry: Duration::from_millis(10),
            max_step_output: 1 << 20,
            max_tool_arguments: 1 << 20,
            default_timeout_secs: 60,
            max_queued_per_tenant: 100,
            max_tokens_per_step: 1024,
        }
    }
}

#[cfg(test)]
mod tests;
