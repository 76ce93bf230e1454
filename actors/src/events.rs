//! Ordered event logs and their live fan-out, shared by agent runs and chat sessions.
//!
//! Every event of a stream (a run, a session) has a sequence number. The producer persists
//! a batch through [`EventLog`] and only then publishes it on the [`EventHub`]; a subscriber
//! subscribes first, reads what is stored after its last id, then follows the live events,
//! skipping any it already has: no gap, no duplicate. A subscriber that falls behind the
//! hub's bounded buffer is told so (`Lagged`) and catches up from the store.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::chat::Message;
use crate::provider::Usage;
use crate::run;
use crate::store::StoreFailure;

/// One event of a stream, as stored and sent: its seq, its kind (the SSE `event:`) and
/// its data (the SSE `data:`). Producers make them from a [`RunEvent`] or a
/// [`SessionEvent`]; the kinds are named nowhere else.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEvent {
    pub seq: i64,
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at: String,
}

impl StreamEvent {
    /// Whether this event ends its stream (a run's end; a session's stream never ends).
    pub fn is_terminal(&self) -> bool {
        RunEvent::is_end(&self.kind)
    }
}

/// What a subscriber follows of a stream: all of it, or one reply of a session (a chat
/// run seen through its run), and which event ends what it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Every event; a run's end ends it (a session's stream never ends).
    All,
    /// The events of reply `0` of a session, up to the reply's end.
    Reply(String),
}

impl View {
    /// Whether `event` is part of what this view follows.
    pub fn shows(&self, event: &StreamEvent) -> bool {
        match self {
            View::All => true,
            View::Reply(id) => event.data["reply_id"] == id.as_str(),
        }
    }

    /// Whether `event` ends what this view follows.
    pub fn ends_with(&self, event: &StreamEvent) -> bool {
        match self {
            View::All => event.is_terminal(),
            View::Reply(_) => {
                self.shows(event) && SessionEvent::REPLY_ENDS.contains(&event.kind.as_str())
            }
        }
    }
}

/// What can be written to a stream's log: each value is one event of one kind.
pub trait Event: Serialize {
    /// The event's name on the wire (SSE `event:`).
    fn kind(&self) -> &'static str;
    /// The event's data on the wire (SSE `data:`): its fields, as a JSON object.
    fn data(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("events serialize")
    }
}

/// What happens in an agent run, one variant per SSE event type of its stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RunEvent {
    RunStarted {
        run_id: String,
        agent_id: String,
    },
    /// A run picked up again after a crash, after its last finished step.
    RunResumed {
        after_step: usize,
    },
    StepStarted {
        step: u32,
    },
    Token {
        step: u32,
        delta: String,
    },
    ToolCalled {
        step: u32,
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        step: u32,
        id: String,
        name: String,
        output: String,
        is_error: bool,
    },
    StepCompleted {
        step: u32,
        usage: Usage,
        tool_calls: usize,
    },
    RunCompleted {
        output: String,
        usage: Usage,
    },
    RunFailed {
        error: run::Failure,
    },
    RunCancelled {
        steps: usize,
    },
    /// The step's tool calls that wait for a human's answer (the run is
    /// `requires_action`; it resumes with `run.resumed` once each is answered).
    RunRequiresAction {
        step: u32,
        pending_tool_calls: Vec<run::PendingCall>,
        expires_at: String,
    },
}

impl RunEvent {
    pub const STARTED: &'static str = "run.started";
    pub const RESUMED: &'static str = "run.resumed";
    pub const STEP_STARTED: &'static str = "step.started";
    pub const TOKEN: &'static str = "token";
    pub const TOOL_CALLED: &'static str = "tool.called";
    pub const TOOL_RESULT: &'static str = "tool.result";
    pub const STEP_COMPLETED: &'static str = "step.completed";
    pub const COMPLETED: &'static str = "run.completed";
    pub const FAILED: &'static str = "run.failed";
    pub const CANCELLED: &'static str = "run.cancelled";
    pub const REQUIRES_ACTION: &'static str = "run.requires_action";

    /// Whether events of `kind` end a run's stream.
    pub fn is_end(kind: &str) -> bool {
        [Self::COMPLETED, Self::FAILED, Self::CANCELLED].contains(&kind)
    }
}

impl Event for RunEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => Self::STARTED,
            Self::RunResumed { .. } => Self::RESUMED,
            Self::StepStarted { .. } => Self::STEP_STARTED,
            Self::Token { .. } => Self::TOKEN,
            Self::ToolCalled { .. } => Self::TOOL_CALLED,
            Self::ToolResult { .. } => Self::TOOL_RESULT,
            Self::StepCompleted { .. } => Self::STEP_COMPLETED,
            Self::RunCompleted { .. } => Self::COMPLETED,
            Self::RunFailed { .. } => Self::FAILED,
            Self::RunCancelled { .. } => Self::CANCELLED,
            Self::RunRequiresAction { .. } => Self::REQUIRES_ACTION,
        }
    }
}

/// What happens in a chat session, one variant per SSE event type of its stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SessionEvent {
    /// A user message, written when the reply task takes it.
    MessageCreated {
        message: Message,
    },
    /// The reply waits for one of its tenant's run slots (an agent session's reply is a run).
    ReplyQueued {
        reply_id: String,
        run_id: String,
    },
    ReplyStarted {
        reply_id: String,
        in_reply_to: String,
        /// The run that writes the reply, in a session with an agent.
        #[serde(skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
    },
    /// The reply's run picked up again after a crash, after its last finished step.
    ReplyResumed {
        reply_id: String,
        run_id: String,
        after_step: usize,
    },
    Token {
        reply_id: String,
        delta: String,
    },
    /// A step of the reply's run: `step.started`, `token` (with its `step`), `tool.called`,
    /// `tool.result`, `step.completed`, each with the reply's id beside the run's fields.
    Step {
        reply_id: String,
        #[serde(flatten)]
        event: RunEvent,
    },
    /// The reply's end: `message` as stored, with its status (complete, cancelled, failed).
    ReplyEnded {
        #[serde(skip)]
        how: ReplyEnd,
        reply_id: String,
        message: Message,
        usage: Option<Usage>,
        error: Option<run::Failure>,
    },
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyEnd {
    #[default]
    Completed,
    Failed,
    Cancelled,
}

impl ReplyEnd {
    /// The reply message's status after such an end.
    pub fn status(self) -> &'static str {
        match self {
            ReplyEnd::Completed => "complete",
            ReplyEnd::Failed => "failed",
            ReplyEnd::Cancelled => "cancelled",
        }
    }
}

impl SessionEvent {
    /// The end of the reply `message` (as stored), `how` it ended.
    pub fn ended(how: ReplyEnd, message: &Message) -> Self {
        Self::ReplyEnded {
            how,
            reply_id: message.id.clone(),
            message: message.clone(),
            usage: message.usage,
            error: message.error.clone(),
        }
    }

    pub const MESSAGE_CREATED: &'static str = "message.created";
    pub const REPLY_QUEUED: &'static str = "reply.queued";
    pub const REPLY_STARTED: &'static str = "reply.started";
    pub const REPLY_RESUMED: &'static str = "reply.resumed";
    pub const TOKEN: &'static str = "token";
    pub const REPLY_COMPLETED: &'static str = "reply.completed";
    pub const REPLY_FAILED: &'static str = "reply.failed";
    pub const REPLY_CANCELLED: &'static str = "reply.cancelled";
    /// The kinds that end a reply.
    pub const REPLY_ENDS: [&'static str; 3] = [
        Self::REPLY_COMPLETED,
        Self::REPLY_FAILED,
        Self::REPLY_CANCELLED,
    ];
}

impl Event for SessionEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::MessageCreated { .. } => Self::MESSAGE_CREATED,
            Self::ReplyQueued { .. } => Self::REPLY_QUEUED,
            Self::ReplyStarted { .. } => Self::REPLY_STARTED,
            Self::ReplyResumed { .. } => Self::REPLY_RESUMED,
            Self::Token { .. } => Self::TOKEN,
            Self::Step { event, .. } => event.kind(),
            Self::ReplyEnded { how, .. } => match how {
                ReplyEnd::Completed => Self::REPLY_COMPLETED,
                ReplyEnd::Failed => Self::REPLY_FAILED,
                ReplyEnd::Cancelled => Self::REPLY_CANCELLED,
            },
        }
    }
}

/// The domain events webhooks deliver, written to the outbox with the change they report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainEvent {
    TenantCreated,
    UserCreated,
    ProjectCreated,
    ProjectUpdated,
    ProjectDeleted,
    AgentStarted,
    AgentCompleted,
    AgentFailed,
    AgentRequiresAction,
}

impl DomainEvent {
    /// Every domain event, in the order the contract lists them.
    pub const ALL: [DomainEvent; 9] = [
        Self::ProjectCreated,
        Self::ProjectUpdated,
        Self::ProjectDeleted,
        Self::AgentStarted,
        Self::AgentCompleted,
        Self::AgentFailed,
        Self::TenantCreated,
        Self::UserCreated,
        Self::AgentRequiresAction,
    ];

    /// The event's name (a webhook's `type`, an endpoint's subscription).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreated => "tenant.created",
            Self::UserCreated => "user.created",
            Self::ProjectCreated => "project.created",
            Self::ProjectUpdated => "project.updated",
            Self::ProjectDeleted => "project.deleted",
            Self::AgentStarted => "agent.started",
            Self::AgentCompleted => "agent.completed",
            Self::AgentFailed => "agent.failed",
            Self::AgentRequiresAction => "agent.requires_action",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// What a writer's writes carry so that only its owner's land: what it owns (a run, a chat
/// session) and the epoch of the claim it holds. A write with an older epoch is refused
/// (`StoreFailure::fenced`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub owned: Owned,
    pub epoch: i64,
}

/// What a node owns while it drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Run(String),
    Session(String),
}

/// Durable, ordered storage of stream events.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` (consecutive seqs) to `stream` atomically; with a `fence`, only
    /// while the fence's claim is the run's latest.
    async fn append_events(
        &self,
        stream: &str,
        events: &[StreamEvent],
        fence: Option<&Fence>,
    ) -> Result<(), StoreFailure>;
    /// The events of `stream` with `seq > after`, in order.
    async fn events_after(
        &self,
        stream: &str,
        after: i64,
    ) -> Result<Vec<StreamEvent>, StoreFailure>;
}

/// How many events a subscriber may fall behind before it must catch up from the store.
pub const HUB_CAPACITY: usize = 1024;

/// Live fan-out of persisted events to subscribers, one channel per stream.
#[derive(Clone, Default)]
pub struct EventHub {
    channels: Arc<DashMap<String, broadcast::Sender<Arc<StreamEvent>>>>,
}

impl EventHub {
    /// Follows `stream` from now on.
    pub fn subscribe(&self, stream: &str) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.channels
            .entry(stream.to_string())
            .or_insert_with(|| broadcast::channel(HUB_CAPACITY).0)
            .subscribe()
    }

    /// Sends persisted `events` to every subscriber of `stream`; a channel nobody follows
    /// is dropped.
    pub fn publish(&self, stream: &str, events: &[StreamEvent]) {
        let Some(sender) = self.channels.get(stream).map(|s| s.clone()) else {
            return;
        };
        for event in events {
            if sender.send(Arc::new(event.clone())).is_err() {
                self.channels
                    .remove_if(stream, |_, s| s.receiver_count() == 0);
                return;
            }
        }
    }

    /// Drops the channel of a stream that has ended: its subscribers receive what was
    /// already sent, then learn that the stream is closed.
    pub fn end(&self, stream: &str) {
        self.channels.remove(stream);
    }

    /// Whether anyone on this node follows `stream`.
    pub fn is_followed(&self, stream: &str) -> bool {
        self.channels.contains_key(stream)
    }

    /// Drops the channel of `stream` if no one follows it any more.
    pub fn release(&self, stream: &str) {
        self.channels
            .remove_if(stream, |_, s| s.receiver_count() == 0);
    }

    /// How many streams have a live channel.
    pub fn live(&self) -> usize {
        self.channels.len()
    }
}
