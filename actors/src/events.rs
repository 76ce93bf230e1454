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

use crate::store::StoreFailure;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEvent {
    pub seq: i64,
    /// `run.started`, `token`, `step.completed`, ...
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at: String,
}

impl StreamEvent {
    /// Whether this event ends its stream (`run.completed|failed|cancelled`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "run.completed" | "run.failed" | "run.cancelled"
        )
    }
}

/// Durable, ordered storage of stream events.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` (consecutive seqs) to `stream` atomically.
    async fn append_events(&self, stream: &str, events: &[StreamEvent])
        -> Result<(), StoreFailure>;
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
