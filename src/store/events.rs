//! Event logs: every run's and chat session's events, in order, by stream. Appends of
//! many streams are committed together by the appender (`appender.rs`).

use async_trait::async_trait;
use dgidgi_actors::events::{EventLog, Fence, StreamEvent};
use dgidgi_actors::StoreFailure;
use sqlx::{Any, Row, Transaction};

use super::{json_column, Error, Result, Store};

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
        let mut query = sqlx::query(&sql).bind(stream);
        for kind in kinds {
            query = query.bind(*kind);
        }
        let row = query.fetch_one(&self.pool).await?;
        Ok(row.try_get("last")?)
    }

    /// Appends events in one statement (a batch of tokens is one write).
    pub(super) async fn append(
        &self,
        tx: &mut Transaction<'_, Any>,
        stream: &str,
        events: &[StreamEvent],
    ) -> Result<()> {
        let rows: Vec<(&str, &StreamEvent)> = events.iter().map(|e| (stream, e)).collect();
        super::appender::insert(tx, &rows).await
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
        // Through the appender: committed together with other streams' waiting appends.
        let (done, committed) = tokio::sync::oneshot::channel();
        let job = super::appender::Job {
            stream: stream.to_string(),
            events: events.to_vec(),
            fence: fence.cloned(),
            done,
        };
        if self.appender.send(job).is_err() {
            return Err(StoreFailure::new("the event appender has stopped"));
        }
        committed
            .await
            .map_err(|_| StoreFailure::new("the event appender has stopped"))?
    }

    async fn events_after(
        &self,
        stream: &str,
        after: i64,
    ) -> Result<Vec<StreamEvent>, StoreFailure> {
        let rows = sqlx::query(
            "SELECT seq, event_type, data, created_at FROM stream_events WHERE stream_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(stream)
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreFailure::from(Error::from(e)))?;
        rows.iter()
            .map(|row| {
                Ok(StreamEvent {
                    seq: row.try_get("seq")?,
                    kind: row.try_get("event_type")?,
                    data: json_column(row, "data")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(StoreFailure::from)
    }
}
