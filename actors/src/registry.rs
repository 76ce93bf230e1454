//! Activation, passivation and addressing of keyed actors ("virtual actors").
//!
//! A [`Registry`] maps a key (a tenant id) to the address of the one live actor for it.
//! `send` activates the actor when none is live, so a handler never has to know whether an
//! actor is in memory. Actors are spread over a fixed set of arbiters (threads) by key.

use std::hash::BuildHasher;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Why a message could not be answered by its actor.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The actor's mailbox is full or it stopped while the message was in flight.
    #[error("actor unavailable: {0}")]
    Unavailable(String),
}

/// The live actors of one kind, keyed by entity id.
pub struct Registry<A: Actor> {
    /// The one live address per key; removed when the actor passivates.
    actors: Arc<DashMap<String, Addr<A>>>,
    /// The arbiters actors run on, chosen by a hash of the key.
    arbiters: Arc<Vec<ArbiterHandle>>,
}

impl<A: Actor> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Self {
            actors: self.actors.clone(),
            arbiters: self.arbiters.clone(),
        }
    }
}

impl<A> Registry<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// A registry whose actors run on the given arbiters (at least one).
    pub fn new(arbiters: Vec<ArbiterHandle>) -> Self {
        assert!(
            !arbiters.is_empty(),
            "a registry needs at least one arbiter"
        );
        Self {
            actors: Arc::new(DashMap::new()),
            arbiters: Arc::new(arbiters),
        }
    }

    /// How many actors are live now.
    pub fn live(&self) -> usize {
        self.actors.len()
    }

    /// The address of the live actor for `key`, activating it with `make` when none is.
    /// The map's entry lock makes activation race-free: one actor per key.
    pub fn activate<F>(&self, key: &str, make: F) -> Addr<A>
    where
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        if let Some(addr) = self.actors.get(key) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let arbiter = &self.arbiters[self.shard(key)];
        match self.actors.entry(key.to_string()) {
            Entry::Occupied(mut live) if !live.get().connected() => {
                let addr = Supervisor::start_in_arbiter(arbiter, make);
                live.insert(addr.clone());
                addr
            }
            Entry::Occupied(live) => live.get().clone(),
            Entry::Vacant(slot) => slot
                .insert(Supervisor::start_in_arbiter(arbiter, make))
                .clone(),
        }
    }

    /// Forgets `key` if it still maps to `addr`; the actor calls this as it passivates.
    pub fn forget(&self, key: &str, addr: &Addr<A>) {
        self.actors.remove_if(key, |_, live| live == addr);
    }

    /// Sends `msg` to the actor for `key`, activating it with `make` first when needed, and
    /// retries once on a fresh activation if the actor stopped while it was addressed.
    pub async fn send<M, F>(&self, key: &str, make: F, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        F: Fn(&mut Context<A>) -> A + Send + Clone + 'static,
    {
        let addr = self.activate(key, make.clone());
        match addr.send(msg.clone()).await {
            Ok(answer) => Ok(answer),
            Err(MailboxError::Closed) => {
                self.forget(key, &addr);
                self.activate(key, make)
                    .send(msg)
                    .await
                    .map_err(|e| ActorError::Unavailable(e.to_string()))
            }
            Err(e) => Err(ActorError::Unavailable(e.to_string())),
        }
    }

    fn shard(&self, key: &str) -> usize {
        (self.actors.hasher().hash_one(key) % self.arbiters.len() as u64) as usize
    }
}
