//! Request extractors whose failures are the seed's VALIDATION_ERROR naming the field:
//! [`Json`] bodies (size-limited, unknown fields refused), list and tenant query
//! parameters, and the authenticated [`Principal`].

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut, Data};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::auth::Principal;
use crate::store::Page;

/// A JSON request body of type `T`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<Data<AppState>>()
            .map_or(256 * 1024, |s| s.config.server.max_body_bytes);
        let body = read_body(req, payload.take(), limit);
        Box::pin(async move { parse_json(&body.await?).map(Json) })
    }
}

/// Reads a whole body of at most `limit` bytes.
pub fn read_body(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> impl Future<Output = Result<Bytes, ApiError>> + 'static {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    async move {
        let too_large = || ApiError::Validation {
            message: format!("request body is larger than {limit} bytes"),
            details: json!({ "field": "body", "limit_bytes": limit }),
        };
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid("body", e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// Deserializes `body` as `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::invalid("body", "a JSON body is required")),
        Some(b'{') => {}
        // serde would read a struct from an array too, by position; the API takes objects only.
        Some(b'[') => return Err(ApiError::invalid("body", "must be a JSON object")),
        // Malformed JSON is reported as such below; any other value is not an object.
        Some(_) if serde_json::from_slice::<serde_json::Value>(body).is_ok() => {
            return Err(ApiError::invalid("body", "must be a JSON object"))
        }
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Validation {
                message: format!("malformed JSON: {inner}"),
                details: json!({ "field": "body", "line": inner.line(), "column": inner.column() }),
            };
        }
        let message = plain_types(&strip_position(&inner.to_string()));
        // serde names a missing or unknown field in its message, below the path it reports.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p)?.split('`').next());
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name.to_string(),
            // An unknown field is already the last segment of the path; a missing one is not.
            (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
                path.to_string()
            }
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "body".to_string(),
            (None, path) => path.to_string(),
        };
        ApiError::invalid(&field, message)
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("body", format!("trailing characters after JSON: {e}")))?;
    Ok(value)
}

/// serde's message with our Rust type names put in words ("expected struct AgentConfig":
/// "expected an object"), so that no internal name reaches the client.
fn plain_types(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = ["struct ", "enum "]
        .iter()
        .filter_map(|w| rest.find(w).map(|i| (i, *w)))
        .min()
    {
        let (i, word) = at;
        out.push_str(&rest[..i]);
        let after = &rest[i + word.len()..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(if word == "struct " {
            "an object"
        } else {
            "one of the accepted values"
        });
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// For `PATCH` bodies: tells an absent field (`None`) from an explicit `null`
/// (`Some(None)`). Use with `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// `?limit=&cursor=&tenant_id=` of list routes, and `?tenant_id=` of item routes.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    /// The tenant an operator acts in; a tenant key may only name its own.
    pub tenant_id: Option<String>,
    /// `?wait=<seconds>` of `execute`.
    wait: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

impl ListQuery {
    pub fn from_request_query(req: &HttpRequest) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(req.query_string())
            .map_err(|e| ApiError::invalid("query", e.to_string()))
    }

    /// `?wait=<seconds>`, checked.
    pub fn wait(&self) -> Result<Option<u64>, ApiError> {
        self.wait
            .as_deref()
            .map(|w| {
                w.parse::<u64>()
                    .map_err(|_| ApiError::invalid("wait", "must be a number of seconds"))
            })
            .transpose()
    }

    /// The page asked for, checked.
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        format!("must be an integer from 1 to {MAX_PAGE}"),
                    ))
                }
            },
        };
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c)
                if c.len() <= 64
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                Some(c.to_string())
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "cursor",
                    "is not a cursor this API returned",
                ))
            }
        };
        Ok(Page { limit, cursor })
    }
}

impl FromRequest for ListQuery {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Self::from_request_query(req))
    }
}

/// A permission a route needs, as a type (`Acting<scope::ProjectsRead>`).
pub trait NeedsScope {
    const SCOPE: &'static str;
}

/// The scopes routes name in their `Acting<...>` argument.
pub mod scope {
    macro_rules! scopes {
        ($($name:ident = $scope:literal),+ $(,)?) => {$(
            #[doc = concat!("The `", $scope, "` scope.")]
            pub struct $name;
            impl super::NeedsScope for $name {
                const SCOPE: &'static str = $scope;
            }
        )+};
    }
    scopes! {
        ProjectsRead = "projects:read",
        ProjectsWrite = "projects:write",
        AgentsRead = "agents:read",
        AgentsWrite = "agents:write",
        AgentsExecute = "agents:execute",
        ChatRead = "chat:read",
        ChatWrite = "chat:write",
        UsersRead = "users:read",
    }
}

/// A tenant-scoped request whose caller holds scope `S`: the tenant it acts in (the key's
/// own, or the one an operator names in `?tenant_id=`), the caller, and the list query.
/// The one place of the "scope, then tenant" preamble of tenant-scoped routes.
pub struct Acting<S> {
    pub tenant_id: String,
    pub principal: Principal,
    pub query: ListQuery,
    scope: std::marker::PhantomData<S>,
}

impl<S: NeedsScope + 'static> FromRequest for Acting<S> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let principal = req.extensions().get::<Principal>().cloned();
        let query = ListQuery::from_request_query(req);
        let state = req.app_data::<Data<AppState>>().cloned();
        Box::pin(async move {
            let principal = principal.ok_or_else(|| {
                ApiError::Unauthorized("Missing or invalid authentication".into())
            })?;
            let query = query?;
            let state = state.expect("AppState is registered");
            let tenant_id = super::in_tenant(&state, &principal, &query, S::SCOPE).await?;
            Ok(Self {
                tenant_id,
                principal,
                query,
                scope: std::marker::PhantomData,
            })
        })
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| ApiError::Unauthorized("Missing or invalid authentication".into())),
        )
    }
}
