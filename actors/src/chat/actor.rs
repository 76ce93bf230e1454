//! The `SessionActor`, single writer of one session's replies, and the [`Sessions`]
//! handle: posted messages are stored, then the session's owner is woken to answer them.
//!
//! Of all the nodes sharing a database, one owns a session at a time (its claim, renewed
//! by the node's heartbeat): its actor runs the reply task. An actor on another node
//! stores what is posted to it and tells the owner; it does not answer.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::reply::{has_work, reply_loop, Current, Owning};
use super::{ChatDeps, Error, Message, Session, SessionNotice};
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

/// Look at the store again: a message was posted through another node.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Wake;

enum Loaded {
    Loading,
    Missing,
    /// Another node owns the session: this actor stores what is posted here and tells it.
    Elsewhere {
        session: Box<Session>,
    },
    /// This node owns the session; its reply task runs, or starts with the first message.
    Ready {
        session: Box<Session>,
        /// Wakes the reply task (a message is waiting).
        wake: Arc<Notify>,
        /// Ends the reply task (the actor passivates or restarts).
        closed: CancellationToken,
        epoch: i64,
        task: Task,
    },
}

/// The reply task of a session this node owns.
enum Task {
    /// Nothing to answer yet: the task (and the history it keeps) starts with the first
    /// message, so an idle session costs neither. Holds the session's writer lock.
    Dormant(tokio::sync::OwnedMutexGuard<()>),
    Running,
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
        self.current.lock().map(|c| c.is_some()).unwrap_or(true)
    }

    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.last_active.elapsed() >= self.deps.idle_after && !self.busy();
        let owner = matches!(self.state, Loaded::Ready { .. });
        if idle || !owner && !matches!(self.state, Loaded::Loading) {
            tracing::debug!(session_id = %self.id, "session actor passivating");
            self.registry.forget(&self.id, &ctx.address());
            self.close();
            // The actor ends for good (nothing holds its address any more, so the
            // supervisor does not bring it back).
            ctx.stop();
        }
    }

    /// Starts the reply task of a session this node owns, unless it runs already, with the
    /// history and last event id just loaded (else it loads them).
    fn start_replies(&mut self, ctx: &mut Context<Self>, loaded: Option<(Vec<Message>, i64)>) {
        let Loaded::Ready {
            session,
            wake,
            closed,
            epoch,
            task,
        } = &mut self.state
        else {
            return;
        };
        let Task::Dormant(guard) = std::mem::replace(task, Task::Running) else {
            return;
        };
        let owning = Owning {
            epoch: *epoch,
            wake: wake.clone(),
            closed: closed.clone(),
        };
        let (deps, session) = (self.deps.clone(), session.as_ref().clone());
        let (current, meta) = (self.current.clone(), self.meta.clone());
        let replies = async move {
            let (history, last_seq) = match loaded {
                Some(loaded) => loaded,
                None => match deps.store.load_session(&session.id).await {
                    Ok(Some((_, history, last_seq))) => (history, last_seq),
                    // Deleted meanwhile: nothing to answer.
                    Ok(None) => return true,
                    Err(e) => {
                        tracing::error!(session_id = %session.id, error = %e, "session history not loaded; the actor restarts");
                        return false;
                    }
                },
            };
            reply_loop(deps, session, history, last_seq, owning, current, meta).await;
            true
        };
        // The reply task runs beside the actor, not inside its context: the context pauses
        // its own futures while an atomic message is handled, and a paused reply holding
        // the store's writer would block that very message. It holds the actor weakly: a
        // passivated actor must not be kept alive (and restarted by its supervisor) by its
        // own task.
        let (id, actor) = (self.id.clone(), ctx.address().downgrade());
        actix::spawn(async move {
            let _writing = guard;
            if !matches!(AssertUnwindSafe(replies).catch_unwind().await, Ok(true)) {
                tracing::error!(session_id = %id, "session reply task ended early; the actor restarts");
                if let Some(actor) = actor.upgrade() {
                    actor.do_send(ReplyTaskEnded);
                }
            }
        });
    }

    /// Ends the reply task and gives the session up, so that any node may claim it.
    fn close(&mut self) {
        if let Loaded::Ready { closed, epoch, .. } =
            std::mem::replace(&mut self.state, Loaded::Missing)
        {
            closed.cancel();
            let (store, id) = (self.deps.store.clone(), self.id.clone());
            actix::spawn(async move {
                if let Err(e) = store.release_session(&id, epoch).await {
                    tracing::debug!(session_id = %id, error = %e, "session not released; its lease expires");
                }
            });
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.state = Loaded::Loading;
        let (store, id, writer) = (
            self.deps.store.clone(),
            self.id.clone(),
            self.writer.clone(),
        );
        ctx.wait(
            async move {
                let guard = writer.lock_owned().await;
                let claimed = store.claim_session(&id).await;
                (guard, claimed, store.load_session(&id).await)
            }
            .into_actor(self)
            .map(|(guard, claimed, loaded), act, ctx| {
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
                act.meta.set_owner(&session.tenant_id);
                let epoch = match claimed {
                    Ok(Some(epoch)) => epoch,
                    Ok(None) => {
                        act.meta.set_state("elsewhere");
                        act.state = Loaded::Elsewhere {
                            session: Box::new(session),
                        };
                        return;
                    }
                    Err(e) => {
                        tracing::error!(session_id = %act.id, error = %e, "session not claimed");
                        act.state = Loaded::Missing;
                        return;
                    }
                };
                act.meta.set_state("idle");
                let work = has_work(&history);
                act.state = Loaded::Ready {
                    session: Box::new(session),
                    wake: Arc::new(Notify::new()),
                    closed: CancellationToken::new(),
                    epoch,
                    task: Task::Dormant(guard),
                };
                if work {
                    act.start_replies(ctx, Some((history, last_seq)));
                }
            }),
        );
        let check =
            (self.deps.idle_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        ctx.run_interval(check, Self::passivate_if_idle);
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(session_id = %self.id, "session actor restarting; it reloads from the store");
        self.meta.restarted();
        if let Loaded::Ready { closed, .. } = &self.state {
            closed.cancel();
        }
        self.current = Arc::new(Mutex::new(None));
    }
}

impl Handler<PostMessage> for SessionActor {
    /// Atomic: messages are stored in the order they arrive.
    type Result = AtomicResponse<Self, Result<Message, Error>>;

    fn handle(&mut self, msg: PostMessage, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        let (session, wake) = match &self.state {
            Loaded::Ready { session, wake, .. } => (session.as_ref().clone(), Some(wake.clone())),
            Loaded::Elsewhere { session } => (session.as_ref().clone(), None),
            _ => return AtomicResponse::new(Box::pin(fut::ready(Err(Error::NotFound)))),
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
        let (store, max_queue) = (self.deps.store.clone(), self.deps.max_queue);
        let stored = async move {
            // A full queue refuses the message before it is stored.
            if store.unanswered(&session.id).await?.len() >= max_queue {
                return Err(Error::QueueFull(max_queue));
            }
            store.add_message(&session.tenant_id, &message).await?;
            match wake {
                Some(wake) => wake.notify_one(),
                None => {
                    if let Err(e) = store
                        .announce_session(&session.id, SessionNotice::Posted)
                        .await
                    {
                        tracing::warn!(session_id = %session.id, error = %e, "the session's owner not told; it finds the message at its next heartbeat");
                    }
                }
            }
            Ok(message)
        };
        AtomicResponse::new(Box::pin(stored.into_actor(self).map(|stored, act, ctx| {
            if stored.is_ok() {
                act.start_replies(ctx, None);
            }
            stored
        })))
    }
}

impl Handler<Wake> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.last_active = Instant::now();
        self.start_replies(ctx, None);
        if let Loaded::Ready { wake, .. } = &self.state {
            wake.notify_one();
        }
    }
}

/// The reply task ended early (it panicked, or its history could not be loaded): the
/// actor stops, and its supervisor restarts it from the store.
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
    type Result = ResponseFuture<Option<String>>;

    fn handle(&mut self, _: CancelReply, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        if let Loaded::Elsewhere { session } = &self.state {
            // The owner stops it; the reply in flight is the one of the oldest message
            // still without a finished reply.
            let (store, id) = (self.deps.store.clone(), session.id.clone());
            return Box::pin(async move {
                let (_, messages, _) = store.load_session(&id).await.ok().flatten()?;
                let streaming = messages
                    .iter()
                    .find(|m| m.role == "assistant" && m.status == "streaming")?
                    .id
                    .clone();
                store
                    .announce_session(&id, SessionNotice::Cancel)
                    .await
                    .ok()?;
                Some(streaming)
            });
        }
        let cancelled = self.current.lock().ok().and_then(|current| {
            current.as_ref().map(|(reply_id, cancel)| {
                cancel.cancel();
                reply_id.clone()
            })
        });
        Box::pin(async move { cancelled })
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

    /// Stores a user message; the session's owner answers it on the session's log.
    pub async fn post(&self, session_id: &str, msg: PostMessage) -> Result<Message, Error> {
        self.registry
            .send(session_id, self.make(session_id), msg)
            .await?
    }

    /// Stops the reply in flight, if any (on whichever node answers it); answers its id.
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

    /// What another node told this session's owner, if this node has its actor.
    pub fn notice(&self, session_id: &str, notice: SessionNotice) {
        let Some(actor) = self.registry.get(session_id) else {
            return;
        };
        match notice {
            SessionNotice::Posted => actor.do_send(Wake),
            SessionNotice::Cancel => actor.do_send(CancelReply),
        }
    }

    /// Wakes every session with a reply cut off or a message unanswered that no live node
    /// answers (a stopped process, a node that died); returns how many.
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
