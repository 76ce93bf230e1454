//! The domain-event outbox: events written in the transaction of the change they describe,
//! for the webhook actor to deliver.

use dgidgi_actors::events::DomainEvent;
use serde::Serialize;
use sqlx::Row;

use super::writer::Stmt;
use super::{json_column, to_json, Result, Store};
use crate::ids::{now_rfc3339, IdKind};

/// A recorded domain event (`project.created`, ...).
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEvent {
    pub id: String,
    pub tenant_id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub created_at: String,
}

/// The statement that records `event` with `payload` for `tenant_id`, to commit with the
/// change it reports.
pub(super) fn outbox_row<T: Serialize>(tenant_id: &str, event: DomainEvent, payload: &T) -> Stmt {
    Stmt::new(
        "INSERT INTO outbox (id, tenant_id, event_type, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(IdKind::Event.new_id())
    .bind(tenant_id)
    .bind(event.as_str())
    .bind(to_json(payload))
    .bind(now_rfc3339())
}

impl Store {
    /// A tenant's recorded events, oldest first.
    pub async fn outbox_events(&self, tenant_id: &str) -> Result<Vec<OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, event_type, payload, created_at FROM outbox \
             WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxEvent {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    event_type: row.try_get("event_type")?,
                    payload: json_column(row, "payload")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }
}
