//! Activation, passivation and addressing of keyed actors ("virtual actors").
//!
//! A [`Registry`] maps a key (a tenant id) to the address of the one live actor for it.
//! `send` activates the actor when none is live, so a handler never has to know whether an
//! actor is in memory. Actors are spread over a fixed set of arbiters (threads) by key.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Why a message could not be answered by its actor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The actor's mailbox is full or it stopped while the message was in flight.
    #[error("actor unavailable: {0}")]
    Unavailable(String),
}

/// What operators see of one live actor: what it is, since when, what it is doing, how
/// many messages wait for it, how often it restarted and its last error.
#[derive(Debug)]
pub struct ActorMeta {
    pub kind: &'static str,
    pub key: String,
    pub started_at: String,
    started: Instant,
    /// The tenant the actor works for, once known.
    owner: Mutex<Option<String>>,
    state: Mutex<String>,
    restarts: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// Messages sent to it and not answered yet (the one being handled included).
    in_flight: AtomicI64,
    handled: AtomicU64,
}

/// A point-in-time copy of an [`ActorMeta`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActorInfo {
    pub kind: &'static str,
    pub id: String,
    pub tenant_id: Option<String>,
    pub state: String,
    pub started_at: String,
    pub age_secs: u64,
    pub mailbox_depth: i64,
    pub messages_handled: u64,
    pub restarts: u32,
    pub last_error: Option<String>,
}

impl ActorMeta {
    pub fn new(kind: &'static str, key: &str) -> Self {
        Self {
            kind,
            key: key.to_string(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            started: Instant::now(),
            owner: Mutex::new(None),
            state: Mutex::new("starting".into()),
            restarts: AtomicU32::new(0),
            last_error: Mutex::new(None),
            in_flight: AtomicI64::new(0),
            handled: AtomicU64::new(0),
        }
    }

    pub fn set_owner(&self, tenant_id: &str) {
        *self.owner.lock().expect("meta lock") = Some(tenant_id.to_string());
    }

    pub fn set_state(&self, state: &str) {
        let mut current = self.state.lock().expect("meta lock");
        if *current != state {
            *current = state.to_string();
        }
    }

    pub fn record_error(&self, error: &str) {
        *self.last_error.lock().expect("meta lock") = Some(error.to_string());
    }

    /// Counts a supervisor restart (and the metric of it).
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dgidgi_actor_restarts_total", "kind" => self.kind).increment(1);
    }

    /// Counts a message handled outside the registry (an actor with no registry).
    pub fn handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dgidgi_actor_messages_total", "kind" => self.kind).increment(1);
    }

    /// Messages sent to the actor and not answered yet.
    pub fn mailbox_depth(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed).max(0)
    }

    /// Whether the actor is in `state` now.
    pub fn is_in(&self, state: &str) -> bool {
        *self.state.lock().expect("meta lock") == state
    }

    pub fn info(&self) -> ActorInfo {
        ActorInfo {
            kind: self.kind,
            id: self.key.clone(),
            tenant_id: self.owner.lock().expect("meta lock").clone(),
            state: self.state.lock().expect("meta lock").clone(),
            started_at: self.started_at.clone(),
            age_secs: self.started.elapsed().as_secs(),
            mailbox_depth: self.in_flight.load(Ordering::Relaxed).max(0),
            messages_handled: self.handled.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("meta lock").clone(),
        }
    }
}

/// A live actor: its address and what operators see of it.
struct Live<A: Actor> {
    addr: Addr<A>,
    meta: Arc<ActorMeta>,
}

impl<A: Actor> Clone for Live<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            meta: self.meta.clone(),
        }
    }
}

/// The live actors of one kind, keyed by entity id.
pub struct Registry<A: Actor> {
    kind: &'static str,
    /// The one live address per key; removed when the actor passivates.
    actors: Arc<DashMap<String, Live<A>>>,
    /// The arbiters actors run on, chosen by a hash of the key.
    arbiters: Arc<Vec<ArbiterHandle>>,
}

impl<A: Actor> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            actors: self.actors.clone(),
            arbiters: self.arbiters.clone(),
        }
    }
}

/// Counts a message in flight to an actor until it is answered (or given up).
struct InFlight(Arc<ActorMeta>);

impl InFlight {
    fn new(meta: Arc<ActorMeta>) -> Self {
        meta.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(meta)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.handled();
    }
}

impl<A> Registry<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// A registry of actors of `kind` (`tenant`, `run`...) that run on the given arbiters
    /// (at least one).
    pub fn new(kind: &'static str, arbiters: Vec<ArbiterHandle>) -> Self {
        assert!(
            !arbiters.is_empty(),
            "a registry needs at least one arbiter"
        );
        Self {
            kind,
            actors: Arc::new(DashMap::new()),
            arbiters: Arc::new(arbiters),
        }
    }

    /// How many actors are live now.
    pub fn live(&self) -> usize {
        self.actors.len()
    }

    /// What operators see of every live actor.
    pub fn snapshot(&self) -> Vec<ActorInfo> {
        self.actors.iter().map(|e| e.meta.info()).collect()
    }

    /// Calls `f` with each live actor's metadata, copying nothing (metrics read it often).
    pub fn for_each(&self, mut f: impl FnMut(&ActorMeta)) {
        for entry in self.actors.iter() {
            f(&entry.meta);
        }
    }

    /// The address of the live actor for `key`, if there is one (none is started).
    pub fn get(&self, key: &str) -> Option<Addr<A>> {
        self.actors
            .get(key)
            .map(|e| e.addr.clone())
            .filter(|a| a.connected())
    }

    /// The metadata of the live actor for `key`, if there is one.
    pub fn meta(&self, key: &str) -> Option<Arc<ActorMeta>> {
        self.actors.get(key).map(|e| e.meta.clone())
    }

    fn start<F>(&self, key: &str, make: F) -> Live<A>
    where
        F: FnOnce(&mut Context<A>, Arc<ActorMeta>) -> A + Send + 'static,
    {
        let arbiter = &self.arbiters[self.shard(key)];
        let meta = Arc::new(ActorMeta::new(self.kind, key));
        let given = meta.clone();
        Live {
            addr: Supervisor::start_in_arbiter(arbiter, move |ctx| make(ctx, given)),
            meta,
        }
    }

    /// The live actor for `key`, activating it with `make` when none is.
    /// The map's entry lock makes activation race-free: one actor per key.
    fn live_one<F>(&self, key: &str, make: F) -> Live<A>
    where
        F: FnOnce(&mut Context<A>, Arc<ActorMeta>) -> A + Send + 'static,
    {
        if let Some(live) = self.actors.get(key) {
            if live.addr.connected() {
                return live.clone();
            }
        }
        match self.actors.entry(key.to_string()) {
            Entry::Occupied(mut live) if !live.get().addr.connected() => {
                let fresh = self.start(key, make);
                live.insert(fresh.clone());
                fresh
            }
            Entry::Occupied(live) => live.get().clone(),
            Entry::Vacant(slot) => slot.insert(self.start(key, make)).clone(),
        }
    }

    /// The address of the live actor for `key`, activating it with `make` when none is.
    /// `make` gets the actor's [`ActorMeta`] to report its state, errors and restarts in.
    pub fn activate<F>(&self, key: &str, make: F) -> Addr<A>
    where
        F: FnOnce(&mut Context<A>, Arc<ActorMeta>) -> A + Send + 'static,
    {
        self.live_one(key, make).addr
    }

    /// Forgets `key` if it still maps to `addr`; the actor calls this as it passivates.
    pub fn forget(&self, key: &str, addr: &Addr<A>) {
        self.actors.remove_if(key, |_, live| &live.addr == addr);
    }

    /// Sends `msg` to the actor for `key`, activating it with `make` first when needed, and
    /// retries once on a fresh activation if the actor stopped while it was addressed.
    pub async fn send<M, F>(&self, key: &str, make: F, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        F: Fn(&mut Context<A>, Arc<ActorMeta>) -> A + Send + Clone + 'static,
    {
        let live = self.live_one(key, make.clone());
        let counted = InFlight::new(live.meta.clone());
        let sent = live.addr.send(msg.clone()).await;
        drop(counted);
        match sent {
            Ok(answer) => Ok(answer),
            Err(MailboxError::Closed) => {
                self.forget(key, &live.addr);
                let live = self.live_one(key, make);
                let _counted = InFlight::new(live.meta.clone());
                live.addr
                    .send(msg)
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))
            }
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    fn shard(&self, key: &str) -> usize {
        (self.actors.hasher().hash_one(key) % self.arbiters.len() as u64) as usize
    }
}
