//! Event logs: every run's and chat session's events, in order, by stream. Appends of
//! many streams are committed together by the write path (`writer.rs`).

use async_trait::async_trait;
use dgidgi_actors::events::{EventLog, Fence, StreamEvent};
use dgidgi_actors::StoreFailure;

use super::cluster::held;
use super::writer::Stmt;
use super::{for_actors, json_column, to_json, Result, Store};

impl Store {
    /// The seq of the last event of `stream` (of one of `kinds`, when any are named); 0
    /// when there is none.
    pub async fn last_seq(&self, stream: &str, kinds: &[&str]) -> Result<i64> {
        let mut sql = String::from(
            "SELECT COALESCE(MAX(seq), 0) AS last FROM stream_events WHERE stream_id = $1",
        );
        if !kinds.is_empty() {
            let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
            sql.push_str(&format!(" AND event_type IN ({})", marks.join(", ")));
        }
        let mut binds = vec![stream.into()];
        binds.extend(kinds.iter().map(|k| (*k).into()));
        let last = self.read(&sql, binds, |row| row.get("last")).await?;
        Ok(last.into_iter().next().unwrap_or(0))
    }
}

#[async_trait]
impl EventLog for Store {
    async fn append_events(
        &self,
        stream: &str,
        events: &[StreamEvent],
        fence: Option<&Fence>,
    ) -> Result<(), StoreFailure> {
        // One unit of the write path: committed with whatever else is waiting.
        let mut unit: Vec<Stmt> = fence.map(|f| held(&self.node, f)).into_iter().collect();
        unit.extend(append_stmts(stream, events));
        let written = self.write_path.write(unit).await;
        if written.is_ok() {
            crash_point(events);
            self.announce(stream, events);
        }
        for_actors(written.map(|_| ()))
    }

    async fn events_after(
        &self,
        stream: &str,
        after: i64,
    ) -> Result<Vec<StreamEvent>, StoreFailure> {
        let sql = "SELECT seq, event_type, data, created_at FROM stream_events \
                   WHERE stream_id = $1 AND seq > $2 ORDER BY seq";
        let read = self.read(sql, vec![stream.into(), after.into()], |row| {
            Ok(StreamEvent {
                seq: row.get("seq")?,
                kind: row.get("event_type")?,
                data: json_column(row, "data")?,
                created_at: row.get("created_at")?,
            })
        });
        for_actors(read.await)
    }
}

/// The statements that append `events` to `stream`, 100 rows a statement.
pub(super) fn append_stmts(stream: &str, events: &[StreamEvent]) -> Vec<Stmt> {
    events
        .chunks(100)
        .map(|chunk| {
            let marks: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = i * 5;
                    format!("(${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5)
                })
                .collect();
            let sql = format!(
                "INSERT INTO stream_events (stream_id, seq, event_type, data, created_at) VALUES {}",
                marks.join(", ")
            );
            chunk.iter().fold(Stmt::new(sql), |stmt, event| {
                stmt.bind(stream)
                    .bind(event.seq)
                    .bind(&event.kind)
                    .bind(to_json(&event.data))
                    .bind(&event.created_at)
            })
        })
        .collect()
}

/// For crash tests: with `DGIDGI_CRASH_AFTER_COMMIT=<event type>` in its environment the
/// process aborts as soon as an event of that type is committed, before it is announced
/// or published, so a test can show that a subscriber still gets it from the store. Unset,
/// it does nothing.
pub(super) fn crash_point(events: &[StreamEvent]) {
    static AFTER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let after = AFTER.get_or_init(|| std::env::var("DGIDGI_CRASH_AFTER_COMMIT").ok());
    if let Some(kind) = after {
        if events.iter().any(|e| &e.kind == kind) {
            tracing::error!(event = %kind, "crashing after the commit, as DGIDGI_CRASH_AFTER_COMMIT asks");
            std::process::abort();
        }
    }
}
