//! Chat sessions: create, list, read, delete; post messages (each answered in order by the
//! session's actor); the message history; cancel the reply in flight; the SSE stream.

use actix_web::web::{Data, Path};
use actix_web::{delete, get, post};
use actix_web::{HttpRequest, HttpResponse};
use dgidgi_actors::chat::{self, PostMessage, Session, SessionRequest};
use dgidgi_actors::events::SessionEvent;
use dgidgi_actors::events::View;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::agents::{find_agent, project};
use super::dto;
use super::envelope::Reply;
use super::extract::{scope, Acting, Json};
use super::{optional_text, sse, text, ApiError, AppState};
use crate::ids::{now_rfc3339, IdKind};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(alias = "projectId")]
    project_id: String,
    #[serde(alias = "agentId")]
    agent_id: Option<String>,
    title: Option<String>,
    #[serde(alias = "systemPrompt")]
    system_prompt: Option<String>,
    model: Option<String>,
}

#[utoipa::path(
    tag = "chat",
    params(crate::http::openapi::TenantParam),
    request_body = CreateSession,
    responses((status = 201, body = crate::http::openapi::Envelope<dto::Session>), crate::http::openapi::Errors)
)]
#[post("/chat/sessions")]
pub async fn create_session(
    acting: Acting<scope::ChatWrite>,
    state: Data<AppState>,
    body: Json<CreateSession>,
) -> Result<Reply<dto::Session>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let body = body.0;
    let project_id = project(&state, &tenant_id, Some(body.project_id))
        .await?
        .unwrap_or_default();
    let agent = match body.agent_id {
        Some(id) => Some(find_agent(&state, &tenant_id, &id).await?),
        None => None,
    };
    let tenant = state.tenants.get(&tenant_id).await?;
    let request = SessionRequest {
        id: IdKind::Session.new_id(),
        tenant_id,
        project_id,
        title: optional_text("title", body.title.as_deref(), 200)?,
        system_prompt: optional_text("system_prompt", body.system_prompt.as_deref(), 32_000)?,
        model: optional_text("model", body.model.as_deref(), 200)?,
        stamp: now_rfc3339(),
    };
    let session = Session::open(
        request,
        agent.as_ref(),
        &tenant.settings,
        state.providers.default_name(),
    );
    state.store.create_session(&session).await?;
    Ok(Reply::created(session))
}

#[utoipa::path(
    tag = "chat",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Session>>), crate::http::openapi::Errors)
)]
#[get("/chat/sessions")]
pub async fn list_sessions(
    acting: Acting<scope::ChatRead>,
    state: Data<AppState>,
) -> Result<Reply<Vec<dto::Session>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    let page = state
        .store
        .list_sessions(&tenant_id, &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "chat",
    params(("id" = String, Path, description = "Session id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Session>), crate::http::openapi::Errors)
)]
#[get("/chat/sessions/{id}")]
pub async fn get_session(
    acting: Acting<scope::ChatRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::Session>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    Ok(Reply::ok(find_session(&state, &tenant_id, &id).await?))
}

#[utoipa::path(
    tag = "chat",
    params(("id" = String, Path, description = "Session id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<crate::http::openapi::Deleted>), crate::http::openapi::Errors)
)]
#[delete("/chat/sessions/{id}")]
pub async fn delete_session(
    acting: Acting<scope::ChatWrite>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    find_session(&state, &tenant_id, &id).await?;
    state.sessions.cancel(&id).await.map_err(chat_error)?;
    if !state.store.delete_session(&tenant_id, &id).await? {
        return Err(ApiError::not_found("session", &id));
    }
    Ok(Reply::ok(json!({ "id": id.as_str(), "deleted": true })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    content: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Posted {
    message: dto::Message,
    /// The id of the assistant message that will stream in reply.
    reply_id: String,
}

#[utoipa::path(
    tag = "chat",
    params(("id" = String, Path, description = "Session id"), crate::http::openapi::TenantParam),
    request_body = PostBody,
    responses((status = 202, body = crate::http::openapi::Envelope<Posted>, description = "Stored and queued; the reply streams on the session"), crate::http::openapi::Errors)
)]
#[post("/chat/sessions/{id}/messages")]
pub async fn post_message(
    acting: Acting<scope::ChatWrite>,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<PostBody>,
) -> Result<Reply<Posted>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    find_session(&state, &tenant_id, &id).await?;
    let content = text("content", &body.0.content, 1, 32_000)?;
    let (message_id, reply_id) = (IdKind::Message.new_id(), IdKind::Message.new_id());
    let message = state
        .sessions
        .post(
            &id,
            PostMessage {
                message_id,
                reply_id: reply_id.clone(),
                content,
            },
        )
        .await
        .map_err(chat_error)?;
    Ok(Reply::with_status(
        actix_web::http::StatusCode::ACCEPTED,
        Posted {
            message: message.into(),
            reply_id,
        },
    ))
}

#[utoipa::path(
    tag = "chat",
    params(("id" = String, Path, description = "Session id"), crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Message>>), crate::http::openapi::Errors)
)]
#[get("/chat/sessions/{id}/messages")]
pub async fn list_messages(
    acting: Acting<scope::ChatRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Vec<dto::Message>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    find_session(&state, &tenant_id, &id).await?;
    let page = state
        .store
        .list_messages(&tenant_id, &id, &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "chat",
    params(("id" = String, Path, description = "Session id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<Value>, description = "{cancelled, reply_id}"), crate::http::openapi::Errors)
)]
#[post("/chat/sessions/{id}/cancel")]
pub async fn cancel_reply(
    acting: Acting<scope::ChatWrite>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    find_session(&state, &tenant_id, &id).await?;
    let cancelled = state.sessions.cancel(&id).await.map_err(chat_error)?;
    Ok(Reply::ok(
        json!({ "cancelled": cancelled.is_some(), "reply_id": cancelled }),
    ))
}

#[utoipa::path(
    tag = "chat",
    params(("id" = String, Path, description = "Session id"), crate::http::openapi::TenantParam, ("access_token" = Option<String>, Query, description = "A JWT (not an API key), for EventSource"), ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-Sent Events of the session: message.created, reply.started, token {reply_id, delta}, reply.completed | reply.failed | reply.cancelled; in a session with an agent each reply is a run, whose events carry the reply_id: reply.queued {run_id} (waiting for a run slot), reply.started {run_id}, step.started, token {reply_id, step, delta}, tool.called, tool.result, step.completed, reply.resumed {run_id, after_step}; id: <seq>; ?access_token=<JWT> for EventSource", content_type = "text/event-stream"), crate::http::openapi::Errors)
)]
#[get("/chat/sessions/{id}/stream")]
pub async fn stream_session(
    req: HttpRequest,
    acting: Acting<scope::ChatRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Acting {
        tenant_id,
        principal,
        ..
    } = acting;
    let session = find_session(&state, &tenant_id, &id).await?;
    // A new subscriber starts at the reply in flight (if any), then follows live; the
    // whole history is replayed only when asked for (`Last-Event-ID: 0`).
    let after = match sse::last_event_id(&req)? {
        Some(after) => after,
        None => {
            let ends = SessionEvent::REPLY_ENDS;
            state.store.last_seq(&session.id, &ends).await?
        }
    };
    let slot = sse::StreamSlot::take(&state, &principal)?;
    // A subscription brings a passivated session back (it answers what is left unanswered).
    state.sessions.wake(&session.id);
    Ok(sse::respond(
        &req,
        &state,
        slot,
        state.sessions.hub().clone(),
        session.id,
        View::All,
        after,
    ))
}

async fn find_session(state: &AppState, tenant_id: &str, id: &str) -> Result<Session, ApiError> {
    state
        .store
        .get_session(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("session", id))
}

fn chat_error(e: chat::Error) -> ApiError {
    match e {
        chat::Error::NotFound => ApiError::not_found("session", ""),
        chat::Error::QueueFull(max) => ApiError::TooMany(format!(
            "{max} messages are already waiting for a reply in this session"
        )),
        chat::Error::Store(failure) => failure.into(),
        chat::Error::Unavailable(cause) => ApiError::Unavailable(cause),
    }
}
