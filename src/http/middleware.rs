//! Middleware, outermost first: [`request_context`] (request id, panic guard, access log)
//! on every route; [`authenticate`] (credentials, rate limit, `X-RateLimit-*` headers) and
//! [`idempotency`] (`Idempotency-Key` on every POST) on the authenticated API.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpMessage, HttpResponse, ResponseError};
use futures_util::FutureExt;
use sha2::{Digest, Sha256};

use super::envelope::with_request_id;
use super::error::ApiError;
use super::extract::read_body;
use super::AppState;
use crate::auth::Principal;
use crate::ids::{now_rfc3339, IdKind};
use crate::ratelimit::Decision;
use crate::store::Reservation;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Gives each request an id (`meta.request_id`, `X-Request-Id`), turns a panic anywhere
/// below into a logged 500 envelope, and logs the request.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = IdKind::Request.new_id();
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.path().to_string());
    // Every log line of the request carries its id (and, once authenticated, its tenant).
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %path,
        tenant_id = tracing::field::Empty,
    );
    let outcome = with_request_id(
        id.clone(),
        tracing::Instrument::instrument(
            async {
                match AssertUnwindSafe(next.call(req)).catch_unwind().await {
                    Ok(served) => served.map(ServiceResponse::map_into_boxed_body),
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        // The request was consumed by the panicking service, so the answer travels as
                        // an error that carries its finished response.
                        let mut res = ApiError::Internal(format!("handler panicked: {what}"))
                            .error_response();
                        res.headers_mut()
                            .insert(X_REQUEST_ID, request_id_header(&id));
                        Err(InternalError::from_response("handler panicked", res).into())
                    }
                }
            },
            span.clone(),
        ),
    )
    .await;
    let mut res = match outcome {
        Ok(res) => res,
        Err(e) => {
            record_request(&method, "unmatched", 500, started);
            return Err(e);
        }
    };
    res.headers_mut()
        .insert(X_REQUEST_ID, request_id_header(&id));
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    record_request(&method, &route, status, started);
    let _entered = span.enter();
    tracing::debug!(
        status,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}

/// Requests by method, route pattern (never the raw path: ids would explode the series)
/// and status, with their latency.
fn record_request(method: &Method, route: &str, status: u16, started: Instant) {
    metrics::histogram!(
        "dgidgi_http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route.to_string(),
        "status" => status.to_string(),
    )
    .record(started.elapsed().as_secs_f64());
}

fn request_id_header(id: &str) -> HeaderValue {
    HeaderValue::from_str(id).expect("ids are ascii")
}

/// Authenticates the request (API key or JWT), counts it against the rate limits, makes the
/// [`Principal`] available to handlers and adds the `X-RateLimit-*` headers to the answer.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = req
        .app_data::<Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let credentials = match credentials(&req) {
        Ok(c) => c,
        Err(e) => return Ok(req.error_response(e)),
    };
    let principal = match state.authenticate(credentials.as_deref()).await {
        Ok(p) => p,
        Err(e) => return Ok(req.error_response(e)),
    };
    if let Some(tenant) = &principal.tenant_id {
        tracing::Span::current().record("tenant_id", tenant.as_str());
    }
    let now = unix_now();
    let decision = match state.count_request(&principal, now).await {
        Ok(decision) => decision,
        Err(e) => return Ok(req.error_response(e)),
    };
    if !decision.allowed {
        metrics::counter!("dgidgi_rate_limit_rejections_total").increment(1);
        let mut res = req.error_response(ApiError::RateLimited);
        rate_limit_headers(res.headers_mut(), &decision);
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(decision.retry_after(now)));
        return Ok(res);
    }
    req.extensions_mut().insert(principal);
    let mut res = next.call(req).await?.map_into_boxed_body();
    rate_limit_headers(res.headers_mut(), &decision);
    Ok(res)
}

/// The request's credentials as an `Authorization` value: the one header (two are
/// refused), or on an event stream's GET a JWT in `?access_token=` (a browser's
/// `EventSource` cannot send headers). API keys are never taken from a URL, where they
/// would sit in logs and histories; nor is a token anywhere but on the stream routes.
fn credentials(req: &ServiceRequest) -> Result<Option<String>, ApiError> {
    let mut headers = req.headers().get_all(AUTHORIZATION);
    if let Some(first) = headers.next() {
        if headers.next().is_some() {
            return Err(ApiError::Unauthorized(
                "Send one Authorization header, not several".into(),
            ));
        }
        return Ok(first.to_str().ok().map(str::to_string));
    }
    let token = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .into_iter()
        .find_map(|(k, v)| (k == "access_token").then(|| v.trim().to_string()));
    let Some(token) = token else {
        return Ok(None);
    };
    if token.starts_with("chy_") {
        return Err(ApiError::Unauthorized(
            "API keys are not accepted in URLs: send the key in the Authorization header, \
             or exchange it at POST /api/v1/auth/token for a JWT to put in ?access_token="
                .into(),
        ));
    }
    if req.method() != Method::GET || !req.path().ends_with("/stream") {
        return Err(ApiError::Unauthorized(
            "?access_token= is accepted on event streams only; send the Authorization header"
                .into(),
        ));
    }
    Ok(Some(format!("Bearer {token}")))
}

fn rate_limit_headers(headers: &mut actix_web::http::header::HeaderMap, d: &Decision) {
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(d.limit),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(d.remaining),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(d.reset),
    );
}

/// Honours `Idempotency-Key` on POST: the first response to a (caller, key) is kept and
/// replayed to every retry with the same method, path and body; a retry with another body
/// gets 422, and one that arrives while the first is still running gets 409. Responses of
/// 5xx are not kept, so a retry after a server failure runs again.
pub async fn idempotency(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(raw_key) = req.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if req.method() != Method::POST {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let key = match raw_key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            let e = ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            );
            return Ok(req.error_response(e));
        }
    };
    let state = req
        .app_data::<Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let scope = req
        .extensions()
        .get::<Principal>()
        .map(|p| format!("{}:{}", p.scope_key(), p.key_id));
    let Some(scope) = scope else {
        return Ok(req.error_response(ApiError::Unauthorized(
            "Missing or invalid authentication".into(),
        )));
    };
    let payload = req.take_payload();
    let body = match read_body(req.request(), payload, state.config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return Ok(req.error_response(e)),
    };
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str());
    hasher.update(b" ");
    hasher.update(req.uri().to_string());
    hasher.update(b"\n");
    hasher.update(&body);
    let fingerprint = format!("{:x}", hasher.finalize());

    let reused = || {
        ApiError::IdempotencyKeyReused(
            "Idempotency-Key was already used with a different request".into(),
        )
    };
    match state
        .store
        .claim_idempotency_key(&scope, &key, &fingerprint, &now_rfc3339())
        .await
    {
        Err(e) => return Ok(req.error_response(ApiError::from(e))),
        Ok(Reservation::InFlight { fingerprint: first }) => {
            let e = if first == fingerprint {
                ApiError::Conflict {
                    message: "A request with this Idempotency-Key is still in progress".into(),
                    details: serde_json::json!({ "idempotency_key": key }),
                }
            } else {
                reused()
            };
            return Ok(req.error_response(e));
        }
        Ok(Reservation::Done(first)) => {
            if first.fingerprint != fingerprint {
                return Ok(req.error_response(reused()));
            }
            let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::OK);
            let replay = HttpResponse::build(status)
                .content_type("application/json")
                .insert_header(("idempotent-replayed", "true"))
                .body(first.body);
            return Ok(req.into_response(replay));
        }
        Ok(Reservation::Claimed) => {}
    }

    req.set_payload(actix_web::dev::Payload::from(body));
    let res = next.call(req).await?;
    let status = res.status();
    let (http_req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let bytes = to_bytes(body).await.map_err(|e| {
        let e: Box<dyn std::error::Error> = e.into();
        ApiError::internal(format!("reading response: {e}"))
    });
    let kept = match &bytes {
        Ok(bytes) if !status.is_server_error() => {
            let text = String::from_utf8_lossy(bytes);
            state
                .store
                .complete_idempotency_key(&scope, &key, status.as_u16(), &text)
                .await
        }
        _ => state.store.release_idempotency_key(&scope, &key).await,
    };
    if let Err(e) = kept {
        tracing::error!(error = %e, "idempotency record not saved");
    }
    let response = match bytes {
        Ok(bytes) => head.set_body(BoxBody::new(bytes)),
        Err(e) => e.error_response(),
    };
    Ok(ServiceResponse::new(http_req, response))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
