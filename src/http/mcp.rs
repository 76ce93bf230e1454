//! `POST /mcp`: a tenant's agents as the tools of an MCP server (Streamable HTTP, served by
//! `rmcp`, stateless: any node answers any request and nothing waits in one node's
//! memory). Each agent is a tool `run_<name>` taking `{goal, projectId}`; a call runs the
//! agent and answers with the run's output, sending progress notifications while it works
//! when the client asks for them; a client that goes away cancels the run. The caller's
//! key (or JWT) decides the tenant: no other tenant's agent is ever listed or run.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{post, HttpMessage, HttpRequest, HttpResponse};
use dgidgi_actors::agent::Agent;
use dgidgi_actors::events::RunEvent;
use dgidgi_actors::run::{NewRun, RunStatus};
use dgidgi_actors::tools::function_name;
use http_body_util::{BodyExt, Full};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::agents::project;
use super::runs::start;
use super::{text, ApiError, AppState};
use crate::auth::Principal;
use crate::ids::IdKind;
use crate::store::Page;

/// The most agents listed as tools.
const MAX_AGENTS: usize = 1000;

/// The MCP service, built once per process.
pub type McpService = StreamableHttpService<AgentTools, NeverSessionManager>;

/// The service: stateless, its event streams kept alive (and a client that went away
/// noticed) every `streams.heartbeat_secs`.
pub fn service(config: &crate::config::Config) -> McpService {
    let config = StreamableHttpServerConfig::default()
        // Requests are authenticated by key: the Host check against DNS rebinding that
        // protects unauthenticated local servers would only refuse real host names.
        .disable_allowed_hosts()
        .with_legacy_session_mode(false)
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(
            config.streams.heartbeat_secs.max(1),
        )))
        .with_max_request_body_bytes(config.server.max_body_bytes);
    StreamableHttpService::new(
        || Ok(AgentTools),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The Streamable HTTP endpoint (JSON-RPC 2.0 messages; answers are JSON or an SSE stream).
#[utoipa::path(
    tag = "mcp",
    request_body(content = Value, description = "A JSON-RPC 2.0 message of the Model Context Protocol (Streamable HTTP)"),
    responses(
        (status = 200, description = "A JSON-RPC answer, as JSON or as an event stream carrying progress notifications before it", content_type = "text/event-stream"),
        (status = 202, description = "A notification, accepted"),
        crate::http::openapi::Errors
    )
)]
#[post("")]
pub async fn endpoint(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthorized("Missing or invalid authentication".into()))?;
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let mut request = request
        .body(Full::new(body))
        .map_err(|e| ApiError::invalid("request", e.to_string()))?;
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(state.clone());
    let response = state.mcp.handle(request).await;
    let (parts, body) = response.into_parts();
    let mut out = HttpResponse::build(
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in &parts.headers {
        out.append_header((name.as_str(), value.as_bytes()));
    }
    Ok(out.streaming(body.into_data_stream()))
}

/// The MCP server's handler: one per request, knowing nothing until it reads the caller
/// and the application from the request.
#[derive(Clone, Copy)]
pub struct AgentTools;

/// The caller and the application, from the HTTP request the handler answers.
fn caller(
    context: &RequestContext<RoleServer>,
) -> Result<(Principal, Data<AppState>, String), McpError> {
    let parts = context
        .extensions
        .get::<http::request::Parts>()
        .ok_or_else(|| McpError::internal_error("no HTTP request", None))?;
    let principal = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| McpError::invalid_request("not authenticated", None))?;
    let state = parts
        .extensions
        .get::<Data<AppState>>()
        .cloned()
        .ok_or_else(|| McpError::internal_error("no application state", None))?;
    let tenant_id = principal.tenant_id.clone().ok_or_else(|| {
        McpError::invalid_request(
            "an operator key has no agents: call /mcp with a tenant's key",
            None,
        )
    })?;
    Ok((principal, state, tenant_id))
}

fn need(principal: &Principal, scope: &str) -> Result<(), McpError> {
    if principal.has(scope) {
        Ok(())
    } else {
        Err(McpError::invalid_request(
            format!("This key lacks the '{scope}' scope"),
            None,
        ))
    }
}

fn store_error(e: impl std::fmt::Display) -> McpError {
    McpError::internal_error(format!("the store did not answer: {e}"), None)
}

/// The tool name of an agent: `run_` and its name in the characters tool names allow.
fn tool_name(agent: &Agent) -> String {
    function_name(&format!("run_{}", agent.name))
}

/// The tenant's agents by tool name (an agent whose name another agent's tool already has
/// is named by its id: `run_agt_...`).
async fn agents(state: &AppState, tenant_id: &str) -> Result<Vec<(String, Agent)>, McpError> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = state
            .store
            .list_agents(tenant_id, &Page { limit: 100, cursor })
            .await
            .map_err(store_error)?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) if all.len() < MAX_AGENTS => cursor = Some(next),
            _ => break,
        }
    }
    // Oldest first, so that a name keeps its tool as agents are added.
    all.reverse();
    let mut named = HashSet::new();
    Ok(all
        .into_iter()
        .map(|agent| {
            let mut name = tool_name(&agent);
            if named.contains(&name) {
                name = format!("run_{}", agent.id);
            }
            named.insert(name.clone());
            (name, agent)
        })
        .collect())
}

fn tool(name: String, agent: &Agent) -> Tool {
    let description = agent.description.clone().unwrap_or_else(|| {
        format!(
            "Runs the agent '{}' on a goal and answers with its output.",
            agent.name
        )
    });
    let schema = json!({
        "type": "object",
        "required": ["goal"],
        "properties": {
            "goal": { "type": "string", "description": "What the agent should do" },
            "projectId": {
                "type": "string",
                "description": if agent.project_id.is_some() {
                    "The project to work in (default: the agent's)"
                } else {
                    "The project to work in (required: the agent has none)"
                }
            }
        }
    });
    let Value::Object(schema) = schema else {
        unreachable!("a JSON object")
    };
    Tool::new(name, description, schema)
}

impl ServerHandler for AgentTools {
    fn get_info(&self) -> InitializeResult {
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions(
                "Each tool runs one of your agents on a goal and answers with the run's output.",
            );
        info.server_info = Implementation::new("dgidgi", env!("CARGO_PKG_VERSION"));
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (principal, state, tenant_id) = caller(&context)?;
        need(&principal, "agents:read")?;
        let tools = agents(&state, &tenant_id)
            .await?
            .into_iter()
            .map(|(name, agent)| tool(name, &agent))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let (principal, state, tenant_id) = caller(&context)?;
        need(&principal, "agents:execute")?;
        let Some((_, agent)) = agents(&state, &tenant_id)
            .await?
            .into_iter()
            .find(|(name, _)| *name == request.name)
        else {
            return Err(McpError::invalid_params(
                format!("no tool '{}'", request.name),
                None,
            ));
        };
        let arguments = request.arguments.unwrap_or_default();
        let goal = arguments
            .get("goal")
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::invalid_params("goal (a string) is required", None))?;
        let goal = text("goal", goal, 1, 20_000).map_err(invalid)?;
        let project_id = arguments
            .get("projectId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(agent.project_id.clone());
        let project_id = project(&state, &tenant_id, project_id)
            .await
            .map_err(invalid)?
            .ok_or_else(|| {
                McpError::invalid_params("projectId is required: the agent has no project", None)
            })?;
        let id = IdKind::Run.new_id();
        let started = start(
            &state,
            NewRun {
                id: id.clone(),
                tenant_id: tenant_id.clone(),
                agent: &agent,
                project_id,
                goal,
                input: Value::Null,
                reply: None,
            },
            true,
        )
        .await;
        let events = match started {
            Ok((_, Some(events))) => events,
            Ok((_, None)) => unreachable!("a followed run is subscribed"),
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "the run was not started: {}",
                    ApiError::from(e)
                ))])
                .into())
            }
        };
        let progress = context.meta.get_progress_token();
        let followed = follow(&context, events, progress).await;
        state.runs.hub().release(&id);
        if !followed {
            // The client went away (or cancelled): the run it asked for stops too.
            let _ = state.runs.cancel(&id).await;
            return Err(McpError::internal_error("cancelled", None));
        }
        let run = state
            .store
            .get_run(&tenant_id, &agent.id, &id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| McpError::internal_error("the run is gone", None))?;
        let summary = json!({
            "runId": run.id,
            "agentId": run.agent_id,
            "status": run.status.as_str(),
            "output": run.output,
            "usage": run.usage,
        });
        let mut result = match run.status {
            RunStatus::Completed => CallToolResult::success(vec![ContentBlock::text(
                run.output.clone().unwrap_or_default(),
            )]),
            RunStatus::RequiresAction => CallToolResult::error(vec![ContentBlock::text(format!(
                "run {} waits for a human's approval of its tool calls \
                 (POST /api/v1/agents/{}/runs/{}/approve)",
                run.id, run.agent_id, run.id
            ))]),
            status => {
                let why = run
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .unwrap_or_else(|| status.as_str().to_string());
                CallToolResult::error(vec![ContentBlock::text(format!(
                    "run {} ended {}: {why}",
                    run.id,
                    status.as_str()
                ))])
            }
        };
        result.structured_content = Some(summary);
        Ok(result.into())
    }
}

fn invalid(e: ApiError) -> McpError {
    McpError::invalid_params(e.to_string(), None)
}

/// Follows a run's events until it ends or waits for a human, telling the client of each
/// step and tool call when it gave a progress token. `false` when the request was
/// cancelled (the client disconnected or said so) first.
async fn follow(
    context: &RequestContext<RoleServer>,
    mut events: broadcast::Receiver<Arc<dgidgi_actors::events::StreamEvent>>,
    progress: Option<rmcp::model::ProgressToken>,
) -> bool {
    let mut count = 0.0;
    loop {
        let event = tokio::select! {
            _ = context.ct.cancelled() => return false,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return true,
        };
        if event.is_terminal() || event.kind == RunEvent::REQUIRES_ACTION {
            return true;
        }
        let message: Cow<str> = match event.kind.as_str() {
            RunEvent::STEP_STARTED => format!("step {} started", event.data["step"]).into(),
            RunEvent::TOOL_CALLED => format!(
                "calling {}",
                event.data["name"].as_str().unwrap_or("a tool")
            )
            .into(),
            RunEvent::TOOL_RESULT => format!(
                "{} answered",
                event.data["name"].as_str().unwrap_or("a tool")
            )
            .into(),
            _ => continue,
        };
        if let Some(token) = &progress {
            count += 1.0;
            let note = ProgressNotificationParam::new(token.clone(), count).with_message(message);
            let _ = context.peer.notify_progress(note).await;
        }
    }
}
