//! A session's reply task: answers its messages one at a time (what a crash left first),
//! streaming each reply's tokens, and records how each reply ended.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ChatDeps, Message, Session};
use crate::events::{ReplyEnd, SessionEvent};
use crate::llm::{complete, now, EventWriter};
use crate::provider::{ChatMessage, ChatRequest};
use crate::registry::ActorMeta;
use crate::run;
use crate::store::retrying;

/// The reply in flight: its id and how to stop it.
pub(super) type Current = Arc<Mutex<Option<(String, CancellationToken)>>>;

/// Answers the session's messages one at a time, for as long as the actor lives.
pub(super) async fn reply_loop(
    deps: Arc<ChatDeps>,
    session: Session,
    mut history: Vec<Message>,
    last_seq: i64,
    mut incoming: mpsc::Receiver<Message>,
    current: Current,
    meta: Arc<ActorMeta>,
) {
    let mut log = EventWriter::new(
        &session.id,
        last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    );
    // What the last process left: a reply cut off by a crash fails; unanswered messages queue.
    let mut pending: VecDeque<Message> = VecDeque::new();
    for message in history.clone() {
        if message.role == "assistant" && message.status == "streaming" {
            let mut failed = message;
            failed.status = "failed".into();
            // What was streamed before the stop is kept: the reply's token events hold it.
            failed.content = match deps.store.events_after(&session.id, 0).await {
                Ok(events) => events
                    .iter()
                    .filter(|e| {
                        e.kind == SessionEvent::TOKEN && e.data["reply_id"] == failed.id.as_str()
                    })
                    .filter_map(|e| e.data["delta"].as_str())
                    .collect(),
                Err(_) => failed.content,
            };
            failed.error = Some(run::Failure::new(
                "interrupted",
                "the server stopped while this reply was streaming",
            ));
            let event = log.event(&SessionEvent::ended(ReplyEnd::Failed, &failed));
            if retrying(deps.settings.store_retry, || {
                deps.store.save_message(&session.tenant_id, &failed, &event)
            })
            .await
            .is_ok()
            {
                log.publish(&event);
            }
            if let Some(kept) = history.iter_mut().find(|m| m.id == failed.id) {
                *kept = failed;
            }
        }
    }
    for message in &history {
        let answered = |reply: &str| history.iter().any(|m| m.id == reply);
        if message.role == "user" && message.reply_id.as_deref().is_some_and(|r| !answered(r)) {
            pending.push_back(message.clone());
        }
    }
    loop {
        let message = match pending.pop_front() {
            Some(m) => m,
            None => match incoming.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        if !history.iter().any(|m| m.id == message.id) {
            history.push(message.clone());
        }
        // Marked in flight at once, with no wait in between, so the actor never sees the
        // session idle (and passivates) while a message is being answered.
        let cancel = CancellationToken::new();
        let reply_id = message.reply_id.clone().unwrap_or_default();
        if let Ok(mut slot) = current.lock() {
            *slot = Some((reply_id, cancel.clone()));
        }
        meta.set_state("replying");
        // A span per reply (not per session: an idle session would hold one for nothing).
        let span = tracing::info_span!("session", session_id = %session.id, tenant_id = %session.tenant_id);
        let replied = tracing::Instrument::instrument(
            reply(&deps, &session, &mut history, &message, &mut log, &cancel),
            span,
        )
        .await;
        if let Ok(mut slot) = current.lock() {
            *slot = None;
        }
        meta.set_state("idle");
        if let Err(e) = replied {
            meta.record_error(&format!("{}: {}", e.code, e.message));
            tracing::error!(session_id = %session.id, error = %e.message, "reply not recorded");
        }
    }
}

/// Streams one reply to `message` and records how it ended.
async fn reply(
    deps: &ChatDeps,
    session: &Session,
    history: &mut Vec<Message>,
    message: &Message,
    log: &mut EventWriter,
    cancel: &CancellationToken,
) -> Result<(), run::Failure> {
    let reply_id = message.reply_id.clone().unwrap_or_default();
    log.emit(&SessionEvent::MessageCreated {
        message: message.clone(),
    })
    .await?;
    let stamp = now();
    let mut answer = Message {
        id: reply_id.clone(),
        session_id: session.id.clone(),
        role: "assistant".into(),
        content: String::new(),
        status: "streaming".into(),
        reply_id: None,
        in_reply_to: Some(message.id.clone()),
        usage: None,
        error: None,
        created_at: stamp.clone(),
        updated_at: stamp,
    };
    let started = log.event(&SessionEvent::ReplyStarted {
        reply_id: reply_id.clone(),
        in_reply_to: message.id.clone(),
    });
    retrying(deps.settings.store_retry, || {
        deps.store
            .save_message(&session.tenant_id, &answer, &started)
    })
    .await?;
    log.publish(&started);

    let request = ChatRequest {
        model: session.model.clone(),
        messages: conversation(session, history),
        tools: Vec::new(),
        temperature: None,
        max_tool_arguments: deps.settings.max_tool_arguments,
    };
    let token = |delta: &str| SessionEvent::Token {
        reply_id: reply_id.clone(),
        delta: delta.to_string(),
    };
    let outcome = tokio::select! {
        done = complete(&*deps.providers, &deps.settings, &session.providers, request, &token, log) => Some(done),
        _ = cancel.cancelled() => None,
    };
    log.flush().await?;
    let streamed = log.take_streamed();
    let how = match outcome {
        Some(Ok(done)) => {
            answer.status = "complete".into();
            answer.content = done.text;
            answer.usage = Some(done.usage);
            ReplyEnd::Completed
        }
        None => {
            answer.status = "cancelled".into();
            answer.content = streamed;
            ReplyEnd::Cancelled
        }
        Some(Err(error)) => {
            answer.status = "failed".into();
            answer.content = streamed;
            answer.error = Some(error);
            ReplyEnd::Failed
        }
    };
    answer.updated_at = now();
    let ended = log.event(&SessionEvent::ended(how, &answer));
    retrying(deps.settings.store_retry, || {
        deps.store.save_message(&session.tenant_id, &answer, &ended)
    })
    .await?;
    log.publish(&ended);
    history.push(answer);
    Ok(())
}

/// The session's instructions and every message with text, in order.
fn conversation(session: &Session, history: &[Message]) -> Vec<ChatMessage> {
    let system = session
        .system_prompt
        .clone()
        .unwrap_or_else(|| "You are a helpful assistant.".into());
    let mut messages = vec![ChatMessage::System { content: system }];
    for m in history.iter().filter(|m| !m.content.is_empty()) {
        messages.push(if m.role == "user" {
            ChatMessage::User {
                content: m.content.clone(),
            }
        } else {
            ChatMessage::Assistant {
                content: m.content.clone(),
                tool_calls: Vec::new(),
            }
        });
    }
    messages
}
