//! Chat sessions: the `SessionActor` that answers a session's messages one at a time,
//! streaming each reply's tokens to every subscriber, and the cheap-clone [`Sessions`]
//! handle.
//!
//! A posted message is stored at once (nothing the user sent is lost) and queued; the
//! session's single reply task takes messages in order, writes `message.created`,
//! `reply.started`, the `token`s and one of `reply.completed|failed|cancelled` to the
//! session's event log, persisting before publishing. The queue is bounded.
//!
//! - this file: sessions, messages, the store trait and the errors;
//! - `actor`: the `SessionActor` (one per active session) and the [`Sessions`] handle;
//! - `reply`: the reply task that answers a session's messages in order.

mod actor;
mod reply;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::agent::{self, Agent};
use crate::events::{EventHub, EventLog, Fence, ReplyEnd, StreamEvent};
use crate::provider::{ProviderSet, Usage};
use crate::registry;
use crate::run::{self, RunSettings, Runs};
use crate::store::StoreFailure;
use crate::tenant::TenantSettings;

pub use actor::{CancelReply, PostMessage, SessionActor, Sessions};
pub use reply::run_id_of;

/// A chat session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub tenant_id: String,
    pub project_id: String,
    pub agent_id: Option<String>,
    pub title: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    /// The provider replies use, then its fallbacks.
    pub providers: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a client chooses when it opens a session; the rest comes from the agent and the
/// tenant (`Session::open`).
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    pub id: String,
    pub tenant_id: String,
    pub project_id: String,
    pub title: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    pub stamp: String,
}

impl Session {
    /// A new session: the client's own prompt and model where it chose them, else the
    /// agent's (or the tenant's default model); the providers are those of the agent's
    /// runs (`agent::providers`), so a session and a run of one agent ask the same models.
    pub fn open(
        request: SessionRequest,
        agent: Option<&Agent>,
        tenant: &TenantSettings,
        default_provider: &str,
    ) -> Self {
        Self {
            id: request.id,
            tenant_id: request.tenant_id,
            project_id: request.project_id,
            agent_id: agent.map(|a| a.id.clone()),
            title: request.title,
            system_prompt: request
                .system_prompt
                .or_else(|| agent.and_then(|a| a.system_prompt.clone())),
            model: request.model.or_else(|| agent::model(agent, tenant)),
            providers: agent::providers(agent, tenant, default_provider),
            created_at: request.stamp.clone(),
            updated_at: request.stamp,
        }
    }
}

/// A message of a session: the user's, or an assistant reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub session_id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// `complete`, or for a reply also `streaming`, `cancelled`, `failed`.
    pub status: String,
    /// For a user message: the id its reply has (or will have).
    pub reply_id: Option<String>,
    /// For a reply: the user message it answers.
    pub in_reply_to: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<run::Failure>,
    /// For a reply in a session with an agent: the run that writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Message {
    /// The text a later turn shows the model for this message: the text of a reply that
    /// was cancelled or failed before it finished is marked as cut off, so that the model
    /// does not take it for a whole answer.
    pub fn history_text(&self) -> String {
        let cut = if self.status == ReplyEnd::Cancelled.status() {
            "cancelled"
        } else if self.status == ReplyEnd::Failed.status() {
            "interrupted"
        } else {
            return self.content.clone();
        };
        format!(
            "{}\n\n[This reply was {cut} before it was finished.]",
            self.content
        )
    }

    /// A reply `id` to message `in_reply_to`, begun at `stamp`: streaming, still empty.
    pub fn reply(session_id: &str, id: &str, in_reply_to: &str, stamp: &str) -> Self {
        Self {
            id: id.into(),
            session_id: session_id.into(),
            role: "assistant".into(),
            content: String::new(),
            status: "streaming".into(),
            reply_id: None,
            in_reply_to: Some(in_reply_to.into()),
            usage: None,
            error: None,
            run_id: None,
            created_at: stamp.into(),
            updated_at: stamp.into(),
        }
    }
}

/// What a session actor needs from the store.
#[async_trait]
pub trait ChatStore: EventLog {
    /// The session, its messages in order, and its last event seq.
    async fn load_session(
        &self,
        id: &str,
    ) -> Result<Option<(Session, Vec<Message>, i64)>, StoreFailure>;
    /// The sessions with a reply cut off or a message unanswered that this node may take
    /// up: unowned, owned by this node, or whose owner's lease has expired.
    async fn unfinished_sessions(&self) -> Result<Vec<String>, StoreFailure>;
    /// Makes this node the session's owner (the one that answers its messages) unless
    /// another live node is: the claim's epoch, which the reply task's writes carry.
    async fn claim_session(&self, id: &str) -> Result<Option<i64>, StoreFailure>;
    /// Gives the session up (its actor passivates): any node may claim it.
    async fn release_session(&self, id: &str, epoch: i64) -> Result<(), StoreFailure>;
    /// The session's user messages still waiting for a reply, oldest first.
    async fn unanswered(&self, id: &str) -> Result<Vec<Message>, StoreFailure>;
    /// Tells the session's owner, on whichever node, of `notice`.
    async fn announce_session(&self, id: &str, notice: SessionNotice) -> Result<(), StoreFailure>;
    /// The agent of a session, as it is now (each reply runs the agent's current version).
    async fn load_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>, StoreFailure>;
    /// Stores a user message of tenant `tenant_id` (before it is queued).
    async fn add_message(&self, tenant_id: &str, message: &Message) -> Result<(), StoreFailure>;
    /// Stores `event` and, in the same transaction, inserts or updates `message`, if
    /// `fence` (the reply task's claim) is still the session's latest.
    async fn save_message(
        &self,
        tenant_id: &str,
        message: &Message,
        event: &StreamEvent,
        fence: Option<&Fence>,
    ) -> Result<(), StoreFailure>;
}

/// What a node tells a session's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionNotice {
    /// A message was posted (through another node): answer it.
    Posted,
    /// Stop the reply in flight.
    Cancel,
}

/// What every session actor shares.
pub struct ChatDeps {
    pub store: Arc<dyn ChatStore>,
    pub hub: EventHub,
    pub providers: Arc<dyn ProviderSet>,
    /// Where the replies of sessions with an agent run.
    pub runs: Runs,
    pub settings: RunSettings,
    /// Messages waiting behind the reply in progress, at most.
    pub max_queue: usize,
    /// A session with no reply to make and no message for this long is passivated.
    pub idle_after: Duration,
}

/// Why a session message failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("session not found")]
    NotFound,
    #[error("{0} messages are already waiting for a reply")]
    QueueFull(usize),
    /// The store failed (an outage among them: `StoreFailure::unavailable`).
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// The actor could not take the message (stopped, still loading, mailbox full).
    #[error("{0}")]
    Unavailable(String),
}

impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests;
