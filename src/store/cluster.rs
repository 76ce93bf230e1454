//! Several nodes on one database: the nodes' heartbeats, run leases (claim, renew, fence),
//! recorded cancels, and the notifications that carry appends and cancels across nodes.
//! On SQLite there is one node: the process that serves the file holds it exclusively.

use std::io::ErrorKind;

use std::sync::Arc;

use dgidgi_actors::chat::SessionNotice;
use dgidgi_actors::events::{Fence, Owned, StreamEvent};
use dgidgi_actors::run::Run;
use dgidgi_actors::time;
use serde::Serialize;
use sqlx::Row;

use super::writer::{Done, Stmt};
use super::{Backend, Error, Result, Store};

/// The PostgreSQL channel that carries `<node> <stream> <first seq> <last seq>` after each
/// committed append.
const EVENTS_CHANNEL: &str = "dgidgi_events";
/// The PostgreSQL channel that carries `cancel <run id>` when a cancel is recorded.
const CONTROL_CHANNEL: &str = "dgidgi_control";

/// A node as its heartbeat shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    pub id: String,
    pub region: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// How many unfinished runs it holds the lease of.
    pub runs: i64,
}

impl Store {
    /// On SQLite, makes this process the only one serving the database file (a second
    /// `dgidgi serve` on it refuses to start), and frees the runs an earlier process held:
    /// no other node can be driving them. Nothing to do on PostgreSQL.
    pub async fn hold_exclusively(&self) -> Result<()> {
        let Some(db) = &self.sqlite_file else {
            return Ok(());
        };
        let path = db.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Corrupt(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Corrupt(format!(
                    "another dgidgi process is serving {} (SQLite is one node; several nodes \
                     share a PostgreSQL database)",
                    db.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {
                tracing::warn!(file = %path.display(), "file locks unsupported here; not checking for a second process");
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Corrupt(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
        if let Ok(mut held) = self.exclusive.lock() {
            *held = Some(file);
        }
        let unit = vec![
            Stmt::new(
                "UPDATE runs SET owner = NULL, lease_expires_at = NULL \
                 WHERE status IN ('queued', 'running')",
            ),
            Stmt::new("UPDATE chat_sessions SET owner = NULL, lease_expires_at = NULL"),
            Stmt::new(
                "UPDATE webhook_deliveries SET next_attempt_at = $1, claimed_by = NULL \
                 WHERE claimed_by IS NOT NULL AND status = 'pending'",
            )
            .bind(time::now()),
        ];
        self.write(unit).await?;
        Ok(())
    }

    /// Writes this node's heartbeat and renews the leases of the runs it drives.
    pub async fn heartbeat(&self, region: &str, version: &str, started_at: &str) -> Result<()> {
        let now = time::now();
        let until = time::later(self.lease);
        let unit = vec![
            Stmt::new(
                "INSERT INTO nodes (id, region, version, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            )
            .bind(&*self.node)
            .bind(region)
            .bind(version)
            .bind(started_at)
            .bind(now.as_str()),
            Stmt::new(
                "UPDATE runs SET lease_expires_at = $2 \
                 WHERE owner = $1 AND status IN ('queued', 'running')",
            )
            .bind(&*self.node)
            .bind(until.as_str()),
            Stmt::new("UPDATE chat_sessions SET lease_expires_at = $2 WHERE owner = $1")
                .bind(&*self.node)
                .bind(until.as_str()),
            // Webhook deliveries claimed by nodes that stopped beating are due again now.
            Stmt::new(
                "UPDATE webhook_deliveries SET next_attempt_at = $1, claimed_by = NULL \
                 WHERE claimed_by IS NOT NULL AND status = 'pending' \
                 AND claimed_by NOT IN (SELECT id FROM nodes WHERE heartbeat_at >= $2)",
            )
            .bind(now.as_str())
            .bind(time::earlier(self.lease)),
        ];
        self.write(unit).await?;
        Ok(())
    }

    /// The nodes whose heartbeat is younger than a lease, with how many runs each holds.
    pub async fn live_nodes(&self) -> Result<Vec<Node>> {
        let rows = sqlx::query(
            "SELECT n.id, n.region, n.version, n.started_at, n.heartbeat_at, \
             (SELECT COUNT(*) FROM runs r WHERE r.owner = n.id AND r.status IN ('queued', 'running')) AS runs \
             FROM nodes n WHERE n.heartbeat_at >= $1 ORDER BY n.id",
        )
        .bind(time::earlier(self.lease))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Node {
                    id: row.try_get("id")?,
                    region: row.try_get("region")?,
                    version: row.try_get("version")?,
                    started_at: row.try_get("started_at")?,
                    heartbeat_at: row.try_get("heartbeat_at")?,
                    runs: row.try_get("runs")?,
                })
            })
            .collect()
    }

    /// Makes this node the owner of what `owned` names, with a new epoch, unless another
    /// live node is (see `RunStore::claim_run`, `ChatStore::claim_session`); a run only
    /// while it is unfinished.
    pub(super) async fn claim(&self, owned: &Owned) -> Result<Option<i64>> {
        let (table, id, unfinished) = match owned {
            Owned::Run(id) => (
                "runs",
                id,
                " AND status IN ('queued', 'running', 'requires_action')",
            ),
            Owned::Session(id) => ("chat_sessions", id, ""),
        };
        let sql = format!(
            "UPDATE {table} SET owner = $2, epoch = epoch + 1, lease_expires_at = $3 \
             WHERE id = $1{unfinished} AND {} RETURNING epoch",
            claimable("", "$2", "$4")
        );
        let claim = Stmt::new(sql)
            .bind(id)
            .bind(&*self.node)
            .bind(time::later(self.lease))
            .bind(time::now())
            .returning();
        let done = self.write_one(claim).await?;
        Ok(done.first_int())
    }

    /// Tells the owner of session `id` (PostgreSQL; on SQLite this node is the owner, and
    /// its actor was told directly).
    pub(super) async fn announce_to_session_owner(
        &self,
        id: &str,
        notice: SessionNotice,
    ) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let what = match notice {
            SessionNotice::Posted => "posted",
            SessionNotice::Cancel => "cancel-reply",
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CONTROL_CHANNEL)
            .bind(format!("{what} {id}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives `run` one of its tenant's `slots` run slots if one is free (see
    /// `RunStore::take_slot`). On PostgreSQL `dgidgi_take_slot` holds the tenant's advisory
    /// lock for the count and the take, so that they are one step for every node.
    pub(super) async fn take_run_slot(&self, run: &Run, slots: u32) -> Result<bool> {
        let done = self.write_one(self.slot_stmt(run, slots)).await?;
        Ok(self.slot_taken(&done))
    }

    /// The statement that gives `run` a slot if one is free (see `take_run_slot`).
    pub(super) fn slot_stmt(&self, run: &Run, slots: u32) -> Stmt {
        let take = if self.backend == Backend::Postgres {
            Stmt::new("SELECT CASE WHEN dgidgi_take_slot($1, $2, $3) THEN 1 ELSE 0 END").returning()
        } else {
            // SQLite: one node, one writer; the same rule in one statement.
            Stmt::new(
                "UPDATE runs SET admitted = 1 WHERE id = $1 AND (admitted = 1 OR \
                 (SELECT COUNT(*) FROM runs WHERE tenant_id = $2 AND admitted = 1 \
                  AND status IN ('queued', 'running')) < $3)",
            )
        };
        take.bind(&run.id)
            .bind(&run.tenant_id)
            .bind(i64::from(slots))
    }

    /// Whether the statement of `slot_stmt` gave its run a slot.
    pub(super) fn slot_taken(&self, done: &Done) -> bool {
        match self.backend {
            Backend::Postgres => done.first_int() == Some(1),
            Backend::Sqlite => done.changed == 1,
        }
    }

    /// Records a cancel of run `id` and tells every node; false when the run has ended.
    pub(super) async fn record_cancel(&self, id: &str) -> Result<bool> {
        let mut unit = vec![Stmt::new(
            "UPDATE runs SET cancel_requested = 1 \
             WHERE id = $1 AND status IN ('queued', 'running', 'requires_action')",
        )
        .bind(id)];
        if self.backend == Backend::Postgres {
            // Sent when the mark commits; a run that already ended ignores it.
            unit.push(
                Stmt::new("SELECT pg_notify($1, $2)")
                    .bind(CONTROL_CHANNEL)
                    .bind(format!("cancel {id}")),
            );
        }
        Ok(self.write(unit).await?[0].changed == 1)
    }
}

impl Store {
    /// Whether rate limits are counted in the database (PostgreSQL: shared by every node)
    /// rather than in each process.
    pub fn shares_rate_limits(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Counts one request of key `key` in tenant `tenant` in the window that started at
    /// `window_start` (Unix seconds), unless either has spent its budget: whether it is
    /// allowed, then the key's and the tenant's counts. PostgreSQL only.
    pub async fn count_request(
        &self,
        key: &str,
        tenant: &str,
        window_start: u64,
        per_key: u32,
        per_tenant: u32,
    ) -> Result<(bool, i64, i64)> {
        let row = sqlx::query(
            "SELECT allowed, key_count, tenant_count FROM dgidgi_rate_check($1, $2, $3, $4, $5)",
        )
        .bind(format!("k:{key}"))
        .bind(format!("t:{tenant}"))
        .bind(window_start as i64)
        .bind(i64::from(per_key))
        .bind(i64::from(per_tenant))
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get("allowed")?,
            row.try_get("key_count")?,
            row.try_get("tenant_count")?,
        ))
    }

    /// Drops the rate counters of windows that started before `before` (PostgreSQL).
    pub async fn forget_rate_windows(&self, before: u64) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("DELETE FROM rate_counters WHERE window_start < $1")
                .bind(before as i64)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Tells every node (PostgreSQL) that the keys `change` names were revoked or changed
    /// plan, so that none serves them from its cache any more.
    pub async fn announce_keys(&self, change: &KeysChanged) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let payload = match change {
            KeysChanged::Key(id) => format!("keys key {id}"),
            KeysChanged::Tenant(id) => format!("keys tenant {id}"),
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CONTROL_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Keys whose cached copies are stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysChanged {
    /// One key (revoked).
    Key(String),
    /// Every key of a tenant (its plan changed).
    Tenant(String),
}

/// The rule that a row (of `runs` or `chat_sessions`, columns prefixed `prefix`) has no
/// live owner but `node`: unowned, owned by `node`, or its owner's lease is over at `now`.
/// `node` and `now` are the placeholders they are bound to.
pub(super) fn claimable(prefix: &str, node: &str, now: &str) -> String {
    format!(
        "({prefix}owner IS NULL OR {prefix}owner = {node} OR {prefix}lease_expires_at IS NULL \
         OR {prefix}lease_expires_at < {now})"
    )
}

/// The statement that refuses its unit of work unless `fence` is the latest claim of what
/// it names and `node` holds it. (On PostgreSQL it also locks the row until the unit
/// commits, so a claim cannot slip in between.)
pub(super) fn held(node: &str, fence: &Fence) -> Stmt {
    let (table, what, id) = match &fence.owned {
        Owned::Run(id) => ("runs", "run", id),
        Owned::Session(id) => ("chat_sessions", "session", id),
    };
    Stmt::new(format!(
        "UPDATE {table} SET epoch = epoch WHERE id = $1 AND epoch = $2 AND owner = $3"
    ))
    .bind(id)
    .bind(fence.epoch)
    .bind(node)
    .or_fenced(format!(
        "{what} {id} is no longer driven by this node (claim {})",
        fence.epoch
    ))
}

/// Committed appends waiting to be announced to the other nodes: stream, first and last
/// seq.
pub(super) type Announcer = tokio::sync::mpsc::UnboundedSender<(String, i64, i64)>;

/// Starts the task that announces committed appends (PostgreSQL): whatever waits is sent
/// together, one notification per stream, in one statement outside the appends' own
/// transactions (a NOTIFY inside them would serialize their commits on PostgreSQL's
/// notification queue lock).
pub(super) fn start_announcer(writer: sqlx::AnyPool, node: Arc<str>) -> Announcer {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64, i64)>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut spans = vec![first];
            while let Ok((stream, lo, hi)) = rx.try_recv() {
                match spans.iter_mut().find(|(s, _, _)| *s == stream) {
                    Some(span) => {
                        span.1 = span.1.min(lo);
                        span.2 = span.2.max(hi);
                    }
                    None => spans.push((stream, lo, hi)),
                }
            }
            for chunk in spans.chunks(500) {
                let marks: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(${}::text)", i + 2))
                    .collect();
                let sql = format!(
                    "SELECT pg_notify($1, p) FROM (VALUES {}) AS t(p)",
                    marks.join(", ")
                );
                let mut query = sqlx::query(&sql).bind(EVENTS_CHANNEL);
                for (stream, lo, hi) in chunk {
                    query = query.bind(format!("{node} {stream} {lo} {hi}"));
                }
                if let Err(e) = query.execute(&writer).await {
                    tracing::debug!(error = %e, "appends not announced to the other nodes");
                }
            }
        }
    });
    tx
}

impl Store {
    /// Announces (PostgreSQL) that `events` of `stream` are committed.
    pub(super) fn announce(&self, stream: &str, events: &[StreamEvent]) {
        let (Some(announcer), Some(first), Some(last)) =
            (&self.announcer, events.first(), events.last())
        else {
            return;
        };
        let _ = announcer.send((stream.to_string(), first.seq, last.seq));
    }
}

/// What another node announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Node `node` appended events `first..=last` to `stream`.
    Appended {
        node: String,
        stream: String,
        first: i64,
        last: i64,
    },
    /// A cancel of run `run_id` was recorded.
    Cancel { run_id: String },
    /// Keys were revoked or changed plan.
    Keys(KeysChanged),
    /// Something for the owner of chat session `session_id`.
    Session {
        session_id: String,
        notice: SessionNotice,
    },
}

/// This node's listening connection (PostgreSQL): what other nodes announce.
pub struct Notices(sqlx::postgres::PgListener);

impl Notices {
    pub async fn connect(url: &str) -> Result<Self> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener
            .listen_all([EVENTS_CHANNEL, CONTROL_CHANNEL])
            .await?;
        Ok(Self(listener))
    }

    /// The next notice (those that cannot be read are skipped).
    pub async fn next(&mut self) -> Result<Notice> {
        loop {
            let note = self.0.recv().await?;
            if let Some(notice) = parse(note.channel(), note.payload()) {
                return Ok(notice);
            }
        }
    }
}

fn parse(channel: &str, payload: &str) -> Option<Notice> {
    if channel == CONTROL_CHANNEL {
        for (prefix, notice) in [
            ("posted ", SessionNotice::Posted),
            ("cancel-reply ", SessionNotice::Cancel),
        ] {
            if let Some(id) = payload.strip_prefix(prefix) {
                return Some(Notice::Session {
                    session_id: id.into(),
                    notice,
                });
            }
        }
        if let Some(keys) = payload.strip_prefix("keys ") {
            return Some(Notice::Keys(match keys.split_once(' ')? {
                ("key", id) => KeysChanged::Key(id.into()),
                ("tenant", id) => KeysChanged::Tenant(id.into()),
                _ => return None,
            }));
        }
        let run_id = payload.strip_prefix("cancel ")?;
        return Some(Notice::Cancel {
            run_id: run_id.into(),
        });
    }
    let mut parts = payload.split(' ');
    let (node, stream) = (parts.next()?, parts.next()?);
    let (first, last) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(Notice::Appended {
        node: node.into(),
        stream: stream.into(),
        first,
        last,
    })
}
