//! A tenant's MCP servers: register (connects and lists the tools), list, read, change,
//! delete, list again (`refresh`), and the tools. Header values are sealed and never shown.

use std::collections::BTreeMap;

use actix_web::web::{Data, Path};
use actix_web::{delete, get, patch, post};
use serde::Deserialize;
use serde_json::{json, Value};

use super::dto;
use super::envelope::Reply;
use super::extract::{scope, Acting, Json};
use super::{outbound_url, ApiError, AppState};
use crate::store::{Error as StoreError, McpServer, NewMcpServer};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServer {
    /// Letters, digits, `_` and `-`, at most 32: agents name its tools `mcp:<name>/<tool>`.
    name: String,
    /// Its Streamable HTTP endpoint.
    url: String,
    /// Sent with every request to it (an `Authorization` header, say); stored sealed.
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMcpServer {
    name: Option<String>,
    url: Option<String>,
    /// Replaces every header (`{}` sends none).
    headers: Option<BTreeMap<String, String>>,
}

fn name(raw: &str) -> Result<String, ApiError> {
    let ok = (1..=32).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(ApiError::invalid(
            "name",
            "must be 1 to 32 letters, digits, '_' or '-'",
        ))
    }
}

fn headers(raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    if raw.len() > 20 {
        return Err(ApiError::invalid("headers", "at most 20 headers"));
    }
    for (name, value) in &raw {
        if http::HeaderName::try_from(name.as_str()).is_err() || value.len() > 8192 {
            return Err(ApiError::invalid(
                "headers",
                format!("'{name}' is not a valid header name, or its value is too long"),
            ));
        }
        if http::HeaderValue::try_from(value.as_str()).is_err() {
            return Err(ApiError::invalid(
                "headers",
                format!("the value of '{name}' is not a valid header value"),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if [
            "host",
            "content-type",
            "content-length",
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ]
        .contains(&lower.as_str())
        {
            return Err(ApiError::invalid(
                "headers",
                format!("'{name}' is set by the MCP transport"),
            ));
        }
    }
    Ok(raw)
}

/// Lists the tools of the server at `url` now; one that does not answer is the caller's
/// `url` to fix.
async fn list(
    state: &AppState,
    name: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> Result<Vec<dgidgi_actors::tools::RemoteTool>, ApiError> {
    state
        .mcp_client
        .list(name, url, headers)
        .await
        .map_err(|why| {
            ApiError::invalid(
                "url",
                format!("the MCP server did not list its tools: {why}"),
            )
        })
}

fn conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(message) => ApiError::Conflict {
            message,
            details: json!({ "field": "name" }),
        },
        other => other.into(),
    }
}

#[utoipa::path(
    tag = "mcp-servers",
    params(crate::http::openapi::TenantParam),
    request_body = CreateMcpServer,
    responses((status = 201, body = crate::http::openapi::Envelope<dto::McpServer>, description = "Connected, its tools listed, and registered"), crate::http::openapi::Errors)
)]
#[post("/mcp-servers")]
pub async fn create_mcp_server(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    body: Json<CreateMcpServer>,
) -> Result<Reply<dto::McpServer>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let body = body.0;
    let name = name(&body.name)?;
    let url = outbound_url(&state, &body.url)?;
    let headers = headers(body.headers.unwrap_or_default())?;
    let tools = list(&state, &name, &url, &headers).await?;
    let server = state
        .store
        .create_mcp_server(
            &tenant_id,
            NewMcpServer {
                sealed_headers: state.mcp_client.seal_headers(&tenant_id, &headers),
                header_names: headers.keys().cloned().collect(),
                name,
                url,
                tools,
            },
        )
        .await
        .map_err(conflict)?;
    Ok(Reply::created(server))
}

#[utoipa::path(
    tag = "mcp-servers",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::McpServer>>), crate::http::openapi::Errors)
)]
#[get("/mcp-servers")]
pub async fn list_mcp_servers(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
) -> Result<Reply<Vec<dto::McpServer>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    let page = state
        .store
        .list_mcp_servers(&tenant_id, &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

async fn find(state: &AppState, tenant_id: &str, id: &str) -> Result<McpServer, ApiError> {
    state
        .store
        .get_mcp_server(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("MCP server", id))
}

#[utoipa::path(
    tag = "mcp-servers",
    params(("id" = String, Path, description = "MCP server id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::McpServer>), crate::http::openapi::Errors)
)]
#[get("/mcp-servers/{id}")]
pub async fn get_mcp_server(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::McpServer>, ApiError> {
    Ok(Reply::ok(find(&state, &acting.tenant_id, &id).await?))
}

#[utoipa::path(
    tag = "mcp-servers",
    params(("id" = String, Path, description = "MCP server id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::McpTool>>, description = "The tools it listed last"), crate::http::openapi::Errors)
)]
#[get("/mcp-servers/{id}/tools")]
pub async fn list_mcp_tools(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Vec<dto::McpTool>>, ApiError> {
    let server = find(&state, &acting.tenant_id, &id).await?;
    Ok(Reply::ok(dto::all(server.tools)))
}

/// Changes the server (and lists its tools again when its address or headers change).
async fn change(
    state: &AppState,
    tenant_id: &str,
    id: &str,
    body: Option<UpdateMcpServer>,
) -> Result<McpServer, ApiError> {
    let mut server = find(state, tenant_id, id).await?;
    let seen = server.updated_at.clone();
    let mut headers = state
        .mcp_client
        .headers(&server)
        .map_err(|why| ApiError::Internal(format!("MCP server {id}: {why}")))?;
    if let Some(body) = body {
        if let Some(new) = body.name {
            server.name = name(&new)?;
        }
        if let Some(new) = body.url {
            server.url = outbound_url(state, &new)?;
        }
        if let Some(new) = body.headers {
            headers = self::headers(new)?;
            server.sealed_headers = state.mcp_client.seal_headers(tenant_id, &headers);
            server.header_names = headers.keys().cloned().collect();
        }
    }
    server.tools = list(state, &server.name, &server.url, &headers).await?;
    let now = crate::ids::now_rfc3339();
    server.tools_listed_at = now.clone();
    server.updated_at = now;
    match state.store.save_mcp_server(&server, &seen).await {
        Ok(()) => Ok(server),
        Err(StoreError::Gone) => Err(ApiError::Conflict {
            message: "The MCP server changed meanwhile; read it and try again".into(),
            details: json!({ "id": id }),
        }),
        Err(e) => Err(conflict(e)),
    }
}

#[utoipa::path(
    tag = "mcp-servers",
    params(("id" = String, Path, description = "MCP server id"), crate::http::openapi::TenantParam),
    request_body = UpdateMcpServer,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::McpServer>, description = "Changed, and its tools listed again"), crate::http::openapi::Errors)
)]
#[patch("/mcp-servers/{id}")]
pub async fn update_mcp_server(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<UpdateMcpServer>,
) -> Result<Reply<dto::McpServer>, ApiError> {
    let server = change(&state, &acting.tenant_id, &id, Some(body.0)).await?;
    Ok(Reply::ok(server))
}

#[utoipa::path(
    tag = "mcp-servers",
    params(("id" = String, Path, description = "MCP server id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::McpServer>, description = "Its tools listed again"), crate::http::openapi::Errors)
)]
#[post("/mcp-servers/{id}/refresh")]
pub async fn refresh_mcp_server(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::McpServer>, ApiError> {
    let server = change(&state, &acting.tenant_id, &id, None).await?;
    Ok(Reply::ok(server))
}

#[utoipa::path(
    tag = "mcp-servers",
    params(("id" = String, Path, description = "MCP server id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<crate::http::openapi::Deleted>), crate::http::openapi::Errors)
)]
#[delete("/mcp-servers/{id}")]
pub async fn delete_mcp_server(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    if !state
        .store
        .delete_mcp_server(&acting.tenant_id, &id)
        .await?
    {
        return Err(ApiError::not_found("MCP server", &id));
    }
    Ok(Reply::ok(json!({ "id": id.as_str(), "deleted": true })))
}
