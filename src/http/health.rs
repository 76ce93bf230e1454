//! Liveness and readiness, without credentials.

use actix_web::get;
use actix_web::web::Data;
use serde_json::json;

use super::envelope::Reply;
use super::{ApiError, AppState};

/// The process is up and serving.
#[utoipa::path(
    tag = "health",
    responses((status = 200, body = crate::http::openapi::Envelope<serde_json::Value>, description = "Alive")),
    security(())
)]
#[get("/healthz")]
pub async fn healthz() -> Reply<serde_json::Value> {
    Reply::ok(json!({ "status": "ok" }))
}

/// The process can reach its database and write to it (a full disk or a read-only
/// database is not ready).
#[utoipa::path(
    tag = "health",
    responses((status = 200, body = crate::http::openapi::Envelope<serde_json::Value>, description = "Ready (the database takes writes)"), (status = 503, body = crate::http::openapi::ErrorEnvelope, description = "The database does not answer or takes no writes")),
    security(())
)]
#[get("/readyz")]
pub async fn readyz(state: Data<AppState>) -> Result<Reply<serde_json::Value>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not writable: {e}")))?;
    let age = state.heartbeat.age_secs();
    if age > state.config.cluster.lease_secs {
        return Err(ApiError::Unavailable(format!(
            "this node's heartbeat is {age} s old: it may have lost its runs to another node"
        )));
    }
    Ok(Reply::ok(json!({ "status": "ready", "database": "ok" })))
}
