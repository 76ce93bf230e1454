//! The session actor over an in-memory store and a scripted provider: messages answered in
//! order on one gap-free log, a session that passivates for good, and a reply cut off by
//! a crash settled when the session loads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Arbiter;
use async_trait::async_trait;

use super::*;
use crate::agent::Agent;
use crate::events::{Fence, SessionEvent};
use crate::provider::{self, ChatChunk, ChatRequest, ChunkStream, LlmProvider};
use crate::tenant::Tenants;
use crate::testing::{MemoryRuns, MemoryTenants, NoFiles, One};

#[derive(Default)]
struct Memory {
    sessions: Mutex<HashMap<String, Session>>,
    messages: Mutex<Vec<Message>>,
    events: Mutex<Vec<StreamEvent>>,
    loads: Mutex<usize>,
    /// How often unanswered messages were looked for (a reply task does at its start).
    asked: Mutex<usize>,
}

#[async_trait]
impl EventLog for Memory {
    async fn append_events(
        &self,
        _: &str,
        events: &[StreamEvent],
        _: Option<&Fence>,
    ) -> Result<(), StoreFailure> {
        self.events.lock().unwrap().extend_from_slice(events);
        Ok(())
    }

    async fn events_after(&self, _: &str, after: i64) -> Result<Vec<StreamEvent>, StoreFailure> {
        let events = self.events.lock().unwrap();
        Ok(events.iter().filter(|e| e.seq > after).cloned().collect())
    }
}

#[async_trait]
impl ChatStore for Memory {
    async fn load_session(
        &self,
        id: &str,
    ) -> Result<Option<(Session, Vec<Message>, i64)>, StoreFailure> {
        *self.loads.lock().unwrap() += 1;
        let Some(session) = self.sessions.lock().unwrap().get(id).cloned() else {
            return Ok(None);
        };
        let last = self.events.lock().unwrap().last().map_or(0, |e| e.seq);
        Ok(Some((session, self.messages.lock().unwrap().clone(), last)))
    }

    async fn unfinished_sessions(&self) -> Result<Vec<String>, StoreFailure> {
        Ok(Vec::new())
    }

    async fn claim_session(&self, _: &str) -> Result<Option<i64>, StoreFailure> {
        Ok(Some(1))
    }

    async fn release_session(&self, _: &str, _: i64) -> Result<(), StoreFailure> {
        Ok(())
    }

    async fn unanswered(&self, _: &str) -> Result<Vec<Message>, StoreFailure> {
        *self.asked.lock().unwrap() += 1;
        let messages = self.messages.lock().unwrap();
        let answered = |reply: &str| messages.iter().any(|m| m.id == reply);
        Ok(messages
            .iter()
            .filter(|m| m.role == "user" && m.reply_id.as_deref().is_some_and(|r| !answered(r)))
            .cloned()
            .collect())
    }

    async fn announce_session(&self, _: &str, _: SessionNotice) -> Result<(), StoreFailure> {
        Ok(())
    }

    async fn load_agent(&self, _: &str, _: &str) -> Result<Option<Agent>, StoreFailure> {
        Ok(None)
    }

    async fn add_message(&self, _: &str, message: &Message) -> Result<(), StoreFailure> {
        self.messages.lock().unwrap().push(message.clone());
        Ok(())
    }

    async fn save_message(
        &self,
        _: &str,
        message: &Message,
        event: &StreamEvent,
        _: Option<&Fence>,
    ) -> Result<(), StoreFailure> {
        let mut messages = self.messages.lock().unwrap();
        match messages.iter_mut().find(|m| m.id == message.id) {
            Some(kept) => *kept = message.clone(),
            None => messages.push(message.clone()),
        }
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Answers "re: <the last user message>".
struct Echo;

#[async_trait]
impl LlmProvider for Echo {
    fn default_model(&self) -> &str {
        "echo"
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChunkStream, provider::Error> {
        let last = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                crate::provider::ChatMessage::User { content } => Some(content.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let chunks = vec![
            Ok(ChatChunk::Delta("re: ".into())),
            Ok(ChatChunk::Delta(last)),
        ];
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }
}

fn sessions_over(memory: Arc<Memory>, idle_after: Duration) -> Sessions {
    memory.sessions.lock().unwrap().insert(
        "ses_1".into(),
        Session {
            id: "ses_1".into(),
            tenant_id: "ten_1".into(),
            project_id: "proj_1".into(),
            agent_id: None,
            title: None,
            system_prompt: None,
            model: None,
            providers: vec!["echo".into()],
            created_at: String::new(),
            updated_at: String::new(),
        },
    );
    Sessions::new(
        ChatDeps {
            store: memory,
            hub: EventHub::default(),
            providers: Arc::new(One("echo", Arc::new(Echo))),
            runs: no_runs(),
            settings: RunSettings::quick(),
            max_queue: 8,
            idle_after,
        },
        vec![Arbiter::current()],
    )
}

/// Runs for sessions without an agent: there are none.
fn no_runs() -> Runs {
    let deps = run::RunDeps {
        store: Arc::new(MemoryRuns::default()),
        hub: EventHub::default(),
        providers: Arc::new(One("echo", Arc::new(Echo))),
        tenants: Tenants::new(
            MemoryTenants::with_ten_1(Default::default()),
            vec![Arbiter::current()],
            Duration::from_secs(60),
            Default::default(),
        ),
        settings: RunSettings::quick(),
        workspaces: Arc::new(NoFiles),
        remote_tools: Arc::new(crate::testing::NoRemoteTools),
    };
    Runs::new(deps, vec![Arbiter::current()])
}

fn post(n: usize) -> PostMessage {
    PostMessage {
        message_id: format!("msg_q{n}"),
        reply_id: format!("msg_r{n}"),
        content: format!("question {n}"),
    }
}

/// The stored message `id` once `done` holds for it (at most ~5 s).
async fn message(memory: &Memory, id: &str, done: impl Fn(&Message) -> bool) -> Message {
    for _ in 0..500 {
        let found = memory
            .messages
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .cloned();
        if let Some(m) = found.filter(|m| done(m)) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("message {id} never got there");
}

#[actix::test]
async fn messages_are_answered_in_order_on_one_gap_free_log() {
    let memory = Arc::new(Memory::default());
    let sessions = sessions_over(memory.clone(), Duration::from_secs(60));
    for n in 0..3 {
        sessions.post("ses_1", post(n)).await.unwrap();
    }
    let last = message(&memory, "msg_r2", |m| m.status == "complete").await;
    assert_eq!(last.content, "re: question 2");
    let events = memory.events.lock().unwrap().clone();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let order: Vec<String> = events
        .iter()
        .filter(|e| e.kind == SessionEvent::REPLY_STARTED)
        .map(|e| e.data["reply_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["msg_r0", "msg_r1", "msg_r2"]);
}

#[actix::test]
async fn an_idle_session_passivates_for_good() {
    let memory = Arc::new(Memory::default());
    let sessions = sessions_over(memory.clone(), Duration::from_millis(100));
    sessions.post("ses_1", post(0)).await.unwrap();
    message(&memory, "msg_r0", |m| m.status == "complete").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sessions.actors().live(), 0);
    let loads = *memory.loads.lock().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        *memory.loads.lock().unwrap(),
        loads,
        "a passivated session was loaded again"
    );
    // Once when the actor started, once when the first message started its reply task
    // (an idle session keeps no task and no history).
    assert_eq!(loads, 2);
}

#[actix::test]
async fn an_idle_session_starts_its_reply_task_with_its_first_message() {
    let memory = Arc::new(Memory::default());
    let sessions = sessions_over(memory.clone(), Duration::from_secs(60));
    // Activated with nothing to answer (a cancel touches the actor and writes nothing).
    assert_eq!(sessions.cancel("ses_1").await.unwrap(), None);
    assert_eq!(sessions.actors().live(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*memory.loads.lock().unwrap(), 1);
    assert_eq!(
        *memory.asked.lock().unwrap(),
        0,
        "a reply task ran for an idle session"
    );
    sessions.post("ses_1", post(0)).await.unwrap();
    let answer = message(&memory, "msg_r0", |m| m.status == "complete").await;
    assert_eq!(answer.content, "re: question 0");
    assert_eq!(*memory.loads.lock().unwrap(), 2);
}

#[actix::test]
async fn a_reply_cut_off_by_a_crash_fails_with_the_text_it_had_streamed() {
    let memory = Arc::new(Memory::default());
    // As a crash left it: the question, the reply streaming, two tokens of it stored.
    memory.messages.lock().unwrap().extend([
        Message {
            id: "msg_q0".into(),
            session_id: "ses_1".into(),
            role: "user".into(),
            content: "question 0".into(),
            status: "complete".into(),
            reply_id: Some("msg_r0".into()),
            in_reply_to: None,
            usage: None,
            error: None,
            run_id: None,
            created_at: String::new(),
            updated_at: String::new(),
        },
        Message {
            id: "msg_r0".into(),
            session_id: "ses_1".into(),
            role: "assistant".into(),
            content: String::new(),
            status: "streaming".into(),
            reply_id: None,
            in_reply_to: Some("msg_q0".into()),
            usage: None,
            error: None,
            run_id: None,
            created_at: String::new(),
            updated_at: String::new(),
        },
    ]);
    for (seq, delta) in [(1, "half "), (2, "an answer")] {
        memory.events.lock().unwrap().push(StreamEvent {
            seq,
            kind: SessionEvent::TOKEN.into(),
            data: serde_json::json!({ "reply_id": "msg_r0", "delta": delta }),
            created_at: String::new(),
        });
    }
    let sessions = sessions_over(memory.clone(), Duration::from_secs(60));
    sessions.wake("ses_1");
    let cut = message(&memory, "msg_r0", |m| m.status == "failed").await;
    assert_eq!(cut.content, "half an answer");
    assert_eq!(cut.error.unwrap().code, "interrupted");
    let last = memory.events.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.seq, last.kind.as_str()),
        (3, SessionEvent::REPLY_FAILED)
    );
}
