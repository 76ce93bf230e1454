//! Webhook deliveries and their attempts, the outbox fan-out that creates them, and the
//! store the `WebhookActor` delivers through.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use dgidgi_actors::webhook::{Disable, DueDelivery, Outcome, WebhookStore};
use dgidgi_actors::StoreFailure;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::endpoints::Endpoint;
use crate::ids::{now_rfc3339, IdKind};
use crate::store::writer::Stmt;
use crate::store::{for_actors, json_column, Backend, Error, Page, Paged, Result, Store};
use dgidgi_actors::time::{earlier, later};

/// A delivery to queue (due now).
struct NewDelivery<'a> {
    endpoint_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    body: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempted_at: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Option<String>,
    pub payload: Value,
    pub created_at: String,
}

impl Store {
    /// Queues a `webhook.test` event for the endpoint; returns the delivery id.
    pub async fn queue_test_delivery(&self, endpoint: &Endpoint) -> Result<String> {
        let event_id = format!("test_{}", IdKind::Event.new_id());
        let body = json!({ "type": "webhook.test", "timestamp": now_rfc3339(), "data": { "endpoint_id": endpoint.id } });
        let delivery = NewDelivery {
            endpoint_id: &endpoint.id,
            event_id: &event_id,
            event_type: "webhook.test",
            body: &body.to_string(),
        };
        self.write_one(delivery_row(&delivery)).await?;
        let row = sqlx::query("SELECT id FROM webhook_deliveries WHERE event_id = $1")
            .bind(&event_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Sends delivery `id` of `endpoint_id` again, now.
    pub async fn redeliver(&self, endpoint_id: &str, id: &str) -> Result<bool> {
        let again = Stmt::new(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, updated_at = $3 \
             WHERE id = $1 AND endpoint_id = $2",
        )
        .bind(id)
        .bind(endpoint_id)
        .bind(now_rfc3339());
        Ok(self.write_one(again).await?.changed == 1)
    }

    /// An endpoint's deliveries, newest first, each with every attempt.
    pub async fn list_deliveries(&self, endpoint_id: &str, page: &Page) -> Result<Paged<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, endpoint_id, event_id, event_type, status, next_attempt_at, body, created_at \
             FROM webhook_deliveries WHERE endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(endpoint_id)
        .bind(page.before())
        .bind(page.fetch())
        .fetch_all(&self.pool)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT attempted_at, status_code, latency_ms, error, next_retry_at FROM webhook_attempts \
                 WHERE delivery_id = $1 ORDER BY id",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(Attempt {
                    attempted_at: a.try_get("attempted_at")?,
                    status_code: a.try_get("status_code")?,
                    latency_ms: a.try_get("latency_ms")?,
                    error: a.try_get("error")?,
                    next_retry_at: a.try_get("next_retry_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
            items.push(Delivery {
                id,
                endpoint_id: row.try_get("endpoint_id")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                status: row.try_get("status")?,
                attempts,
                next_attempt_at: row.try_get("next_attempt_at")?,
                payload: json_column(row, "body")?,
                created_at: row.try_get("created_at")?,
            });
        }
        Ok(page.paged(items, |d| &d.id))
    }

    /// Makes the deliveries of up to `limit` outbox events after the cursor, in the order
    /// their writes committed (an id made earlier can commit later). One node at a time:
    /// the cursor moves only from where it was read.
    async fn fan_out_events(&self, limit: usize) -> Result<usize> {
        let cursor = self
            .setting_or_init("webhooks.outbox_cursor", || "0 ".into())
            .await?;
        let (pos, after_id) = cursor.split_once(' ').unwrap_or(("0", ""));
        let pos: i64 = pos
            .parse()
            .map_err(|_| Error::Corrupt(format!("webhook cursor '{cursor}'")))?;
        let query = match self.backend {
            // The one writer inserts in commit order: the rowid is that order.
            Backend::Sqlite => sqlx::query(
                "SELECT rowid AS pos, id, tenant_id, event_type, payload, created_at FROM outbox \
                 WHERE rowid > $1 ORDER BY rowid LIMIT $2",
            )
            .bind(pos),
            // Events of transactions below the oldest one still running: none can commit
            // behind the cursor any more.
            Backend::Postgres => sqlx::query(
                "SELECT tx AS pos, id, tenant_id, event_type, payload, created_at FROM outbox \
                 WHERE (tx > $1 OR (tx = $1 AND id > $2)) \
                 AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY tx, id LIMIT $3",
            )
            .bind(pos)
            .bind(after_id),
        };
        let events = query.bind(limit as i64).fetch_all(&self.pool).await?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let moved = format!(
            "{} {}",
            last.try_get::<i64, _>("pos")?,
            last.try_get::<String, _>("id")?
        );
        // The cursor moves only from where it was read: of two nodes that read the same
        // events, one commits them and the other's unit is refused (and it makes none).
        let mut unit = vec![Stmt::new(
            "UPDATE runtime_settings SET value = $2 WHERE name = 'webhooks.outbox_cursor' AND value = $1",
        )
        .bind(&cursor)
        .bind(moved)
        .or_gone()];
        // Each tenant's enabled endpoints and the platform-wide ones, read once a round
        // (a round of runs is thousands of events of a few tenants).
        let mut endpoints_of: HashMap<String, Vec<AnyRow>> = HashMap::new();
        for event in &events {
            let (id, tenant, kind, created): (String, String, String, String) = (
                event.try_get("id")?,
                event.try_get("tenant_id")?,
                event.try_get("event_type")?,
                event.try_get("created_at")?,
            );
            if !endpoints_of.contains_key(&tenant) {
                let rows = sqlx::query(
                    "SELECT id, events, created_at FROM webhook_endpoints \
                     WHERE enabled = 1 AND (tenant_id = $1 OR tenant_id IS NULL)",
                )
                .bind(&tenant)
                .fetch_all(&self.pool)
                .await?;
                endpoints_of.insert(tenant.clone(), rows);
            }
            for endpoint in &endpoints_of[&tenant] {
                // Only endpoints that existed when the event happened get it.
                let subscribed: Vec<String> = json_column(endpoint, "events")?;
                if !subscribed.contains(&kind)
                    || endpoint.try_get::<String, _>("created_at")? > created
                {
                    continue;
                }
                let payload: Value = json_column(event, "payload")?;
                let body =
                    json!({ "type": kind, "timestamp": created, "data": payload }).to_string();
                let endpoint_id: String = endpoint.try_get("id")?;
                unit.push(delivery_row(&NewDelivery {
                    endpoint_id: &endpoint_id,
                    event_id: &id,
                    event_type: &kind,
                    body: &body,
                }));
            }
        }
        match self.write(unit).await {
            Ok(_) => Ok(events.len()),
            Err(Error::Gone) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl WebhookStore for Store {
    async fn fan_out(&self, limit: usize) -> Result<usize, StoreFailure> {
        for_actors(self.fan_out_events(limit).await)
    }

    async fn due_deliveries(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<DueDelivery>, StoreFailure> {
        let now = now_rfc3339();
        // The deliveries due at `$1`, to enabled endpoints.
        const DUE: &str =
            "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled = 1";
        // Most ticks find nothing due: a read says so without a write.
        let any = format!("SELECT d.id {DUE} LIMIT 1");
        let found = self.read(&any, vec![now.as_str().into()], |row| {
            row.get::<String>("id")
        });
        if for_actors(found.await)?.is_empty() {
            return Ok(Vec::new());
        }
        // Claimed: not due again (for another node either) until `hold` has passed, when a
        // claim its node never answered (it died) is retried under the same delivery id.
        // PostgreSQL skips the rows another node is claiming; SQLite has one writer.
        let skip_locked = match self.backend {
            Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let claim = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = $3, claimed_by = $4 WHERE id IN (\
             SELECT d.id {DUE} ORDER BY d.next_attempt_at LIMIT $2{skip_locked}) RETURNING id"
        );
        let claim = Stmt::new(claim)
            .bind(now.as_str())
            .bind(limit as i64)
            .bind(later(hold))
            .bind(self.node_id())
            .returning();
        let ids = for_actors(self.write_one(claim).await)?.texts();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let read = format!(
            "SELECT d.id, d.endpoint_id, e.url, d.body, d.attempts, e.secret, e.previous_secret, \
             e.previous_secret_expires_at FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.id IN ({}) ORDER BY d.next_attempt_at, d.id",
            marks.join(", ")
        );
        let mut query = sqlx::query(&read);
        for id in &ids {
            query = query.bind(id);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreFailure::from(Error::from(e)))?;
        rows.iter()
            .map(|row| {
                let previous: Option<String> = row.try_get("previous_secret")?;
                let until: Option<String> = row.try_get("previous_secret_expires_at")?;
                Ok(DueDelivery {
                    id: row.try_get("id")?,
                    endpoint_id: row.try_get("endpoint_id")?,
                    url: row.try_get("url")?,
                    body: row.try_get("body")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    secret: row.try_get("secret")?,
                    previous_secret: previous
                        .filter(|_| until.as_deref().is_some_and(|u| u > now.as_str())),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(StoreFailure::from)
    }

    async fn record_attempt(
        &self,
        delivery: &DueDelivery,
        outcome: &Outcome,
        next_retry_in: Option<Duration>,
        disable: Disable,
    ) -> Result<(), StoreFailure> {
        let write = async {
            let now = now_rfc3339();
            let next = next_retry_in.map(later);
            let (status_code, latency, error, state) = match outcome {
                Outcome::Delivered { status, latency_ms } => {
                    (Some(i64::from(*status)), *latency_ms, None, "delivered")
                }
                Outcome::Gone { latency_ms } => (
                    Some(410),
                    *latency_ms,
                    Some("receiver answered 410 Gone".to_string()),
                    "failed",
                ),
                Outcome::Failed {
                    status,
                    latency_ms,
                    error,
                } => (
                    status.map(i64::from),
                    *latency_ms,
                    Some(error.clone()),
                    if next.is_some() { "pending" } else { "failed" },
                ),
            };
            let mut unit = vec![
                Stmt::new(
                    "INSERT INTO webhook_attempts (id, delivery_id, attempted_at, status_code, latency_ms, error, next_retry_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(IdKind::Attempt.new_id())
                .bind(&delivery.id)
                .bind(now.as_str())
                .bind(status_code)
                .bind(latency as i64)
                .bind(&error)
                .bind(&next),
                Stmt::new(
                    "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, \
                     last_status = $4, last_error = $5, updated_at = $6, claimed_by = NULL WHERE id = $1",
                )
                .bind(&delivery.id)
                .bind(state)
                .bind(&next)
                .bind(status_code)
                .bind(&error)
                .bind(now.as_str()),
            ];
            unit.push(match outcome {
                Outcome::Delivered { .. } => Stmt::new(
                    "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL WHERE id = $1",
                )
                .bind(&delivery.endpoint_id),
                Outcome::Gone { .. } => Stmt::new(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = 'the receiver answered 410 Gone', \
                     updated_at = $2 WHERE id = $1",
                )
                .bind(&delivery.endpoint_id)
                .bind(now.as_str()),
                // Disabled only once the failures have gone on long enough: a burst during
                // a short outage fails many attempts within seconds.
                Outcome::Failed { .. } => Stmt::new(
                    "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, \
                     failing_since = COALESCE(failing_since, $3), \
                     enabled = CASE WHEN consecutive_failures + 1 >= $2 AND COALESCE(failing_since, $3) <= $4 \
                     THEN 0 ELSE enabled END, \
                     disabled_reason = CASE WHEN consecutive_failures + 1 >= $2 AND COALESCE(failing_since, $3) <= $4 \
                     THEN 'consecutive failed attempts for longer than webhooks.disable_after_secs' ELSE disabled_reason END WHERE id = $1",
                )
                .bind(&delivery.endpoint_id)
                .bind(i64::from(disable.failures))
                .bind(now.as_str())
                .bind(earlier(disable.failing_for)),
            });
            self.write(unit).await.map(|_| ())
        };
        for_actors(write.await)
    }
}

/// The statement that queues delivery `d` (once per event and endpoint).
fn delivery_row(d: &NewDelivery<'_>) -> Stmt {
    Stmt::new(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, body, status, attempts, \
         next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6) \
         ON CONFLICT (event_id, endpoint_id) DO NOTHING",
    )
    .bind(IdKind::Message.new_id())
    .bind(d.endpoint_id)
    .bind(d.event_id)
    .bind(d.event_type)
    .bind(d.body)
    .bind(now_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;

    async fn store(url: &str) -> Store {
        let store = Store::connect(&DatabaseConfig {
            url: url.into(),
            max_connections: 4,
            acquire_timeout_secs: 10,
            min_free_mb: 0,
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        store
    }

    async fn record(store: &Store, id: &str) {
        let event = Stmt::new(
            "INSERT INTO outbox (id, tenant_id, event_type, payload, created_at) \
             VALUES ($1, 'ten_1', 'agent.completed', '{}', '2026-12-03T00:00:00.000Z')",
        )
        .bind(id);
        store.write(vec![event]).await.unwrap();
    }

    /// An event whose id was made first but whose write committed after a later id's (two
    /// drivers, two batches; or two nodes) is fanned out all the same.
    async fn an_event_committed_after_a_later_id_is_not_skipped(store: &Store) {
        record(store, "evt_2").await;
        assert_eq!(store.fan_out_events(100).await.unwrap(), 1);
        record(store, "evt_1").await;
        assert_eq!(
            store.fan_out_events(100).await.unwrap(),
            1,
            "evt_1 was skipped"
        );
        assert_eq!(
            store.fan_out_events(100).await.unwrap(),
            0,
            "each event once"
        );
    }

    #[tokio::test]
    async fn the_outbox_is_read_in_commit_order_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.path().display());
        an_event_committed_after_a_later_id_is_not_skipped(&store(&url).await).await;
    }

    #[tokio::test]
    async fn the_outbox_is_read_in_commit_order_on_postgres() {
        let admin = std::env::var("DGIDGI_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let admin_db = format!("{admin}/test");
        let db = match dgidgi_testkit::postgres::FreshDatabase::create(&admin_db, "outbox").await {
            Ok(db) => db,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: no PostgreSQL at {admin} ({e})");
                return;
            }
            Err(e) => panic!("CI needs PostgreSQL at {admin}: {e}"),
        };
        let store = store(&db.url).await;
        an_event_committed_after_a_later_id_is_not_skipped(&store).await;
        store.close().await;
    }
}
