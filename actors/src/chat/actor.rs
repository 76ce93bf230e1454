//! The `SessionActor`, single writer of one session's replies, and the [`Sessions`]
//! handle: posted messages are stored, then queued for the session's reply task.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::reply::{reply_loop, Current};
use super::{ChatDeps, Error, Message, Session};
use crate::events::EventHub;
use crate::llm::now;
use crate::registry::{ActorMeta, Registry};
use crate::store::StoreFailure;

/// Store a user message and queue it for a reply with id `reply_id`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Message, Error>")]
pub struct PostMessage {
    pub message_id: String,
    pub reply_id: String,
    pub content: String,
}

/// Stop the reply in flight; its partial text is kept. Answers the reply's id, if any.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<String>")]
pub struct CancelReply;

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
    type Result = AtomicResponse<Self, Result<Message, Error>>;

    fn handle(&mut self, msg: PostMessage, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        let (session, queue) = match &self.state {
            Loaded::Ready { session, queue } => (session.as_ref().clone(), queue.clone()),
            _ => return AtomicResponse::new(Box::pin(fut::ready(Err(Error::NotFound)))),
        };
        // Reserve the place first: a full queue refuses the message before it is stored.
        let permit = match queue.try_reserve_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let full = Error::QueueFull(self.deps.max_queue);
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
            run_id: None,
            created_at: stamp.clone(),
            updated_at: stamp,
        };
        let (store, tenant_id) = (self.deps.store.clone(), session.tenant_id.clone());
        let stored = async move {
            store
                .add_message(&tenant_id, &message)
                .await
                .map_err(Error::from)?;
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
    pub async fn post(&self, session_id: &str, msg: PostMessage) -> Result<Message, Error> {
        self.registry
            .send(session_id, self.make(session_id), msg)
            .await?
    }

    /// Stops the reply in flight, if any; answers its id.
    pub async fn cancel(&self, session_id: &str) -> Result<Option<String>, Error> {
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
