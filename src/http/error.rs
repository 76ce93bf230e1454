//! The one API error type: each variant maps to a status and one of the seed's codes, and
//! renders the seed's error envelope. Causes of 5xx are logged, never shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use dgidgi_actors::tenant;
use serde::Serialize;
use serde_json::{json, Value};

use super::envelope::{json_response, Meta};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A feature the tenant's plan does not include: 403 FORBIDDEN whose details name the
    /// feature, the plan and the plan needed.
    #[error("{message}")]
    PlanRequired { message: String, details: Value },
    #[error("{message}")]
    NotFound { message: String, details: Value },
    #[error("{message}")]
    Validation { message: String, details: Value },
    #[error("{message}")]
    Conflict { message: String, details: Value },
    /// An `Idempotency-Key` reused with a different request (IETF idempotency draft: 422).
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("Too many requests")]
    RateLimited,
    /// Too much at once of something other than requests (a chat session's queue).
    #[error("{0}")]
    TooMany(String),
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    /// The cause is logged; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 404 for `resource` (`project`) with `id`, named in `details` as `project_id`.
    pub fn not_found(resource: &str, id: &str) -> Self {
        let mut name = resource.to_string();
        if let Some(first) = name.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        ApiError::NotFound {
            message: format!("{} not found", name.replace('_', " ")),
            details: json!({ format!("{resource}_id"): id }),
        }
    }

    /// A 400 naming the offending `field`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::Validation {
            message: format!("{field}: {reason}"),
            details: json!({ "field": field, "reason": reason }),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) | ApiError::PlanRequired { .. } => "FORBIDDEN",
            ApiError::NotFound { .. } => "RESOURCE_NOT_FOUND",
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::Conflict { .. } => "CONFLICT",
            ApiError::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            ApiError::RateLimited | ApiError::TooMany(_) => "RATE_LIMIT_EXCEEDED",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    fn details(&self) -> Option<&Value> {
        match self {
            ApiError::NotFound { details, .. }
            | ApiError::Validation { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::PlanRequired { details, .. } => Some(details),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: String,
    /// Always present, as the contract shows: an empty object when there is nothing more.
    details: &'a Value,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
    meta: Meta,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::PlanRequired { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Validation { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited | ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Internal(cause) => {
                tracing::error!(request_id = %super::envelope::request_id(), %cause, "internal error");
                "Internal server error".to_string()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(request_id = %super::envelope::request_id(), %cause, "service unavailable");
                "Service temporarily unavailable, retry shortly".to_string()
            }
            other => other.to_string(),
        };
        let empty = json!({});
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code(),
                message,
                details: self.details().unwrap_or(&empty),
            },
            meta: Meta::now(None),
        };
        let mut res = json_response(self.status_code(), &body);
        if matches!(self, ApiError::Unavailable(_)) {
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("2"),
            );
        }
        res
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Conflict(message) => ApiError::Conflict {
                message,
                details: json!({}),
            },
            store::Error::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<dgidgi_actors::StoreFailure> for ApiError {
    fn from(e: dgidgi_actors::StoreFailure) -> Self {
        if e.unavailable {
            ApiError::Unavailable(e.message)
        } else {
            ApiError::Internal(e.message)
        }
    }
}

impl From<dgidgi_actors::run::Error> for ApiError {
    fn from(e: dgidgi_actors::run::Error) -> Self {
        use dgidgi_actors::run::Error;
        match e {
            Error::Tenant(e) => e.into(),
            Error::Busy(max) => ApiError::TooMany(format!(
                "{max} runs of this tenant already wait for a slot (runs.max_queued_per_tenant); \
                 retry when some have started"
            )),
            Error::BudgetSpent(which) => ApiError::TooMany(format!(
                "This tenant's monthly {which} budget is spent (tenant settings \
                 monthly_token_budget / monthly_cost_budget_usd); runs start again next month \
                 or once the budget is raised"
            )),
            Error::Store(failure) => failure.into(),
        }
    }
}

impl From<tenant::Error> for ApiError {
    fn from(e: tenant::Error) -> Self {
        match e {
            tenant::Error::NotFound => ApiError::not_found("tenant", ""),
            tenant::Error::Invalid { field, reason } => ApiError::invalid(&field, reason),
            tenant::Error::Store(failure) => failure.into(),
            tenant::Error::Unavailable(cause) => ApiError::Unavailable(cause),
        }
    }
}
