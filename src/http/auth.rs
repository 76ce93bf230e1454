//! `POST /api/v1/auth/token`: exchanges an API key for a short-lived JWT.

use actix_web::post;
use actix_web::web::Data;
use actix_web::HttpRequest;
use serde::{Deserialize, Serialize};

use super::envelope::Reply;
use super::extract::{parse_json, read_body};
use super::{unix_now, ApiError, AppState};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(alias = "apiKey")]
    api_key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    expires_at: String,
    tenant_id: Option<String>,
    scopes: Vec<String>,
}

/// The key comes as the Bearer header (any body is then ignored) or in the body
/// (`{"api_key": ...}`).
#[utoipa::path(
    tag = "auth",
    request_body = Option<TokenRequest>,
    responses((status = 200, body = crate::http::openapi::Envelope<TokenResponse>, description = "A JWT for the key (the Bearer header, or the body's api_key)"), (status = 400, body = crate::http::openapi::ErrorEnvelope), (status = 401, body = crate::http::openapi::ErrorEnvelope)),
    security(())
)]
#[post("/token")]
pub async fn issue_token(
    req: HttpRequest,
    payload: actix_web::web::Payload,
    state: Data<AppState>,
) -> Result<Reply<TokenResponse>, ApiError> {
    let body = read_body(
        &req,
        payload.into_inner(),
        state.config.server.max_body_bytes,
    )
    .await?;
    // The Bearer header, when it carries a key, is enough whatever the body holds.
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| {
            h.strip_prefix("Bearer ")
                .is_some_and(|k| k.trim().starts_with("chy_"))
        })
        .map(str::to_string);
    let key = match header {
        Some(header) => Some(header),
        None if body.iter().all(u8::is_ascii_whitespace) => None,
        None => Some(format!(
            "Bearer {}",
            parse_json::<TokenRequest>(&body)?.api_key
        )),
    };
    let key = key.filter(|k| k.trim_start_matches("Bearer ").starts_with("chy_"));
    let key = key
        .ok_or_else(|| ApiError::Unauthorized("An API key is required to obtain a token".into()))?;
    let principal = state.authenticate(Some(&key)).await?;
    let now = unix_now();
    let (token, claims) = state.jwt.mint(
        &principal.key_id,
        principal.tenant_id.as_deref(),
        &principal.scopes,
        now,
    );
    let expires_at = chrono::DateTime::from_timestamp(claims.exp as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(Reply::ok(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: state.jwt.ttl_secs,
        expires_at,
        tenant_id: principal.tenant_id,
        scopes: principal.scopes,
    })
    .carrying_secret())
}
