//! Group commit of event-log appends. Every run and chat reply persists its events before
//! publishing them, and with many streams at once those are most of the writes: one
//! transaction each would queue them all behind the one SQLite writer. The appender task
//! takes whatever appends are waiting and writes them in one transaction; each caller is
//! answered once its events are committed. A batch that fails is retried append by
//! append, so one stream's error never fails another's.

use std::sync::Arc;

use dgidgi_actors::events::{Fence, StreamEvent};
use dgidgi_actors::StoreFailure;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::cluster::{held, Announcer};
use super::{to_json, Error, Result};

/// Appends written in one transaction at most.
const MAX_BATCH: usize = 512;

pub(super) struct Job {
    pub stream: String,
    pub events: Vec<StreamEvent>,
    /// A run's append lands only while its claim is the latest.
    pub fence: Option<Fence>,
    pub done: oneshot::Sender<std::result::Result<(), StoreFailure>>,
}

/// Starts the appender on the current runtime; appends go through the returned sender.
/// Node `node` announces what it commits through `announcer` (on PostgreSQL).
pub(super) fn start(
    writer: AnyPool,
    node: Arc<str>,
    announcer: Option<Announcer>,
) -> mpsc::UnboundedSender<Job> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let together = write(&writer, &node, &jobs).await;
            metrics::histogram!("dgidgi_event_append_batch_size").record(jobs.len() as f64);
            for job in jobs {
                let outcome = match &together {
                    Ok(()) => Ok(()),
                    // Alone, so that only the append at fault fails.
                    Err(_) => write(&writer, &node, std::slice::from_ref(&job))
                        .await
                        .map_err(StoreFailure::from),
                };
                if let (Ok(()), Some(announcer), Some(first), Some(last)) =
                    (&outcome, &announcer, job.events.first(), job.events.last())
                {
                    let _ = announcer.send((job.stream.clone(), first.seq, last.seq));
                }
                let _ = job.done.send(outcome);
            }
        }
    });
    tx
}

async fn write(writer: &AnyPool, node: &str, jobs: &[Job]) -> Result<()> {
    let mut tx = writer.begin().await?;
    for fence in jobs.iter().filter_map(|j| j.fence.as_ref()) {
        held(&mut tx, node, fence).await?;
    }
    let rows: Vec<(&str, &StreamEvent)> = jobs
        .iter()
        .flat_map(|j| j.events.iter().map(move |e| (j.stream.as_str(), e)))
        .collect();
    insert(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(())
}

/// Inserts events of any streams, 100 rows a statement.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    rows: &[(&str, &StreamEvent)],
) -> Result<()> {
    for chunk in rows.chunks(100) {
        let mut sql = String::from(
            "INSERT INTO stream_events (stream_id, seq, event_type, data, created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let n = i * 5;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5
            ));
        }
        let mut query = sqlx::query(&sql);
        for (stream, event) in chunk {
            query = query
                .bind(*stream)
                .bind(event.seq)
                .bind(&event.kind)
                .bind(to_json(&event.data))
                .bind(&event.created_at);
        }
        query.execute(&mut **tx).await.map_err(Error::from)?;
    }
    Ok(())
}
