//! The seed's envelopes: `{data, meta}` on success, `{error, meta}` on failure. `meta`
//! carries the request id (also in `X-Request-Id`) and the time of the response.

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, Responder};
use serde::Serialize;

use crate::ids::now_rfc3339;

tokio::task_local! {
    /// The id of the request being served, set by the request-context middleware for the
    /// whole of the request's handling, so that any response built inside it can name it.
    static REQUEST_ID: String;
}

/// Runs `fut` with `id` as the current request id.
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The current request's id (`req_unknown` outside a request).
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "req_unknown".to_string())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Meta {
    pub request_id: String,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl Meta {
    pub fn now(next_cursor: Option<String>) -> Self {
        Self {
            request_id: request_id(),
            timestamp: now_rfc3339(),
            next_cursor,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    data: &'a T,
    meta: Meta,
}

/// A successful answer: `data` in the seed's envelope with a status.
pub struct Reply<T> {
    status: StatusCode,
    data: T,
    next_cursor: Option<String>,
    /// The answer carries a secret: `Cache-Control: no-store`.
    secret: bool,
}

impl<T: Serialize> Reply<T> {
    /// `data` (a wire type, or a domain value that converts into one).
    pub fn ok(data: impl Into<T>) -> Self {
        Self::with_status(StatusCode::OK, data)
    }

    pub fn created(data: impl Into<T>) -> Self {
        Self::with_status(StatusCode::CREATED, data)
    }

    pub fn with_status(status: StatusCode, data: impl Into<T>) -> Self {
        Self {
            status,
            data: data.into(),
            next_cursor: None,
            secret: false,
        }
    }

    /// Marks an answer that carries a secret (a key, a token): no cache may keep it.
    pub fn carrying_secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

impl<W: Serialize> Reply<Vec<W>> {
    /// A list of domain values in their wire shape.
    pub fn list<T>(items: Vec<T>) -> Self
    where
        W: From<T>,
    {
        Self::ok(super::dto::all(items))
    }

    /// A page of a list, with `meta.next_cursor` when another page follows.
    pub fn page<T>(items: Vec<T>, next_cursor: Option<String>) -> Self
    where
        W: From<T>,
    {
        let mut reply = Self::list(items);
        reply.next_cursor = next_cursor;
        reply
    }
}

/// A JSON response with `body` serialized.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(serde_json::to_vec(body).expect("response types serialize"))
}

impl<T: Serialize> Responder for Reply<T> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let mut res = json_response(
            self.status,
            &Envelope {
                data: &self.data,
                meta: Meta::now(self.next_cursor),
            },
        );
        if self.secret {
            res.headers_mut().insert(
                actix_web::http::header::CACHE_CONTROL,
                actix_web::http::header::HeaderValue::from_static("no-store"),
            );
        }
        res
    }
}
