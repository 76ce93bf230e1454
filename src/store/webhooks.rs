//! Webhook endpoints, deliveries and attempts, and the outbox fan-out.

use std::time::Duration;

use async_trait::async_trait;
use dgidgi_actors::webhook::{Disable, DueDelivery, Outcome, WebhookStore};
use dgidgi_actors::StoreFailure;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{for_actors, json_column, to_json, write_tx, Error, Page, Paged, Result, Store};
use crate::ids::{now_rfc3339, IdKind};
use dgidgi_actors::time::{earlier, later};

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    /// `None`: platform-wide (every tenant's events).
    pub tenant_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_hint: String,
    pub consecutive_failures: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A delivery to queue (due now).
struct NewDelivery<'a> {
    endpoint_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    body: &'a str,
}

/// An endpoint to store, its secret already sealed.
pub struct NewEndpoint {
    pub tenant_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub sealed_secret: String,
    pub secret_hint: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempted_at: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

const ENDPOINT_COLUMNS: &str =
    "id, tenant_id, url, events, description, secret_hint, enabled, disabled_reason, \
                                consecutive_failures, created_at, updated_at";

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint> {
    Ok(Endpoint {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        url: row.try_get("url")?,
        events: json_column(row, "events")?,
        description: row.try_get("description")?,
        enabled: row.try_get::<i64, _>("enabled")? == 1,
        disabled_reason: row.try_get("disabled_reason")?,
        secret_hint: row.try_get("secret_hint")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `now` plus `after`, in the stored form.
impl Store {
    pub async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint> {
        let now = now_rfc3339();
        let endpoint = Endpoint {
            id: IdKind::Webhook.new_id(),
            tenant_id: new.tenant_id,
            url: new.url,
            events: new.events,
            description: new.description,
            enabled: true,
            disabled_reason: None,
            secret_hint: new.secret_hint,
            consecutive_failures: 0,
            created_at: now.clone(),
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, secret, secret_hint, enabled, \
             consecutive_failures, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, $8, $9)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.tenant_id)
        .bind(&endpoint.url)
        .bind(to_json(&endpoint.events))
        .bind(&endpoint.description)
        .bind(&new.sealed_secret)
        .bind(&endpoint.secret_hint)
        .bind(&endpoint.created_at)
        .bind(&endpoint.updated_at)
        .execute(&self.writer)
        .await?;
        Ok(endpoint)
    }

    /// Endpoint `id`, if `owner` may see it (`None`: an operator, who sees all).
    pub async fn get_endpoint(&self, id: &str, owner: Option<&str>) -> Result<Option<Endpoint>> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND ($2 = '' OR tenant_id = $2)");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(owner.unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    /// A tenant's endpoints, or the platform-wide ones (`tenant_id` `None`).
    pub async fn list_endpoints(
        &self,
        tenant_id: Option<&str>,
        page: &Page,
    ) -> Result<Paged<Endpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE (tenant_id = $1 OR ($1 = '' AND tenant_id IS NULL)) \
             AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id.unwrap_or(""))
            .bind(page.before())
            .bind(page.fetch())
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(endpoint_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page.paged(items, |e| &e.id))
    }

    /// Stores an endpoint's changed url, events, description and enabled flag
    /// (enabling again clears the failure count and reason).
    /// Saves the endpoint's settings; `owner` (the caller's tenant, `None` for an operator)
    /// must own it, like every write of a tenant's row.
    pub async fn save_endpoint(&self, endpoint: &Endpoint, owner: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5, \
             disabled_reason = CASE WHEN $5 = 1 THEN NULL ELSE disabled_reason END, \
             consecutive_failures = CASE WHEN $5 = 1 AND enabled = 0 THEN 0 ELSE consecutive_failures END, \
             failing_since = CASE WHEN $5 = 1 AND enabled = 0 THEN NULL ELSE failing_since END, \
             updated_at = $6 WHERE id = $1 AND ($7 = '' OR tenant_id = $7)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.url)
        .bind(to_json(&endpoint.events))
        .bind(&endpoint.description)
        .bind(i64::from(endpoint.enabled))
        .bind(now_rfc3339())
        .bind(owner.unwrap_or(""))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Deletes the endpoint (`owner` as for [`Store::save_endpoint`]) and fails what it had pending.
    pub async fn delete_endpoint(&self, id: &str, owner: Option<&str>) -> Result<()> {
        write_tx!(self, |tx| {
            let deleted = sqlx::query(
                "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2 = '' OR tenant_id = $2)",
            )
            .bind(id)
            .bind(owner.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            if deleted.rows_affected() == 0 {
                return Ok(());
            }
            sqlx::query("UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL WHERE endpoint_id = $1 AND status = 'pending'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// Every endpoint's sealed secrets: (id, secret, previous secret).
    pub async fn webhook_secrets(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query("SELECT id, secret, previous_secret FROM webhook_endpoints")
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("secret")?,
                    r.try_get("previous_secret")?,
                ))
            })
            .collect()
    }

    /// Replaces an endpoint's sealed secrets (after they were sealed again).
    pub async fn set_webhook_secrets(
        &self,
        id: &str,
        secret: &str,
        previous: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1")
            .bind(id)
            .bind(secret)
            .bind(previous)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// A new secret; the previous one keeps signing until `previous_until`.
    pub async fn rotate_secret(
        &self,
        id: &str,
        owner: Option<&str>,
        sealed: &str,
        hint: &str,
        previous_until: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $4, secret = $2, \
             secret_hint = $3, updated_at = $5 WHERE id = $1 AND ($6 = '' OR tenant_id = $6)",
        )
        .bind(id)
        .bind(sealed)
        .bind(hint)
        .bind(previous_until)
        .bind(now_rfc3339())
        .bind(owner.unwrap_or(""))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

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
        self.insert_delivery(&self.writer, &delivery).await?;
        let row = sqlx::query("SELECT id FROM webhook_deliveries WHERE event_id = $1")
            .bind(&event_id)
            .fetch_one(&self.writer)
            .await?;
        Ok(row.try_get("id")?)
    }

    async fn insert_delivery<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
        &self,
        executor: E,
        d: &NewDelivery<'_>,
    ) -> Result<()> {
        sqlx::query(
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
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Sends delivery `id` of `endpoint_id` again, now.
    pub async fn redeliver(&self, endpoint_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, updated_at = $3 \
             WHERE id = $1 AND endpoint_id = $2",
        )
        .bind(id)
        .bind(endpoint_id)
        .bind(now_rfc3339())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
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

    async fn fan_out_events(&self, limit: usize) -> Result<usize> {
        let cursor = self.setting_or_init("webhooks.cursor", String::new).await?;
        let events = sqlx::query(
            "SELECT id, tenant_id, event_type, payload, created_at FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(&cursor)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let last: String = last.try_get("id")?;
        write_tx!(self, |tx| {
            for event in &events {
                let (id, tenant, kind, created): (String, String, String, String) = (
                    event.try_get("id")?,
                    event.try_get("tenant_id")?,
                    event.try_get("event_type")?,
                    event.try_get("created_at")?,
                );
                // Endpoints of the event's tenant and platform-wide ones, that existed when it happened.
                let endpoints = sqlx::query(
                    "SELECT id, events FROM webhook_endpoints WHERE enabled = 1 AND (tenant_id = $1 OR tenant_id IS NULL) \
                     AND created_at <= $2",
                )
                .bind(&tenant)
                .bind(&created)
                .fetch_all(&mut *tx)
                .await?;
                for endpoint in &endpoints {
                    let subscribed: Vec<String> = json_column(endpoint, "events")?;
                    if !subscribed.contains(&kind) {
                        continue;
                    }
                    let payload: Value = json_column(event, "payload")?;
                    let body =
                        json!({ "type": kind, "timestamp": created, "data": payload }).to_string();
                    let endpoint_id: String = endpoint.try_get("id")?;
                    self.insert_delivery(
                        &mut *tx,
                        &NewDelivery {
                            endpoint_id: &endpoint_id,
                            event_id: &id,
                            event_type: &kind,
                            body: &body,
                        },
                    )
                    .await?;
                }
            }
            sqlx::query("UPDATE runtime_settings SET value = $2 WHERE name = $1")
                .bind("webhooks.cursor")
                .bind(&last)
                .execute(&mut *tx)
                .await?;
            Ok(events.len())
        })
    }
}

#[async_trait]
impl WebhookStore for Store {
    async fn fan_out(&self, limit: usize) -> Result<usize, StoreFailure> {
        for_actors(self.fan_out_events(limit).await)
    }

    async fn due_deliveries(&self, limit: usize) -> Result<Vec<DueDelivery>, StoreFailure> {
        let now = now_rfc3339();
        let rows = sqlx::query(
            "SELECT d.id, d.endpoint_id, e.url, d.body, d.attempts, e.secret, e.previous_secret, \
             e.previous_secret_expires_at FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled = 1 ORDER BY d.next_attempt_at LIMIT $2",
        )
        .bind(&now)
        .bind(limit as i64)
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
            write_tx!(self, |tx| {
                sqlx::query(
                    "INSERT INTO webhook_attempts (id, delivery_id, attempted_at, status_code, latency_ms, error, next_retry_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(IdKind::Attempt.new_id())
                .bind(&delivery.id)
                .bind(&now)
                .bind(status_code)
                .bind(latency as i64)
                .bind(&error)
                .bind(&next)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, \
                     last_status = $4, last_error = $5, updated_at = $6 WHERE id = $1",
                )
                .bind(&delivery.id)
                .bind(state)
                .bind(&next)
                .bind(status_code)
                .bind(&error)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
                match outcome {
                    Outcome::Delivered { .. } => {
                        sqlx::query(
                            "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL WHERE id = $1",
                        )
                        .bind(&delivery.endpoint_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Outcome::Gone { .. } => {
                        sqlx::query(
                            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = 'the receiver answered 410 Gone', \
                             updated_at = $2 WHERE id = $1",
                        )
                        .bind(&delivery.endpoint_id)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Outcome::Failed { .. } => {
                        // Disabled only once the failures have gone on long enough: a burst
                        // during a short outage fails many attempts within seconds.
                        let cutoff = earlier(disable.failing_for);
                        sqlx::query(
                            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, \
                             failing_since = COALESCE(failing_since, $3), \
                             enabled = CASE WHEN consecutive_failures + 1 >= $2 AND COALESCE(failing_since, $3) <= $4 \
                             THEN 0 ELSE enabled END, \
                             disabled_reason = CASE WHEN consecutive_failures + 1 >= $2 AND COALESCE(failing_since, $3) <= $4 \
                             THEN 'consecutive failed attempts for longer than webhooks.disable_after_secs' ELSE disabled_reason END WHERE id = $1",
                        )
                        .bind(&delivery.endpoint_id)
                        .bind(i64::from(disable.failures))
                        .bind(&now)
                        .bind(&cutoff)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Ok(())
            })
        };
        for_actors(write.await)
    }
}
