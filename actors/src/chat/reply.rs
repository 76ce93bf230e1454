//! A session's reply task: answers its messages one at a time (what a crash left first),
//! streaming each reply's tokens, and records how each reply ended. In a session with an
//! agent each reply is a run of the agent, which writes the reply on the session's stream
//! while this task waits for its end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::{ChatDeps, Message, Session};
use crate::events::{Fence, Owned, ReplyEnd, SessionEvent, StreamEvent, View};
use crate::llm::{complete, now, EventWriter};
use crate::provider::{priced, ChatMessage, ChatRequest};
use crate::registry::ActorMeta;
use crate::run::{self, ChatTurn, NewRun, ReplyTo};
use crate::store::retrying;

/// The reply in flight: its id and how to stop it.
pub(super) type Current = Arc<Mutex<Option<(String, CancellationToken)>>>;

/// What the reply task holds while its node owns the session.
pub(super) struct Owning {
    /// The epoch of the node's claim, which every write carries.
    pub epoch: i64,
    /// Notified when a message is waiting.
    pub wake: Arc<Notify>,
    /// Cancelled when the actor passivates or restarts: the task ends.
    pub closed: CancellationToken,
}

/// The user messages of `history` whose reply is not in it yet.
fn unanswered(history: &[Message]) -> impl Iterator<Item = &Message> {
    let answered = |reply: &str| history.iter().any(|m| m.id == reply);
    history
        .iter()
        .filter(move |m| m.role == "user" && m.reply_id.as_deref().is_some_and(|r| !answered(r)))
}

/// Whether a session loaded with `history` has something for its reply task at once: a
/// reply that was streaming when the last owner stopped (to resume or to fail), or a
/// message without its reply. Otherwise the task can wait for the first message.
pub(super) fn has_work(history: &[Message]) -> bool {
    history.iter().any(|m| m.status == "streaming") || unanswered(history).next().is_some()
}

/// Answers the session's messages one at a time, for as long as the actor owns it.
pub(super) async fn reply_loop(
    deps: Arc<ChatDeps>,
    session: Session,
    mut history: Vec<Message>,
    last_seq: i64,
    owning: Owning,
    current: Current,
    meta: Arc<ActorMeta>,
) {
    let Owning {
        epoch,
        wake,
        closed,
    } = owning;
    let fence = Fence {
        owned: Owned::Session(session.id.clone()),
        epoch,
    };
    let mut log = EventWriter::new(
        &session.id,
        last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    )
    .fenced(fence);
    // What the last process left: a reply cut off by a crash fails, unless a run writes it
    // (the run resumes: wait for it); unanswered messages queue.
    let mut pending: VecDeque<Message> = VecDeque::new();
    let mut resumed: Vec<Message> = Vec::new();
    for message in history.clone() {
        let run = match &message.run_id {
            Some(run_id) if message.status == "streaming" => deps.runs.get(run_id).await,
            _ => Ok(None),
        };
        if let Ok(Some(_)) = run {
            resumed.push(message);
        } else if message.role == "assistant" && message.status == "streaming" {
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
                deps.store
                    .save_message(&session.tenant_id, &failed, &event, log.fence())
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
    pending.extend(unanswered(&history).cloned());
    for reply in resumed {
        let (Some(run_id), Some(in_reply_to)) = (reply.run_id.clone(), reply.in_reply_to.clone())
        else {
            continue;
        };
        let cancel = CancellationToken::new();
        if let Ok(mut slot) = current.lock() {
            *slot = Some((reply.id.clone(), cancel.clone()));
        }
        meta.set_state("replying");
        let mut live = deps.hub.subscribe(&session.id);
        deps.runs.start(&run_id);
        let waited = await_run(
            &deps,
            &session.id,
            &run_id,
            &reply.id,
            &mut live,
            &mut log,
            &cancel,
        );
        match waited.await {
            Ok(answer) => keep_reply(&mut history, answer),
            Err(e) => {
                tracing::error!(session_id = %session.id, %in_reply_to, error = %e.message, "resumed reply not followed")
            }
        }
        if let Ok(mut slot) = current.lock() {
            *slot = None;
        }
        meta.set_state("idle");
    }
    loop {
        let message = match pending.pop_front() {
            Some(m) => m,
            None => {
                // What waits in the store (posted here or through another node), oldest
                // first; then sleep until a post wakes the task.
                match deps.store.unanswered(&session.id).await {
                    Ok(waiting) => pending.extend(waiting),
                    Err(e) => {
                        tracing::warn!(session_id = %session.id, error = %e, "unanswered messages not read")
                    }
                }
                if !pending.is_empty() {
                    continue;
                }
                tokio::select! {
                    _ = wake.notified() => continue,
                    _ = closed.cancelled() => return,
                }
            }
        };
        if closed.is_cancelled() {
            return;
        }
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
    if let Some(agent_id) = &session.agent_id {
        let answer = agent_reply(deps, session, agent_id, history, message, log, cancel).await?;
        keep_reply(history, answer);
        return Ok(());
    }
    let mut answer = Message::reply(&session.id, &reply_id, &message.id, &now());
    let started = log.event(&SessionEvent::ReplyStarted {
        reply_id: reply_id.clone(),
        in_reply_to: message.id.clone(),
        run_id: None,
    });
    retrying(deps.settings.store_retry, || {
        deps.store
            .save_message(&session.tenant_id, &answer, &started, log.fence())
    })
    .await?;
    log.publish(&started);

    let request = ChatRequest {
        model: session.model.clone(),
        messages: conversation(session, history),
        tools: Vec::new(),
        temperature: None,
        max_tool_arguments: deps.settings.max_tool_arguments,
        max_tokens: None,
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
            answer.content = done.text;
            let price = deps
                .providers
                .price(&done.provider, session.model.as_deref());
            answer.usage = Some(priced(done.usage, price));
            ReplyEnd::Completed
        }
        None => {
            answer.content = streamed;
            ReplyEnd::Cancelled
        }
        Some(Err(error)) => {
            answer.content = streamed;
            answer.error = Some(error);
            ReplyEnd::Failed
        }
    };
    answer.status = how.status().into();
    answer.updated_at = now();
    let ended = log.event(&SessionEvent::ended(how, &answer));
    retrying(deps.settings.store_retry, || {
        deps.store
            .save_message(&session.tenant_id, &answer, &ended, log.fence())
    })
    .await?;
    log.publish(&ended);
    keep_reply(history, answer);
    Ok(())
}

/// Keeps reply `answer` in `history` where the conversation has it: in place of its
/// earlier copy, else right after the message it answers (messages posted while it was
/// written, and loaded with the history, come after it), else last.
fn keep_reply(history: &mut Vec<Message>, answer: Message) {
    if let Some(kept) = history.iter_mut().find(|m| m.id == answer.id) {
        *kept = answer;
        return;
    }
    let after = answer
        .in_reply_to
        .as_ref()
        .and_then(|to| history.iter().position(|m| &m.id == to));
    match after {
        Some(i) => history.insert(i + 1, answer),
        None => history.push(answer),
    }
}

/// The id of the run that writes reply `reply_id`: the reply's own id under the run prefix,
/// so that each names the other from the start.
pub fn run_id_of(reply_id: &str) -> String {
    let unique = reply_id.split_once('_').map_or(reply_id, |(_, rest)| rest);
    format!("run_{unique}")
}

/// A reply in a session with an agent: a run of the agent whose goal is `message`, with
/// the session's conversation before it; the run writes the reply on the session's stream.
async fn agent_reply(
    deps: &ChatDeps,
    session: &Session,
    agent_id: &str,
    history: &[Message],
    message: &Message,
    log: &mut EventWriter,
    cancel: &CancellationToken,
) -> Result<Message, run::Failure> {
    let reply_id = message.reply_id.clone().unwrap_or_default();
    let run_id = run_id_of(&reply_id);
    // Followed before the run starts, so that its end cannot be missed.
    let mut live = deps.hub.subscribe(&session.id);
    let submitted = match deps.store.load_agent(&session.tenant_id, agent_id).await? {
        None => Err(run::Failure::new(
            "agent_not_found",
            "the session's agent no longer exists",
        )),
        Some(agent) => {
            let turn = ChatTurn {
                in_reply_to: message.id.clone(),
                history: earlier_turns(deps, history, message).await,
            };
            let new = NewRun {
                id: run_id.clone(),
                tenant_id: session.tenant_id.clone(),
                agent: &agent,
                project_id: session.project_id.clone(),
                goal: message.content.clone(),
                input: Value::Null,
                reply: Some(ReplyTo {
                    session_id: session.id.clone(),
                    message_id: reply_id.clone(),
                    turn,
                }),
            };
            deps.runs.submit(new).await.map_err(|e| match e {
                run::Error::Store(e) => run::Failure::from(e),
                other => run::Failure::new("run_not_started", other.to_string()),
            })
        }
    };
    if let Err(error) = submitted {
        // No run: the reply fails at once.
        let mut answer = Message::reply(&session.id, &reply_id, &message.id, &now());
        answer.status = ReplyEnd::Failed.status().into();
        answer.error = Some(error);
        let ended = log.event(&SessionEvent::ended(ReplyEnd::Failed, &answer));
        retrying(deps.settings.store_retry, || {
            deps.store
                .save_message(&session.tenant_id, &answer, &ended, log.fence())
        })
        .await?;
        log.publish(&ended);
        return Ok(answer);
    }
    await_run(
        deps,
        &session.id,
        &run_id,
        &reply_id,
        &mut live,
        log,
        cancel,
    )
    .await
}

/// Waits for the end of run `run_id`, which writes reply `reply_id` on the session's
/// stream (followed through `live`); a cancel of the reply cancels the run. Answers the
/// reply as the run stored it; `log` goes on after the run's events.
async fn await_run(
    deps: &ChatDeps,
    session_id: &str,
    run_id: &str,
    reply_id: &str,
    live: &mut broadcast::Receiver<Arc<StreamEvent>>,
    log: &mut EventWriter,
    cancel: &CancellationToken,
) -> Result<Message, run::Failure> {
    let view = View::Reply(reply_id.to_string());
    let after = log.last_seq();
    // The store is asked too: a live channel may lag, or miss what was sent before it.
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut cancelling = false;
    let end = loop {
        let end = tokio::select! {
            received = live.recv() => match received {
                Ok(event) => view.ends_with(&event).then(|| (*event).clone()),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => {
                    *live = deps.hub.subscribe(session_id);
                    None
                }
            },
            _ = check.tick() => {
                let stored = deps.store.events_after(session_id, after).await?;
                stored.into_iter().find(|e| view.ends_with(e))
            }
            _ = cancel.cancelled(), if !cancelling => {
                cancelling = true;
                if let Err(e) = deps.runs.cancel(run_id).await {
                    tracing::warn!(%run_id, error = %e, "the reply's run not cancelled");
                }
                None
            }
        };
        if let Some(end) = end {
            break end;
        }
    };
    // Nothing else writes the session while its reply's run does.
    log.skip_to(end.seq);
    serde_json::from_value(end.data["message"].clone())
        .map_err(|e| run::Failure::new("internal_error", format!("reply end unreadable: {e}")))
}

/// The conversation before `message`, as the model saw it: each message, and for a reply
/// written by a run the run's steps (its tool calls and their results).
async fn earlier_turns(
    deps: &ChatDeps,
    history: &[Message],
    message: &Message,
) -> Vec<ChatMessage> {
    let mut turns = Vec::new();
    for m in history.iter().filter(|m| m.id != message.id) {
        if m.role == "user" {
            if !m.content.is_empty() {
                turns.push(ChatMessage::User {
                    content: m.content.clone(),
                });
            }
            continue;
        }
        let steps = match &m.run_id {
            Some(run_id) => match deps.runs.get(run_id).await {
                Ok(Some(run)) => run.steps,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        for step in &steps {
            turns.extend(step.messages());
        }
        let answered = steps.last().is_some_and(|s| s.tool_calls.is_empty());
        if !answered && !m.content.is_empty() {
            turns.push(ChatMessage::Assistant {
                content: m.history_text(),
                tool_calls: Vec::new(),
            });
        }
    }
    turns
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
                content: m.history_text(),
                tool_calls: Vec::new(),
            }
        });
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Message {
        let mut m = Message::reply("s", id, "", "2026-12-03T00:00:00.000Z");
        m.role = "user".into();
        m.in_reply_to = None;
        m
    }

    /// A message posted while a reply was written, and loaded with the history before the
    /// reply was kept, still comes after that reply in the conversation.
    #[test]
    fn a_reply_is_kept_after_the_message_it_answers() {
        let mut history = vec![user("m1"), user("m2")];
        keep_reply(&mut history, Message::reply("s", "r1", "m1", "t"));
        keep_reply(&mut history, Message::reply("s", "r2", "m2", "t"));
        let mut again = Message::reply("s", "r1", "m1", "t");
        again.content = "done".into();
        keep_reply(&mut history, again);
        let ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m1", "r1", "m2", "r2"]);
        assert_eq!(history[1].content, "done");
    }
}
