//! Agent runs: execute (optionally waiting for the end), read, list, cancel, stream.

use actix_web::{get, post};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use dgidgi_actors::events::{EventLog, RunEvent, StreamEvent};
use dgidgi_actors::run::{DecideError, Decision, NewRun, Run};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::agents::{find_agent, project};
use super::dto;
use super::envelope::Reply;
use super::extract::{scope, Acting, Json};
use super::{sse, text, ApiError, AppState};
use crate::ids::IdKind;

/// `"wait": true` (up to the server's limit) or `"wait": <seconds>`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Wait {
    Flag(bool),
    Seconds(u64),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Execute {
    goal: String,
    #[serde(alias = "projectId")]
    project_id: Option<String>,
    input: Option<Value>,
    wait: Option<Wait>,
}

#[utoipa::path(
    tag = "runs",
    params(("id" = String, Path, description = "Agent id"), crate::http::openapi::ExecuteParams),
    request_body = Execute,
    responses((status = 202, body = crate::http::openapi::Envelope<dto::Run>, description = "Queued (or still going when the wait ran out)"), (status = 200, body = crate::http::openapi::Envelope<dto::Run>, description = "Finished within the wait"), crate::http::openapi::Errors)
)]
#[post("/agents/{id}/execute")]
pub async fn execute_agent(
    acting: Acting<scope::AgentsExecute>,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<Execute>,
) -> Result<Reply<dto::Run>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    let agent = find_agent(&state, &tenant_id, &id).await?;
    let body = body.0;
    let goal = text("goal", &body.goal, 1, 20_000)?;
    let project_id = project(
        &state,
        &tenant_id,
        body.project_id.or(agent.project_id.clone()),
    )
    .await?
    .ok_or_else(|| ApiError::invalid("projectId", "is required when the agent has no project"))?;
    let wait_secs = match (body.wait, query.wait()?) {
        (Some(Wait::Seconds(s)), _) | (_, Some(s)) => s,
        (Some(Wait::Flag(true)), None) => state.config.runs.max_wait_secs,
        _ => 0,
    }
    .min(state.config.runs.max_wait_secs);

    let id = IdKind::Run.new_id();
    let (run, events) = start(
        &state,
        NewRun {
            id: id.clone(),
            tenant_id: tenant_id.clone(),
            agent: &agent,
            project_id,
            goal,
            input: body.input.unwrap_or(Value::Null),
            reply: None,
        },
        wait_secs > 0,
    )
    .await?;
    let ended = match events {
        Some(events) => wait_for_end(&state, &run, events, Duration::from_secs(wait_secs)).await,
        None => false,
    };
    let run = reload(&state, &tenant_id, &agent.id, &id).await?;
    let status = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(Reply::with_status(status, run))
}

#[utoipa::path(
    tag = "runs",
    params(("id" = String, Path, description = "Agent id"), ("run_id" = String, Path, description = "Run id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Run>), crate::http::openapi::Errors)
)]
#[get("/agents/{id}/runs/{run_id}")]
pub async fn get_run(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    ids: Path<(String, String)>,
) -> Result<Reply<dto::Run>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    Ok(Reply::ok(reload(&state, &tenant_id, &ids.0, &ids.1).await?))
}

#[utoipa::path(
    tag = "runs",
    params(("id" = String, Path, description = "Agent id"), crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Run>>), crate::http::openapi::Errors)
)]
#[get("/agents/{id}/runs")]
pub async fn list_runs(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Vec<dto::Run>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    find_agent(&state, &tenant_id, &id).await?;
    let page = state
        .store
        .list_runs(&tenant_id, &id, &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "runs",
    params(("id" = String, Path, description = "Agent id"), ("run_id" = String, Path, description = "Run id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Run>), crate::http::openapi::Errors)
)]
#[post("/agents/{id}/runs/{run_id}/cancel")]
pub async fn cancel_run(
    acting: Acting<scope::AgentsExecute>,
    state: Data<AppState>,
    ids: Path<(String, String)>,
) -> Result<Reply<dto::Run>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let run = reload(&state, &tenant_id, &ids.0, &ids.1).await?;
    if run.status.is_terminal() {
        return Err(ApiError::Conflict {
            message: format!("The run has already ended ({})", run.status.as_str()),
            details: json!({ "run_id": run.id, "status": run.status }),
        });
    }
    let events = state.runs.hub().subscribe(run.stream());
    state
        .runs
        .cancel(&run.id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    wait_for_end(&state, &run, events, Duration::from_secs(10)).await;
    Ok(Reply::ok(reload(&state, &tenant_id, &ids.0, &ids.1).await?))
}

/// A human's answers to tool calls a run waits on.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    /// One answer per call, by its id; calls left out keep waiting.
    decisions: Vec<ApproveDecision>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApproveDecision {
    #[serde(alias = "tool_call_id")]
    tool_call_id: String,
    /// Yes (the call runs) or no (the model gets the denial as the tool's result).
    approve: bool,
    /// With a yes: the arguments to run the call with instead of the model's (a JSON object).
    arguments: Option<Value>,
    /// With a no: why, for the model.
    reason: Option<String>,
}

#[utoipa::path(
    tag = "runs",
    params(("id" = String, Path, description = "Agent id"), ("run_id" = String, Path, description = "Run id"), crate::http::openapi::TenantParam),
    request_body = Approve,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Run>, description = "The answers are recorded; the run is queued again once every pending call has one (status `queued`), or still waits (`requires_action`, with the calls left under `pending_tool_calls`)"), crate::http::openapi::Errors)
)]
#[post("/agents/{id}/runs/{run_id}/approve")]
pub async fn approve_run(
    acting: Acting<scope::AgentsExecute>,
    state: Data<AppState>,
    ids: Path<(String, String)>,
    body: Json<Approve>,
) -> Result<Reply<dto::Run>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let run = reload(&state, &tenant_id, &ids.0, &ids.1).await?;
    let body = body.0;
    if body.decisions.is_empty() {
        return Err(ApiError::invalid(
            "decisions",
            "must answer at least one tool call",
        ));
    }
    let mut decisions = Vec::with_capacity(body.decisions.len());
    for (i, d) in body.decisions.into_iter().enumerate() {
        if decisions.iter().any(|(id, _)| id == &d.tool_call_id) {
            return Err(ApiError::invalid(
                &format!("decisions[{i}].toolCallId"),
                "answers a call answered earlier in this request",
            ));
        }
        let arguments = match d.arguments {
            None => None,
            Some(args @ Value::Object(_)) if d.approve => Some(args.to_string()),
            Some(_) if !d.approve => {
                return Err(ApiError::invalid(
                    &format!("decisions[{i}].arguments"),
                    "go with an approval only",
                ))
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("decisions[{i}].arguments"),
                    "must be a JSON object",
                ))
            }
        };
        let reason = d.reason.map(|r| text("reason", &r, 0, 4_000)).transpose()?;
        decisions.push((
            d.tool_call_id,
            Decision {
                approve: d.approve,
                arguments,
                reason,
            },
        ));
    }
    match state.runs.decide(&run.id, decisions).await {
        Ok(_) => {}
        Err(DecideError::Unknown(call)) => {
            return Err(ApiError::invalid(
                "decisions",
                format!("no pending tool call '{call}' in this run"),
            ))
        }
        Err(e @ (DecideError::NotWaiting(_) | DecideError::Answered(_))) => {
            return Err(ApiError::Conflict {
                message: capitalized(&e.to_string()),
                details: json!({ "run_id": run.id }),
            })
        }
        Err(DecideError::Store(e)) => return Err(ApiError::Unavailable(e.to_string())),
    }
    Ok(Reply::ok(reload(&state, &tenant_id, &ids.0, &ids.1).await?))
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[utoipa::path(
    tag = "runs",
    params(("id" = String, Path, description = "Agent id"), ("run_id" = String, Path, description = "Run id"), crate::http::openapi::TenantParam, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-Sent Events of the run: run.started, step.started, token {step, delta}, tool.called, tool.result, step.completed, run.resumed, then run.completed | run.failed | run.cancelled; for a run that writes a chat reply, its events on the session's stream (same ids, each with the reply_id): reply.queued, reply.started, the steps, reply.resumed, then reply.completed | reply.failed | reply.cancelled; id: <seq>; resume with Last-Event-ID", content_type = "text/event-stream"), (status = 204, description = "The run has finished and Last-Event-ID is at or past its last event: nothing more to send"), crate::http::openapi::Errors)
)]
#[get("/agents/{id}/runs/{run_id}/stream")]
pub async fn stream_run(
    req: HttpRequest,
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    ids: Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let Acting {
        tenant_id,
        principal,
        ..
    } = acting;
    let run = reload(&state, &tenant_id, &ids.0, &ids.1).await?;
    let after = sse::last_event_id(&req)?.unwrap_or(0);
    // A finished run resumed at (or past) its last event has nothing more to send.
    if run.status.is_terminal() && after >= last_seq(&state, &run).await? {
        return Ok(sse::finished());
    }
    let slot = sse::StreamSlot::take(&state, &principal)?;
    Ok(sse::respond(
        &req,
        &state,
        slot,
        state.runs.hub().clone(),
        run.stream().to_string(),
        run.view(),
        after,
    ))
}

/// The seq of the last event of `run` (for a chat reply's run, of its reply's end on the
/// session's stream).
async fn last_seq(state: &AppState, run: &Run) -> Result<i64, ApiError> {
    if run.session_id.is_none() {
        return Ok(state.store.last_seq(&run.id, &[]).await?);
    }
    let view = run.view();
    let events = state.store.events_after(run.stream(), 0).await?;
    Ok(events
        .iter()
        .rev()
        .find(|e| view.ends_with(e))
        .map_or(0, |e| e.seq))
}

async fn reload(
    state: &AppState,
    tenant_id: &str,
    agent_id: &str,
    run_id: &str,
) -> Result<Run, ApiError> {
    state
        .store
        .get_run(tenant_id, agent_id, run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", run_id))
}

/// Waits (at most `limit`) for the run's terminal event; true when it came.
/// Submits a run; with `follow`, subscribed to its events first, so that nothing it says
/// (its end included) is missed. A refused run lets go of the subscription.
pub(super) async fn start(
    state: &AppState,
    new: NewRun<'_>,
    follow: bool,
) -> Result<(Run, Option<broadcast::Receiver<Arc<StreamEvent>>>), dgidgi_actors::run::Error> {
    let id = new.id.clone();
    let events = follow.then(|| state.runs.hub().subscribe(&id));
    match state.runs.submit(new).await {
        Ok(run) => Ok((run, events)),
        Err(e) => {
            if events.is_some() {
                state.runs.hub().release(&id);
            }
            Err(e)
        }
    }
}

async fn wait_for_end(
    state: &AppState,
    run: &Run,
    mut events: broadcast::Receiver<Arc<dgidgi_actors::events::StreamEvent>>,
    limit: Duration,
) -> bool {
    let view = run.view();
    let ended = tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Ok(event) if view.ends_with(&event) => return true,
                // A run that waits for a human answers the wait: nothing ends soon.
                Ok(event) if event.kind == RunEvent::REQUIRES_ACTION && view.shows(&event) => {
                    return false
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The channel ends with the run; the store says how.
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    drop(events);
    state.runs.hub().release(run.stream());
    if ended {
        return true;
    }
    // The run may have ended before we looked: the store knows.
    matches!(state.store.get_run_status(&run.id).await, Ok(Some(status)) if status.is_terminal())
}
