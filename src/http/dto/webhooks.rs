use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::all;

use crate::store;

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
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

impl From<store::Endpoint> for Endpoint {
    fn from(e: store::Endpoint) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            events: e.events,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            secret_hint: e.secret_hint,
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub attempted_at: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
}

impl From<store::Attempt> for Attempt {
    fn from(a: store::Attempt) -> Self {
        Self {
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
            next_retry_at: a.next_retry_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
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

impl From<store::Delivery> for Delivery {
    fn from(d: store::Delivery) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: all(d.attempts),
            next_attempt_at: d.next_attempt_at,
            payload: d.payload,
            created_at: d.created_at,
        }
    }
}
