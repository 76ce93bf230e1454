//! The run actor over in-memory stores and a scripted provider: step budgets, a cancel
//! before the run starts, and a resume after a crash.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use actix::prelude::*;

use super::*;
use crate::agent::{Agent, AgentConfig};
use crate::events::DomainEvent;
use crate::events::{RunEvent, SessionEvent};
use crate::provider::{self, ChatChunk, ChunkStream, LlmProvider, ToolCall};
use crate::provider::{ChatMessage, ChatRequest};
use crate::tenant::TenantSettings;
use crate::testing::{MemoryRuns as Memory, MemoryTenants, NoFiles, One};

/// What the scripted provider answers, in order; `Tool` asks for a tool call.
#[derive(Clone)]
enum Answer {
    Text(&'static str),
    Tool,
}

struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    /// Answer when the script is spent.
    otherwise: Answer,
}

#[async_trait]
impl LlmProvider for Scripted {
    fn default_model(&self) -> &str {
        "scripted"
    }

    async fn stream_chat(&self, _: ChatRequest) -> Result<ChunkStream, provider::Error> {
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.otherwise.clone());
        let chunks: Vec<Result<ChatChunk, provider::Error>> = match answer {
            Answer::Text(text) => vec![Ok(ChatChunk::Delta(text.into()))],
            Answer::Tool => vec![Ok(ChatChunk::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "list_files".into(),
                arguments: "{}".into(),
            }))],
        };
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }
}

fn deps_over(memory: Arc<Memory>, answers: Vec<Answer>, otherwise: Answer, slots: u32) -> RunDeps {
    let settings = TenantSettings {
        max_concurrent_runs: slots,
        ..TenantSettings::default()
    };
    let tenants = Tenants::new(
        MemoryTenants::with_ten_1(settings),
        vec![Arbiter::current()],
        Duration::from_secs(60),
        Default::default(),
    );
    let provider = Scripted {
        answers: Mutex::new(answers.into()),
        otherwise,
    };
    RunDeps {
        store: memory,
        hub: EventHub::default(),
        providers: Arc::new(One("scripted", Arc::new(provider))),
        tenants,
        settings: RunSettings::quick(),
        workspaces: Arc::new(NoFiles),
        remote_tools: Arc::new(crate::testing::NoRemoteTools),
    }
}

fn runs_over(memory: Arc<Memory>, answers: Vec<Answer>, otherwise: Answer, slots: u32) -> Runs {
    let deps = deps_over(memory, answers, otherwise, slots);
    Runs::new(deps, vec![Arbiter::current()])
}

/// An agent on the scripted provider that may list files, for at most `max_steps` steps.
fn agent(max_steps: u32) -> Agent {
    Agent {
        id: "agt_1".into(),
        tenant_id: "ten_1".into(),
        project_id: Some("proj_1".into()),
        name: "lister".into(),
        description: None,
        system_prompt: None,
        provider: Some("scripted".into()),
        model: None,
        fallbacks: Vec::new(),
        tools: vec!["list_files".into()],
        config: AgentConfig {
            max_steps: Some(max_steps),
            ..AgentConfig::default()
        },
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// Submits run `id` of [`agent`]`(max_steps)`.
async fn submit(runs: &Runs, id: &str, max_steps: u32) -> Result<Run, Error> {
    runs.submit(NewRun {
        id: id.into(),
        tenant_id: "ten_1".into(),
        agent: &agent(max_steps),
        project_id: "proj_1".into(),
        goal: "do it".into(),
        input: Value::Null,
        reply: None,
    })
    .await
}

/// A run as a crash left it, stored queued.
fn queued(id: &str, max_steps: u32) -> Run {
    Run {
        id: id.into(),
        tenant_id: "ten_1".into(),
        agent_id: "agt_1".into(),
        project_id: "proj_1".into(),
        goal: "do it".into(),
        input: Value::Null,
        status: RunStatus::Queued,
        steps: Vec::new(),
        output: None,
        usage: Usage::default(),
        error: None,
        artifacts: Vec::new(),
        created_at: String::new(),
        started_at: None,
        finished_at: None,
        updated_at: String::new(),
        session_id: None,
        message_id: None,
        spec: RunSpec {
            system_prompt: None,
            providers: vec!["scripted".into()],
            model: None,
            tools: vec!["list_files".into()],
            max_steps,
            temperature: None,
            timeout_secs: 30,
            approvals: None,
            approval_timeout_secs: 60,
            budget: Default::default(),
            chat: None,
        },
        last_seq: 0,
        epoch: 0,
        cancel_requested: false,
        pause: None,
        reserved: Default::default(),
    }
}

/// The stored run once `done` holds for it (at most ~5 s).
async fn until(memory: &Memory, id: &str, done: impl Fn(&Run) -> bool) -> Run {
    for _ in 0..500 {
        if let Some(run) = memory.runs.lock().unwrap().get(id).filter(|r| done(r)) {
            return run.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "run {id} never got there: {:?}",
        memory.runs.lock().unwrap().get(id)
    );
}

#[actix::test]
async fn a_model_that_keeps_calling_tools_ends_at_the_step_budget() {
    let memory = Arc::new(Memory::default());
    let runs = runs_over(memory.clone(), Vec::new(), Answer::Tool, 4);
    let run = submit(&runs, "run_1", 3).await.unwrap();
    assert_eq!(run.spec.max_steps, 3);
    assert_eq!(run.spec.providers, ["scripted"]);
    let run = until(&memory, "run_1", |r| r.status.is_terminal()).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.unwrap().code, "step_budget_exhausted");
    assert_eq!(run.steps.len(), 3);
    assert_eq!(
        *memory.domain.lock().unwrap(),
        [DomainEvent::AgentStarted, DomainEvent::AgentFailed]
    );
}

#[actix::test]
async fn a_run_cancelled_while_it_waits_for_a_slot_never_starts() {
    let memory = Arc::new(Memory::default());
    let runs = runs_over(memory.clone(), Vec::new(), Answer::Text("done"), 1);
    // The tenant's one slot is taken.
    let slot = runs.deps.tenants.admit("ten_1", "run_busy").await;
    assert!(slot.is_ok());
    submit(&runs, "run_waiting", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    runs.cancel("run_waiting").await.unwrap();
    let run = until(&memory, "run_waiting", |r| r.status.is_terminal()).await;
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.started_at.is_none());
    assert_eq!(memory.kinds("run_waiting"), [RunEvent::CANCELLED]);
    // Its place in the queue is given back: the next run gets the slot once it is free.
    runs.deps.tenants.release("ten_1", "run_busy").await;
    submit(&runs, "run_next", 1).await.unwrap();
    let next = until(&memory, "run_next", |r| r.status.is_terminal()).await;
    assert_eq!(next.status, RunStatus::Completed);
}

#[actix::test]
async fn a_run_left_running_by_a_crash_resumes_after_its_last_finished_step() {
    let memory = Arc::new(Memory::default());
    // As a crash left it: running, one step finished, its events stored.
    let mut run = queued("run_1", 4);
    run.status = RunStatus::Running;
    run.started_at = Some("2026-01-01T00:00:00.000Z".into());
    run.steps.push(Step {
        index: 0,
        provider: "scripted".into(),
        model: "scripted".into(),
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: "call_0".into(),
            name: "list_files".into(),
            arguments: "{}".into(),
        }],
        tool_results: Vec::new(),
        usage: Usage::default(),
        started_at: String::new(),
        finished_at: String::new(),
    });
    memory.save(&run);
    memory.append(
        "run_1",
        &[StreamEvent {
            seq: 1,
            kind: RunEvent::STARTED.into(),
            data: Value::Null,
            created_at: String::new(),
        }],
    );
    let runs = runs_over(
        memory.clone(),
        vec![Answer::Text("the end")],
        Answer::Text("?"),
        4,
    );
    assert_eq!(runs.recover().await.unwrap(), 1);
    let done = until(&memory, "run_1", |r| r.status.is_terminal()).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output.as_deref(), Some("the end"));
    assert_eq!(done.steps.len(), 2, "step 0 was not run again");
    let kinds = memory.kinds("run_1");
    assert_eq!(kinds[1], RunEvent::RESUMED, "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some(RunEvent::COMPLETED));
    let seqs: Vec<i64> = memory.events.lock().unwrap()["run_1"]
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
}

#[actix::test]
async fn a_tenant_with_its_queue_full_gets_no_more_runs() {
    let memory = Arc::new(Memory::default());
    let runs = Runs::new(
        RunDeps {
            settings: RunSettings {
                max_queued_per_tenant: 2,
                ..RunSettings::quick()
            },
            ..deps_over(memory.clone(), Vec::new(), Answer::Text("done"), 1)
        },
        vec![Arbiter::current()],
    );
    // The one slot is taken: runs wait for it, two at most.
    let slot = runs.deps.tenants.admit("ten_1", "run_busy").await;
    assert!(slot.is_ok());
    submit(&runs, "run_1", 1).await.unwrap();
    submit(&runs, "run_2", 1).await.unwrap();
    assert_eq!(submit(&runs, "run_3", 1).await, Err(Error::Busy(2)));
    assert!(memory.runs.lock().unwrap().get("run_3").is_none());
}

#[actix::test]
async fn a_run_that_writes_a_chat_reply_speaks_on_its_sessions_stream() {
    let memory = Arc::new(Memory::default());
    let runs = runs_over(memory.clone(), vec![Answer::Tool], Answer::Text("done"), 1);
    // The tenant's one slot is taken: the reply says that it waits.
    runs.deps.tenants.admit("ten_1", "run_busy").await.unwrap();
    let history = vec![ChatMessage::User {
        content: "earlier".into(),
    }];
    runs.submit(NewRun {
        id: "run_r1".into(),
        tenant_id: "ten_1".into(),
        agent: &agent(4),
        project_id: "proj_1".into(),
        goal: "list my files".into(),
        input: Value::Null,
        reply: Some(ReplyTo {
            session_id: "ses_1".into(),
            message_id: "msg_r1".into(),
            turn: ChatTurn {
                in_reply_to: "msg_q1".into(),
                history,
            },
        }),
    })
    .await
    .unwrap();
    // Released once the reply said that it waits (at most ~5 s).
    let waiting = || memory.events.lock().unwrap().contains_key("ses_1");
    for _ in 0..500 {
        if waiting() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runs.deps.tenants.release("ten_1", "run_busy").await;
    let run = until(&memory, "run_r1", |r| r.status.is_terminal()).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.session_id.as_deref(), Some("ses_1"));
    assert_eq!(
        memory.kinds("ses_1"),
        [
            SessionEvent::REPLY_QUEUED,
            SessionEvent::REPLY_STARTED,
            RunEvent::STEP_STARTED,
            RunEvent::TOOL_CALLED,
            RunEvent::TOOL_RESULT,
            RunEvent::STEP_COMPLETED,
            RunEvent::STEP_STARTED,
            RunEvent::TOKEN,
            RunEvent::STEP_COMPLETED,
            SessionEvent::REPLY_COMPLETED,
        ]
    );
    assert!(!memory.events.lock().unwrap().contains_key("run_r1"));
    let events = memory.events.lock().unwrap()["ses_1"].clone();
    assert!(events.iter().all(|e| e.data["reply_id"] == "msg_r1"));
    assert_eq!(events[1].data["run_id"], "run_r1");
    assert_eq!(events[1].data["in_reply_to"], "msg_q1");
    let end = &events.last().unwrap().data["message"];
    assert_eq!(
        (end["content"].as_str(), end["status"].as_str()),
        (Some("done"), Some("complete"))
    );
    assert_eq!(end["run_id"], "run_r1");
    assert_eq!(
        *memory.domain.lock().unwrap(),
        [DomainEvent::AgentStarted, DomainEvent::AgentCompleted]
    );
}

#[test]
fn a_pause_records_all_of_a_request_s_answers_or_none() {
    use super::{DecideError, Decision, Pause, PendingCall};
    let call = |id: &str| PendingCall {
        tool_call_id: id.into(),
        name: "write_file".into(),
        arguments: "{}".into(),
        decision: None,
    };
    let yes = Decision {
        approve: true,
        arguments: None,
        reason: None,
    };
    let mut pause = Pause {
        step: queued_step(),
        calls: vec![call("call_0"), call("call_1")],
        until: String::new(),
    };
    let unknown = pause.decide(vec![
        ("call_1".into(), yes.clone()),
        ("call_9".into(), yes.clone()),
    ]);
    assert_eq!(unknown, Err(DecideError::Unknown("call_9".into())));
    assert!(
        pause.calls.iter().all(|c| c.decision.is_none()),
        "nothing recorded"
    );
    pause.decide(vec![("call_1".into(), yes.clone())]).unwrap();
    assert!(!pause.answered());
    let twice = pause.decide(vec![
        ("call_0".into(), yes.clone()),
        ("call_1".into(), yes.clone()),
    ]);
    assert_eq!(twice, Err(DecideError::Answered("call_1".into())));
    assert!(pause.calls[0].decision.is_none(), "nothing recorded");
    pause.decide(vec![("call_0".into(), yes)]).unwrap();
    assert!(pause.answered());
    // A wait abandoned gives each call that did not run a result, in the calls' order.
    let step = pause.abandon("did not run");
    let ids: Vec<_> = step
        .tool_results
        .iter()
        .map(|r| r.tool_call_id.as_str())
        .collect();
    assert_eq!(ids, ["call_0", "call_1"]);
    assert!(step.tool_results.iter().all(|r| r.is_error));
}

fn queued_step() -> Step {
    use crate::provider::ToolCall;
    let call = |id: &str| ToolCall {
        id: id.into(),
        name: "write_file".into(),
        arguments: "{}".into(),
    };
    Step {
        index: 0,
        provider: "scripted".into(),
        model: "m".into(),
        text: String::new(),
        tool_calls: vec![call("call_0"), call("call_1")],
        tool_results: Vec::new(),
        usage: Usage::default(),
        started_at: String::new(),
        finished_at: String::new(),
    }
}
