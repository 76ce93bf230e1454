//! Chat sessions: the `SessionActor` that answers a session's messages one at a time,
//! streaming each reply's tokens to every subscriber, and the cheap-clone [`Sessions`]
//! handle.
//!
//! A posted message is stored at once (nothing the user sent is lost) and queued; the
//! session's single reply task takes messages in order, writes `message.created`,
//! `reply.started`, the `token`s and one of `reply.completed|failed|cancelled` to the
//! session's event log, persisting before publishing. The queue is bounded.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_trait::async_trait;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{EventHub, EventLog, ReplyEnd, SessionEvent, StreamEvent};
use crate::llm::{complete, now, EventWriter};
use crate::provider::{ChatMessage, ChatRequest, ProviderSet, Usage};
use crate::registry::{ActorError, ActorMeta, Registry};
use crate::run::{RunError, RunSettings};
use crate::store::{retrying, StoreFailure};

/// A chat session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// A message of a session: the user's, or an assistant reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    pub error: Option<RunError>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a session actor needs from the store.
#[async_trait]
pub trait ChatStore: EventLog {
    /// The session, its messages in order, and its last event seq.
    async fn load_session(
        &self,
        id: &str,
    ) -> Result<Option<(Session, Vec<Message>, i64)>, StoreFailure>;
    /// The sessions a stopped process left with a reply cut off or a message unanswered.
    async fn unfinished_sessions(&self) -> Result<Vec<String>, StoreFailure>;
    /// Stores a user message of tenant `tenant_id` (before it is queued).
    async fn add_message(&self, tenant_id: &str, message: &Message) -> Result<(), StoreFailure>;
    /// Stores `event` and, in the same transaction, inserts or updates `message`.
    async fn save_message(
        &self,
        tenant_id: &str,
        message: &Message,
        event: &StreamEvent,
    ) -> Result<(), StoreFailure>;
}

/// What every session actor shares.
pub struct ChatDeps {
    pub store: Arc<dyn ChatStore>,
    pub hub: EventHub,
    pub providers: Arc<dyn ProviderSet>,
    pub settings: RunSettings,
    /// Messages waiting behind the reply in progress, at most.
    pub max_queue: usize,
    /// A session with no reply to make and no message for this long is passivated.
    pub idle_after: Duration,
}

/// Why a session message failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    #[error("session not found")]
    NotFound,
    #[error("{0} messages are already waiting for a reply")]
    QueueFull(usize),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreFailure> for ChatError {
    fn from(e: StoreFailure) -> Self {
        if e.unavailable {
            ChatError::Unavailable(e.message)
        } else {
            ChatError::Store(e.message)
        }
    }
}

impl From<ActorError> for ChatError {
    fn from(e: ActorError) -> Self {
        ChatError::Unavailable(e.to_string())
    }
}

/// Store a user message and queue it for a reply with id `reply_id`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Message, ChatError>")]
pub struct PostMessage {
    pub message_id: String,
    pub reply_id: String,
    pub content: String,
}

/// Stop the reply in flight; its partial text is kept. Answers the reply's id, if any.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<String>")]
pub struct CancelReply;

/// The reply in flight: its id and how to stop it.
type Current = Arc<Mutex<Option<(String, CancellationToken)>>>;

enum Loaded {
    Loading,
    Missing,
    Ready {
        session: Box<Session>,
        queue: mpsc::Sender<Message>,
    },
}

/// The single writer of one session's replies and event log.
pub struct SessionActor {
    id: String,
    deps: Arc<ChatDeps>,
    state: Loaded,
    current: Current,
    /// Held by the reply task for its whole life: a restarted actor's new task waits until
    /// the old one has finished the reply it was writing, so two never write one stream.
    writer: Arc<tokio::sync::Mutex<()>>,
    last_active: Instant,
    registry: Registry<SessionActor>,
    meta: Arc<ActorMeta>,
}

impl SessionActor {
    fn busy(&self) -> bool {
        let replying = self.current.lock().map(|c| c.is_some()).unwrap_or(true);
        let queued = match &self.state {
            Loaded::Ready { queue, .. } => queue.capacity() < self.deps.max_queue,
            _ => false,
        };
        replying || queued
    }

    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.last_active.elapsed() >= self.deps.idle_after && !self.busy();
        if idle || matches!(self.state, Loaded::Missing) {
            tracing::debug!(session_id = %self.id, "session actor passivating");
            self.registry.forget(&self.id, &ctx.address());
            // Its reply task ends with the queue; the actor ends for good (nothing holds
            // its address any more, so the supervisor does not bring it back).
            self.state = Loaded::Missing;
            ctx.stop();
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Dropping the old queue's sender ends a previous reply task after its reply.
        self.state = Loaded::Loading;
        let (store, id, writer) = (
            self.deps.store.clone(),
            self.id.clone(),
            self.writer.clone(),
        );
        ctx.wait(async move {
            let guard = writer.lock_owned().await;
            (guard, store.load_session(&id).await)
        }.into_actor(self).map(|(guard, loaded), act, ctx| {
            let (session, history, last_seq) = match loaded {
                Ok(Some(found)) => found,
                Ok(None) => {
                    act.state = Loaded::Missing;
                    return;
                }
                Err(e) => {
                    tracing::error!(session_id = %act.id, error = %e, "session not loaded");
                    act.state = Loaded::Missing;
                    return;
                }
            };
            let (queue, incoming) = mpsc::channel(act.deps.max_queue.max(1));
            act.meta.set_owner(&session.tenant_id);
            act.meta.set_state("idle");
            act.state = Loaded::Ready { session: Box::new(session.clone()), queue };
            let replies = reply_loop(act.deps.clone(), session, history, last_seq, incoming, act.current.clone(), act.meta.clone());
            // The reply task runs beside the actor, not inside its context: the context
            // pauses its own futures while an atomic message is handled, and a paused
            // reply holding the store's writer would block that very message. It holds the
            // actor weakly: a passivated actor must not be kept alive (and restarted by its
            // supervisor) by its own task.
            let (id, actor) = (act.id.clone(), ctx.address().downgrade());
            actix::spawn(async move {
                let _writing = guard;
                if AssertUnwindSafe(replies).catch_unwind().await.is_err() {
                    tracing::error!(session_id = %id, "session reply task panicked; the actor restarts");
                    if let Some(actor) = actor.upgrade() {
                        actor.do_send(ReplyTaskEnded);
                    }
                }
            });
        }));
        let check =
            (self.deps.idle_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        ctx.run_interval(check, Self::passivate_if_idle);
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(session_id = %self.id, "session actor restarting; it reloads from the store");
        self.meta.restarted();
        self.current = Arc::new(Mutex::new(None));
    }
}

impl Handler<PostMessage> for SessionActor {
    /// Atomic: messages are stored and queued in the order they arrive.
    type Result = AtomicResponse<Self, Result<Message, ChatError>>;

    fn handle(&mut self, msg: PostMessage, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        let (session, queue) = match &self.state {
            Loaded::Ready { session, queue } => (session.as_ref().clone(), queue.clone()),
            _ => return AtomicResponse::new(Box::pin(fut::ready(Err(ChatError::NotFound)))),
        };
        // Reserve the place first: a full queue refuses the message before it is stored.
        let permit = match queue.try_reserve_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let full = ChatError::QueueFull(self.deps.max_queue);
                return AtomicResponse::new(Box::pin(fut::ready(Err(full))));
            }
        };
        let stamp = now();
        let message = Message {
            id: msg.message_id,
            session_id: session.id.clone(),
            role: "user".into(),
            content: msg.content,
            status: "complete".into(),
            reply_id: Some(msg.reply_id),
            in_reply_to: None,
            usage: None,
            error: None,
            created_at: stamp.clone(),
            updated_at: stamp,
        };
        let (store, tenant_id) = (self.deps.store.clone(), session.tenant_id.clone());
        let stored = async move {
            store
                .add_message(&tenant_id, &message)
                .await
                .map_err(ChatError::from)?;
            permit.send(message.clone());
            Ok(message)
        };
        AtomicResponse::new(Box::pin(stored.into_actor(self)))
    }
}

/// The reply task ended (it panicked): the actor stops, and its supervisor restarts it
/// from the store.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ReplyTaskEnded;

impl Handler<ReplyTaskEnded> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: ReplyTaskEnded, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<CancelReply> for SessionActor {
    type Result = Option<String>;

    fn handle(&mut self, _: CancelReply, _: &mut Context<Self>) -> Option<String> {
        self.last_active = Instant::now();
        let current = self.current.lock().ok()?;
        current.as_ref().map(|(reply_id, cancel)| {
            cancel.cancel();
            reply_id.clone()
        })
    }
}

/// Answers the session's messages one at a time, for as long as the actor lives.
async fn reply_loop(
    deps: Arc<ChatDeps>,
    session: Session,
    mut history: Vec<Message>,
    last_seq: i64,
    mut incoming: mpsc::Receiver<Message>,
    current: Current,
    meta: Arc<ActorMeta>,
) {
    let mut log = EventWriter::new(
        &session.id,
        last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    );
    // What the last process left: a reply cut off by a crash fails; unanswered messages queue.
    let mut pending: VecDeque<Message> = VecDeque::new();
    for message in history.clone() {
        if message.role == "assistant" && message.status == "streaming" {
            let mut failed = message;
            failed.status = "failed".into();
            // What was streamed before the stop is kept: the reply's token events hold it.
            failed.content = match deps.store.events_after(&session.id, 0).await {
                Ok(events) => events
                    .iter()
                    .filter(|e| {
                        e.kind == SessionEvent::TOKEN && e.data["reply_id"] == failed.id.as_str()
                    })
                    .filter_map(|e| e.data["delta"].as_str())
                    .collect(),
                Err(_) => failed.content,
            };
            failed.error = Some(RunError::new(
                "interrupted",
                "the server stopped while this reply was streaming",
            ));
            let event = log.event(&SessionEvent::ended(ReplyEnd::Failed, &failed));
            if retrying(deps.settings.store_retry, || {
                deps.store.save_message(&session.tenant_id, &failed, &event)
            })
            .await
            .is_ok()
            {
                log.publish(&event);
            }
            if let Some(kept) = history.iter_mut().find(|m| m.id == failed.id) {
                *kept = failed;
            }
        }
    }
    for message in &history {
        let answered = |reply: &str| history.iter().any(|m| m.id == reply);
        if message.role == "user" && message.reply_id.as_deref().is_some_and(|r| !answered(r)) {
            pending.push_back(message.clone());
        }
    }
    loop {
        let message = match pending.pop_front() {
            Some(m) => m,
            None => match incoming.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        if !history.iter().any(|m| m.id == message.id) {
            history.push(message.clone());
        }
        // Marked in flight at once, with no wait in between, so the actor never sees the
        // session idle (and passivates) while a message is being answered.
        let cancel = CancellationToken::new();
        let reply_id = message.reply_id.clone().unwrap_or_default();
        if let Ok(mut slot) = current.lock() {
            *slot = Some((reply_id, cancel.clone()));
        }
        meta.set_state("replying");
        // A span per reply (not per session: an idle session would hold one for nothing).
        let span = tracing::info_span!("session", session_id = %session.id, tenant_id = %session.tenant_id);
        let replied = tracing::Instrument::instrument(
            reply(&deps, &session, &mut history, &message, &mut log, &cancel),
            span,
        )
        .await;
        if let Ok(mut slot) = current.lock() {
            *slot = None;
        }
        meta.set_state("idle");
        if let Err(e) = replied {
            meta.record_error(&format!("{}: {}", e.code, e.message));
            tracing::error!(session_id = %session.id, error = %e.message, "reply not recorded");
        }
    }
}

/// Streams one reply to `message` and records how it ended.
async fn reply(
    deps: &ChatDeps,
    session: &Session,
    history: &mut Vec<Message>,
    message: &Message,
    log: &mut EventWriter,
    cancel: &CancellationToken,
) -> Result<(), RunError> {
    let reply_id = message.reply_id.clone().unwrap_or_default();
    log.emit(&SessionEvent::MessageCreated {
        message: message.clone(),
    })
    .await?;
    let stamp = now();
    let mut answer = Message {
        id: reply_id.clone(),
        session_id: session.id.clone(),
        role: "assistant".into(),
        content: String::new(),
        status: "streaming".into(),
        reply_id: None,
        in_reply_to: Some(message.id.clone()),
        usage: None,
        error: None,
        created_at: stamp.clone(),
        updated_at: stamp,
    };
    let started = log.event(&SessionEvent::ReplyStarted {
        reply_id: reply_id.clone(),
        in_reply_to: message.id.clone(),
    });
    retrying(deps.settings.store_retry, || {
        deps.store
            .save_message(&session.tenant_id, &answer, &started)
    })
    .await?;
    log.publish(&started);

    let request = ChatRequest {
        model: session.model.clone(),
        messages: conversation(session, history),
        tools: Vec::new(),
        temperature: None,
        max_tool_arguments: deps.settings.max_tool_arguments,
    };
    let token = |delta: &str| SessionEvent::Token {
        reply_id: reply_id.clone(),
        delta: delta.to_string(),
    };
    let outcome = tokio::select! {
        done = complete(&*deps.providers, &deps.settings, &session.providers, request, &token, log) => Some(done),
        _ = cancel.cancelled() => None,
    };
    log.flush().await?;
    let streamed = log.take_streamed();
    let how = match outcome {
        Some(Ok(done)) => {
            answer.status = "complete".into();
            answer.content = done.text;
            answer.usage = Some(done.usage);
            ReplyEnd::Completed
        }
        None => {
            answer.status = "cancelled".into();
            answer.content = streamed;
            ReplyEnd::Cancelled
        }
        Some(Err(error)) => {
            answer.status = "failed".into();
            answer.content = streamed;
            answer.error = Some(error);
            ReplyEnd::Failed
        }
    };
    answer.updated_at = now();
    let ended = log.event(&SessionEvent::ended(how, &answer));
    retrying(deps.settings.store_retry, || {
        deps.store.save_message(&session.tenant_id, &answer, &ended)
    })
    .await?;
    log.publish(&ended);
    history.push(answer);
    Ok(())
}

/// The session's instructions and every message with text, in order.
fn conversation(session: &Session, history: &[Message]) -> Vec<ChatMessage> {
    let system = session
        .system_prompt
        .clone()
        .unwrap_or_else(|| "You are a helpful assistant.".into());
    let mut messages = vec![ChatMessage::System { content: system }];
    for m in history.iter().filter(|m| !m.content.is_empty()) {
        messages.push(if m.role == "user" {
            ChatMessage::User {
                content: m.content.clone(),
            }
        } else {
            ChatMessage::Assistant {
                content: m.content.clone(),
                tool_calls: Vec::new(),
            }
        });
    }
    messages
}

/// The handle through which the rest of the program talks to session actors.
#[derive(Clone)]
pub struct Sessions {
    registry: Registry<SessionActor>,
    deps: Arc<ChatDeps>,
}

impl Sessions {
    pub fn new(deps: ChatDeps, arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            registry: Registry::new("session", arbiters),
            deps: Arc::new(deps),
        }
    }

    pub fn hub(&self) -> &EventHub {
        &self.deps.hub
    }

    /// The live session actors (how many, what operators see of each).
    pub fn actors(&self) -> &Registry<SessionActor> {
        &self.registry
    }

    /// Stores and queues a user message; the reply streams on the session's log.
    pub async fn post(&self, session_id: &str, msg: PostMessage) -> Result<Message, ChatError> {
        self.registry
            .send(session_id, self.make(session_id), msg)
            .await?
    }

    /// Stops the reply in flight, if any; answers its id.
    pub async fn cancel(&self, session_id: &str) -> Result<Option<String>, ChatError> {
        Ok(self
            .registry
            .send(session_id, self.make(session_id), CancelReply)
            .await?)
    }

    /// Activates the session (it answers messages left unanswered by a crash).
    pub fn wake(&self, session_id: &str) {
        self.registry.activate(session_id, self.make(session_id));
    }

    /// Wakes every session an earlier process left with a reply cut off or a message
    /// unanswered, as runs are resumed at start-up; returns how many.
    pub async fn recover(&self) -> Result<usize, StoreFailure> {
        let ids = self.deps.store.unfinished_sessions().await?;
        for id in &ids {
            self.wake(id);
        }
        Ok(ids.len())
    }

    fn make(
        &self,
        id: &str,
    ) -> impl Fn(&mut Context<SessionActor>, Arc<ActorMeta>) -> SessionActor + Send + Clone + 'static
    {
        let (deps, registry, id) = (self.deps.clone(), self.registry.clone(), id.to_string());
        move |_, meta| SessionActor {
            meta,
            id: id.clone(),
            deps: deps.clone(),
            state: Loaded::Loading,
            current: Arc::new(Mutex::new(None)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            last_active: Instant::now(),
            registry: registry.clone(),
        }
    }
}
