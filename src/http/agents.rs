//! Agents: create, list, read, change, delete.

use actix_web::web::{Data, Path};
use actix_web::{delete, get, patch, post};
use dgidgi_actors::tools::{McpRef, TOOL_NAMES};
use serde::Deserialize;
use serde_json::Value;

use super::dto;
use super::envelope::Reply;
use super::extract::{nullable, scope, Acting, Json};
use super::{optional_text, text, ApiError, AppState};
use crate::ids::{now_rfc3339, IdKind};
use crate::store::{Agent, AgentConfig};
use dgidgi_actors::agent::{Approvals, Autonomy, Every};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigBody {
    #[serde(alias = "autonomy_level")]
    autonomy_level: Option<String>,
    #[serde(alias = "max_steps")]
    max_steps: Option<u32>,
    temperature: Option<f32>,
    #[serde(alias = "timeout_seconds")]
    timeout_seconds: Option<u64>,
    /// The tools whose calls wait for a human's yes: `"all"` or a list of tool names.
    approvals: Option<Value>,
    #[serde(alias = "approval_timeout_seconds")]
    approval_timeout_seconds: Option<u64>,
    /// The most LLM tokens one run may use.
    #[serde(alias = "max_tokens_per_run")]
    max_tokens_per_run: Option<u64>,
    /// The most one run may cost, in US dollars (by the configured prices).
    #[serde(alias = "max_cost_per_run")]
    max_cost_per_run: Option<f64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    name: String,
    description: Option<String>,
    #[serde(alias = "systemPrompt")]
    system_prompt: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    #[serde(alias = "fallbackProviders")]
    fallbacks: Option<Vec<String>>,
    tools: Option<Vec<String>>,
    config: Option<ConfigBody>,
    #[serde(alias = "projectId")]
    project_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", alias = "systemPrompt")]
    system_prompt: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    provider: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    model: Option<Option<String>>,
    #[serde(alias = "fallbackProviders")]
    fallbacks: Option<Vec<String>>,
    tools: Option<Vec<String>>,
    config: Option<ConfigBody>,
    #[serde(default, deserialize_with = "nullable", alias = "projectId")]
    project_id: Option<Option<String>>,
}

#[utoipa::path(
    tag = "agents",
    params(crate::http::openapi::TenantParam),
    request_body = CreateAgent,
    responses((status = 201, body = crate::http::openapi::Envelope<dto::Agent>), crate::http::openapi::Errors)
)]
#[post("/agents")]
pub async fn create_agent(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    body: Json<CreateAgent>,
) -> Result<Reply<dto::Agent>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let body = body.0;
    let now = now_rfc3339();
    let base = AgentConfig {
        autonomy_level: Autonomy::Medium,
        ..AgentConfig::default()
    };
    let agent = Agent {
        id: IdKind::Agent.new_id(),
        tenant_id: tenant_id.clone(),
        project_id: project(&state, &tenant_id, body.project_id).await?,
        name: text("name", &body.name, 1, 200)?,
        description: optional_text("description", body.description.as_deref(), 2000)?,
        system_prompt: optional_text("system_prompt", body.system_prompt.as_deref(), 32_000)?,
        provider: body
            .provider
            .map(|p| provider(&state, "provider", p))
            .transpose()?,
        model: optional_text("model", body.model.as_deref(), 200)?,
        fallbacks: body
            .fallbacks
            .map(|f| fallbacks(&state, f))
            .transpose()?
            .unwrap_or_default(),
        tools: match body.tools {
            Some(names) => tools(&state, &tenant_id, names).await?,
            None => Vec::new(),
        },
        config: config(base, body.config)?,
        created_at: now.clone(),
        updated_at: now,
    };
    state.store.create_agent(&agent).await?;
    Ok(Reply::created(agent))
}

#[utoipa::path(
    tag = "agents",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Agent>>), crate::http::openapi::Errors)
)]
#[get("/agents")]
pub async fn list_agents(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
) -> Result<Reply<Vec<dto::Agent>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    let page = state.store.list_agents(&tenant_id, &query.page()?).await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "agents",
    params(("id" = String, Path, description = "Agent id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Agent>), crate::http::openapi::Errors)
)]
#[get("/agents/{id}")]
pub async fn get_agent(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::Agent>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    Ok(Reply::ok(find_agent(&state, &tenant_id, &id).await?))
}

#[utoipa::path(
    tag = "agents",
    params(("id" = String, Path, description = "Agent id"), crate::http::openapi::TenantParam),
    request_body = UpdateAgent,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Agent>), crate::http::openapi::Errors)
)]
#[patch("/agents/{id}")]
pub async fn update_agent(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<UpdateAgent>,
) -> Result<Reply<dto::Agent>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let mut agent = find_agent(&state, &tenant_id, &id).await?;
    let body = body.0;
    if let Some(name) = body.name {
        agent.name = text("name", &name, 1, 200)?;
    }
    if let Some(v) = body.description {
        agent.description = optional_text("description", v.as_deref(), 2000)?;
    }
    if let Some(v) = body.system_prompt {
        agent.system_prompt = optional_text("system_prompt", v.as_deref(), 32_000)?;
    }
    if let Some(v) = body.provider {
        agent.provider = v.map(|p| provider(&state, "provider", p)).transpose()?;
    }
    if let Some(v) = body.model {
        agent.model = optional_text("model", v.as_deref(), 200)?;
    }
    if let Some(v) = body.fallbacks {
        agent.fallbacks = fallbacks(&state, v)?;
    }
    if let Some(v) = body.tools {
        agent.tools = tools(&state, &tenant_id, v).await?;
    }
    if let Some(v) = body.project_id {
        agent.project_id = project(&state, &tenant_id, v).await?;
    }
    agent.config = config(agent.config, body.config)?;
    agent.updated_at = now_rfc3339();
    if !state.store.save_agent(&agent).await? {
        return Err(ApiError::not_found("agent", &id));
    }
    Ok(Reply::ok(agent))
}

#[utoipa::path(
    tag = "agents",
    params(("id" = String, Path, description = "Agent id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<crate::http::openapi::Deleted>), crate::http::openapi::Errors)
)]
#[delete("/agents/{id}")]
pub async fn delete_agent(
    acting: Acting<scope::AgentsWrite>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    if !state.store.delete_agent(&tenant_id, &id).await? {
        return Err(ApiError::not_found("agent", &id));
    }
    Ok(Reply::ok(
        serde_json::json!({ "id": id.as_str(), "deleted": true }),
    ))
}

pub async fn find_agent(state: &AppState, tenant_id: &str, id: &str) -> Result<Agent, ApiError> {
    state
        .store
        .get_agent(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", id))
}

/// A project id of the tenant (another tenant's is a 404, as a missing one).
pub async fn project(
    state: &AppState,
    tenant_id: &str,
    id: Option<String>,
) -> Result<Option<String>, ApiError> {
    match id.filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(id) => match state.store.get_project(tenant_id, &id).await? {
            Some(p) => Ok(Some(p.id)),
            None => Err(ApiError::not_found("project", &id)),
        },
    }
}

fn provider(state: &AppState, field: &str, name: String) -> Result<String, ApiError> {
    if state.providers.get(&name).is_some() {
        Ok(name)
    } else {
        let known = state.providers.names();
        Err(ApiError::invalid(
            field,
            format!(
                "no provider named '{name}'; configured: {}",
                known.join(", ")
            ),
        ))
    }
}

fn fallbacks(state: &AppState, names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names.len() > 5 {
        return Err(ApiError::invalid(
            "fallbacks",
            "at most 5 fallback providers",
        ));
    }
    names
        .into_iter()
        .map(|n| provider(state, "fallbacks", n))
        .collect()
}

/// An agent's tools: built-in names, and `mcp:<server>/<tool>` or `mcp:<server>/*` for
/// the tools of the tenant's registered MCP servers (as they listed them).
async fn tools(
    state: &AppState,
    tenant_id: &str,
    names: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    if names.len() > 64 {
        return Err(ApiError::invalid("tools", "at most 64 entries"));
    }
    let servers: Vec<&str> = names
        .iter()
        .filter_map(|n| McpRef::parse(n))
        .map(|r| r.server)
        .collect();
    let registered = state.store.mcp_servers_named(tenant_id, &servers).await?;
    let mut out = Vec::new();
    for name in names {
        if let Some(wanted) = McpRef::parse(&name) {
            let Some(server) = registered.iter().find(|s| s.name == wanted.server) else {
                return Err(ApiError::invalid(
                    "tools",
                    format!("'{name}': no MCP server named '{}' (POST /api/v1/mcp-servers registers one)", wanted.server),
                ));
            };
            if wanted.tool != "*" && !server.tools.iter().any(|t| t.name == wanted.tool) {
                return Err(ApiError::invalid(
                    "tools",
                    format!("'{name}': the MCP server '{}' lists no tool '{}' (refresh it if it has one now)", server.name, wanted.tool),
                ));
            }
        } else if !TOOL_NAMES.contains(&name.as_str()) {
            return Err(ApiError::invalid(
                "tools",
                format!(
                    "unknown tool '{name}'; built-in: {}, or mcp:<server>/<tool>",
                    TOOL_NAMES.join(", ")
                ),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `base` with the fields `body` names, checked.
fn config(mut base: AgentConfig, body: Option<ConfigBody>) -> Result<AgentConfig, ApiError> {
    let Some(body) = body else { return Ok(base) };
    if let Some(level) = body.autonomy_level {
        base.autonomy_level = Autonomy::parse(&level).ok_or_else(|| {
            ApiError::invalid("config.autonomyLevel", "must be low, medium or high")
        })?;
    }
    if let Some(n) = body.max_steps {
        if !(1..=64).contains(&n) {
            return Err(ApiError::invalid("config.maxSteps", "must be from 1 to 64"));
        }
        base.max_steps = Some(n);
    }
    if let Some(t) = body.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "config.temperature",
                "must be from 0 to 2",
            ));
        }
        base.temperature = Some(t);
    }
    if let Some(s) = body.timeout_seconds {
        if !(1..=86_400).contains(&s) {
            return Err(ApiError::invalid(
                "config.timeoutSeconds",
                "must be from 1 to 86400",
            ));
        }
        base.timeout_seconds = Some(s);
    }
    if let Some(approvals) = body.approvals {
        base.approvals = self::approvals(approvals)?;
    }
    if let Some(s) = body.approval_timeout_seconds {
        if !(1..=30 * 86_400).contains(&s) {
            return Err(ApiError::invalid(
                "config.approvalTimeoutSeconds",
                "must be from 1 to 2592000 (30 days)",
            ));
        }
        base.approval_timeout_seconds = Some(s);
    }
    if let Some(n) = body.max_tokens_per_run {
        if !(1..=1_000_000_000).contains(&n) {
            return Err(ApiError::invalid(
                "config.maxTokensPerRun",
                "must be from 1 to 1000000000",
            ));
        }
        base.max_tokens_per_run = Some(n);
    }
    if let Some(usd) = body.max_cost_per_run {
        base.max_cost_per_run_micros = Some(super::tenants::dollars("config.maxCostPerRun", usd)?);
    }
    Ok(base)
}

/// `config.approvals`: `"all"`, a list of tool names (built-in, `mcp:<server>/<tool>` or
/// `mcp:<server>/*`; empty: none), or null (none).
fn approvals(value: Value) -> Result<Option<Approvals>, ApiError> {
    let invalid = |why: String| ApiError::invalid("config.approvals", why);
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s == "all" => Ok(Some(Approvals::Every(Every::All))),
        Value::Array(items) => {
            let mut names = Vec::new();
            for item in items {
                let Some(name) = item.as_str() else {
                    return Err(invalid("must list tool names".into()));
                };
                if !TOOL_NAMES.contains(&name) && McpRef::parse(name).is_none() {
                    return Err(invalid(format!(
                        "unknown tool '{name}'; built-in: {}, or mcp:<server>/<tool> (or /*)",
                        TOOL_NAMES.join(", ")
                    )));
                }
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
            Ok((!names.is_empty()).then_some(Approvals::Tools(names)))
        }
        _ => Err(invalid("must be \"all\" or a list of tool names".into())),
    }
}
