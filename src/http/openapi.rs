//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the types they take and return; served at `/api/v1/openapi.json`, read by `/docs`.

use actix_web::get;
use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder, ResponsesBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_actix_web::AppExt;

use super::envelope::Meta;

/// Every answer: `data` and `meta`.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    pub data: T,
    pub meta: Meta,
}

/// Every error: `error` (code, message, details) and `meta`.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    pub meta: Meta,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// UNAUTHORIZED, FORBIDDEN, RESOURCE_NOT_FOUND, VALIDATION_ERROR, CONFLICT,
    /// IDEMPOTENCY_KEY_REUSED, RATE_LIMIT_EXCEEDED, METHOD_NOT_ALLOWED, SERVICE_UNAVAILABLE,
    /// INTERNAL_ERROR.
    pub code: String,
    pub message: String,
    /// What the error is about (`field`, the resource id, the plan needed...); always an
    /// object, empty when there is nothing more to say.
    pub details: Value,
}

/// A deleted resource.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

/// The errors any authenticated operation may answer.
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorEnvelope",
                        ))))
                        .build(),
                )
                .build()
        };
        ResponsesBuilder::new()
            .response(
                "400",
                error("VALIDATION_ERROR: a field, the body or the query is invalid"),
            )
            .response(
                "401",
                error("UNAUTHORIZED: missing, invalid, expired or revoked credentials"),
            )
            .response(
                "403",
                error("FORBIDDEN: a scope, an operator-only route, or a plan gate"),
            )
            .response(
                "404",
                error("RESOURCE_NOT_FOUND (another tenant's ids too)"),
            )
            .response("405", error("METHOD_NOT_ALLOWED"))
            .response(
                "409",
                error("CONFLICT (or the same Idempotency-Key still in flight)"),
            )
            .response(
                "422",
                error("IDEMPOTENCY_KEY_REUSED with a different request"),
            )
            .response("429", error("RATE_LIMIT_EXCEEDED (Retry-After says when)"))
            .response("503", error("SERVICE_UNAVAILABLE"))
            .build()
            .into()
    }
}

/// `?tenant_id=`: the tenant an operator acts in (a tenant key may name only its own).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TenantParam {
    pub tenant_id: Option<String>,
}

/// Keyset pagination, newest first, and the tenant an operator acts in.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `meta.next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub tenant_id: Option<String>,
}

/// `?wait=<seconds>` and `?tenant_id=` of execute.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExecuteParams {
    pub wait: Option<u64>,
    pub tenant_id: Option<String>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (chy_<type>_...) or a JWT from POST /api/v1/auth/token",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DgiDgi One API",
        description = "Multi-tenant agents, runs and chat with streamed tokens (SSE), webhooks, regions and storage.",
    ),
    modifiers(&Security),
    security(("bearer" = [])),
    components(schemas(ErrorEnvelope, ErrorBody, Deleted, Meta)),
    tags(
        (name = "health"), (name = "auth"), (name = "tenants"), (name = "users"), (name = "api-keys"),
        (name = "projects"), (name = "agents"), (name = "runs"), (name = "chat"), (name = "webhooks"),
        (name = "usage"), (name = "mcp-servers"), (name = "mcp"), (name = "regions"), (name = "ops"), (name = "docs"),
    ),
)]
pub struct ApiDoc;

/// The document, with the 3.1 version marker.
pub fn document() -> Value {
    let (_, paths) = actix_web::App::new()
        .into_utoipa_app()
        .configure(super::routes)
        .split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(paths);
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
    with_camel_case_spellings(&mut doc);
    doc
}

/// Request bodies accept each snake_case field under its camelCase spelling too (serde
/// aliases: `projectId` for `project_id`, as the contract's SDK sends them), which utoipa
/// cannot express: each such property gets its camelCase twin in the document. A twin of
/// a required field makes both optional, with the rule said in words.
fn with_camel_case_spellings(doc: &mut Value) {
    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => {
                            found.push(r.trim_start_matches("#/components/schemas/").to_string())
                        }
                        _ => refs(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut requests = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for operation in paths
            .values()
            .filter_map(Value::as_object)
            .flat_map(|p| p.values())
        {
            refs(&operation["requestBody"], &mut requests);
        }
    }
    let camel = |snake: &str| {
        let mut out = String::new();
        let mut upper = false;
        for c in snake.chars() {
            match c {
                '_' => upper = true,
                c if upper => {
                    out.extend(c.to_uppercase());
                    upper = false;
                }
                c => out.push(c),
            }
        }
        out
    };
    for name in requests {
        let schema = &mut doc["components"]["schemas"][&name];
        let Some(properties) = schema["properties"].as_object().cloned() else {
            continue;
        };
        let mut required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
        for (field, property) in properties.iter().filter(|(f, _)| f.contains('_')) {
            let twin = camel(field);
            if properties.contains_key(&twin) {
                continue;
            }
            let was_required = required.iter().any(|r| r == field.as_str());
            required.retain(|r| r != field.as_str());
            let rule = if was_required {
                "; one of the two is required"
            } else {
                ""
            };
            let mut described = property.clone();
            if let Some(object) = described.as_object_mut() {
                object.insert(
                    "description".into(),
                    Value::from(format!(
                        "The same as `{field}`: either spelling is accepted{rule}."
                    )),
                );
            }
            schema["properties"][&twin] = described;
            if was_required {
                let note = format!("Required: `{field}` or `{twin}`.");
                schema["properties"][field.as_str()]["description"] = Value::from(note);
            }
        }
        if schema.get("required").is_some() {
            schema["required"] = Value::Array(required);
        }
    }
}

/// Whether some route serves `path` (with some method): the paths of the document,
/// which come from the registration itself.
pub fn serves(path: &str) -> bool {
    static KNOWN: std::sync::OnceLock<Vec<actix_web::dev::ResourceDef>> =
        std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| {
            document()["paths"]
                .as_object()
                .map(|paths| {
                    paths
                        .keys()
                        .map(|p| actix_web::dev::ResourceDef::new(p.as_str()))
                        .collect()
                })
                .unwrap_or_default()
        })
        .iter()
        .any(|def| def.is_match(path))
}

/// `GET /api/v1/openapi.json`
#[utoipa::path(tag = "docs", security(()),
    responses((status = 200, description = "This document", content_type = "application/json")))]
#[get("/api/v1/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| {
        serde_json::to_string_pretty(&document()).expect("the document serializes")
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_str())
}

/// `GET /docs`: a page that renders the document (no assets from elsewhere).
#[utoipa::path(tag = "docs", security(()),
    responses((status = 200, description = "The documentation page", content_type = "text/html")))]
#[get("/docs")]
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("docs.html"))
}
