//! This node among the nodes sharing one database: its id, its heartbeat loop (heartbeat,
//! lease renewal, taking up runs whose owner went away) and, on PostgreSQL, its listening
//! connection, through which appends and cancels made on other nodes reach it.
//!
//! The tables are the truth; notifications only wake: a subscriber woken by another node's
//! append reads the store after its last seq, as it would after a gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::KeyCache;
use crate::store::{Notice, Notices, Store};
use dgidgi_actors::chat::Sessions;
use dgidgi_actors::events::{EventHub, EventLog};
use dgidgi_actors::run::Runs;

/// A fresh id for this process: the host's name and a random suffix, so that a restarted
/// node never passes for its earlier self (whose runs are taken up when its leases end).
pub fn new_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    // The random end of a v7 id (its start is the time).
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}", &suffix[24..])
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When this node last wrote its heartbeat; a node whose heartbeat is older than its lease
/// is not ready (`/readyz`): it has lost, or is about to lose, what it drives.
#[derive(Clone, Default)]
pub struct Heartbeat {
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    fn beat(&self) {
        self.last.store(unix_secs(), Ordering::Relaxed);
    }

    /// Seconds since the last heartbeat that was written.
    pub fn age_secs(&self) -> u64 {
        unix_secs().saturating_sub(self.last.load(Ordering::Relaxed))
    }
}

/// Writes the heartbeat every `every` (renewing this node's leases) and takes up the
/// unfinished runs no live node drives; the first beat is written before it returns.
pub async fn start_heartbeat(
    store: Store,
    runs: Runs,
    sessions: Sessions,
    region: String,
    every: Duration,
    rate_window: Duration,
) -> anyhow::Result<Heartbeat> {
    let heartbeat = Heartbeat::default();
    let started_at = dgidgi_actors::time::now();
    let version = env!("CARGO_PKG_VERSION");
    store.heartbeat(&region, version, &started_at).await?;
    heartbeat.beat();
    let beats = heartbeat.clone();
    actix::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            ticks.tick().await;
            match store.heartbeat(&region, version, &started_at).await {
                Ok(()) => beats.beat(),
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat not written");
                    continue;
                }
            }
            // Shared rate counters of windows long over.
            let before = unix_secs().saturating_sub(2 * rate_window.as_secs().max(1));
            if let Err(e) = store.forget_rate_windows(before).await {
                tracing::debug!(error = %e, "old rate counters not dropped");
            }
            match runs.reclaim().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(runs = n, "taking up unfinished runs no live node drives"),
                Err(e) => tracing::debug!(error = %e, "unfinished runs not looked up"),
            }
            if let Err(e) = sessions.recover().await {
                tracing::debug!(error = %e, "unanswered chat sessions not looked up");
            }
        }
    });
    Ok(heartbeat)
}

/// On PostgreSQL: listens for other nodes' appends (waking this node's subscribers of
/// those streams) and for cancels (stopping the runs this node drives), until the store
/// closes. The listening connection lives on a thread of its own, whose runtime outlives
/// it (sqlx returns a listener's connection on a task of the runtime it drops in).
pub fn listen(
    url: String,
    store: Store,
    hub: EventHub,
    runs: Runs,
    sessions: Sessions,
    keys: KeyCache,
) -> std::io::Result<()> {
    let closing = store.closing();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("cluster-listener".into())
        .spawn(move || {
            runtime.block_on(async {
                loop {
                    tokio::select! {
                        _ = closing.cancelled() => return,
                        followed = follow(&url, &store, &hub, &runs, &sessions, &keys) => {
                            if let Err(e) = followed {
                                tracing::warn!(error = %e, "cluster notifications lost; listening again");
                            }
                        }
                    }
                    tokio::select! {
                        _ = closing.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            });
        })?;
    Ok(())
}

async fn follow(
    url: &str,
    store: &Store,
    hub: &EventHub,
    runs: &Runs,
    sessions: &Sessions,
    keys: &KeyCache,
) -> anyhow::Result<()> {
    let mut notices = Notices::connect(url).await?;
    loop {
        let (node, stream, first, last) = match notices.next().await? {
            Notice::Cancel { run_id } => {
                runs.cancel_here(&run_id);
                continue;
            }
            Notice::Keys(change) => {
                keys.forget(&change);
                continue;
            }
            Notice::Session { session_id, notice } => {
                sessions.notice(&session_id, notice);
                continue;
            }
            Notice::Appended {
                node,
                stream,
                first,
                last,
            } => (node, stream, first, last),
        };
        if node == store.node_id() || !hub.is_followed(&stream) {
            continue;
        }
        // Subscribers skip what they have; those that missed something read the store.
        match store.events_after(&stream, first - 1).await {
            Ok(events) => {
                let fresh: Vec<_> = events.into_iter().filter(|e| e.seq <= last).collect();
                hub.publish(&stream, &fresh);
            }
            Err(e) => {
                tracing::debug!(%stream, error = %e, "events announced by another node not read")
            }
        }
    }
}
