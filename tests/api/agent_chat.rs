//! Chatting with an agent runs the agent: each reply in a session with an agent is a run
//! of it, with its tools, written on the session's one log and seen the same through the
//! run; cancels cross both ways; replies queue behind each other and share the tenant's
//! run slots; webhooks report the run.

use std::time::Duration;

use serde_json::{json, Value};

use crate::chat::{ended, post, read_until, subscribe, Event};
use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{backend_tests, Backend, TestTenant};
use crate::webhooks::{verify, Receiver};
use dgidgi_testkit::sse::Frames;

/// The app with webhooks allowed to reach loopback receivers, and fast.
async fn agent_app(backend: Backend) -> Option<LlmApp> {
    LlmApp::start_with(backend, crate::webhooks::fast).await
}

backend_tests!(@with crate::agent_chat::agent_app;
    a_reply_in_an_agent_session_is_a_run_that_uses_the_agents_tools,
);

/// A tenant, a project, an agent that may write files, and a session with the agent.
struct Setup {
    tenant: TestTenant,
    project: String,
    agent: String,
    session: String,
}

async fn setup(ctx: &LlmApp) -> Setup {
    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "notes").await;
    let agent = ctx
        .post(
            "/api/v1/agents",
            &tenant.key,
            json!({ "name": "scribe", "systemPrompt": "You keep notes.", "tools": ["write_file"],
                    "config": { "autonomyLevel": "medium" } }),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.body);
    let agent = agent.data()["id"].as_str().unwrap().to_string();
    let session = ctx
        .post(
            "/api/v1/chat/sessions",
            &tenant.key,
            json!({ "projectId": project, "agentId": agent }),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let session = session.data()["id"].as_str().unwrap().to_string();
    Setup {
        tenant,
        project,
        agent,
        session,
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.1.as_str()).collect()
}

/// Posts `content`; answers the reply's id and the id of the run that writes it.
async fn ask(ctx: &LlmApp, s: &Setup, content: &str) -> (String, String) {
    let posted = post(ctx, &s.tenant.key, &s.session, content).await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    let reply = posted.data()["reply_id"].as_str().unwrap().to_string();
    let run = format!("run_{}", reply.strip_prefix("msg_").unwrap());
    (reply, run)
}

async fn run_of(ctx: &LlmApp, s: &Setup, run: &str) -> Value {
    let path = format!("/api/v1/agents/{}/runs/{run}", s.agent);
    ctx.get(&path, &s.tenant.key).await.data().clone()
}

/// The run's own event stream, after event `last`.
async fn run_stream(ctx: &LlmApp, s: &Setup, run: &str, last: i64) -> reqwest::Response {
    ctx.client
        .get(format!(
            "{}/api/v1/agents/{}/runs/{run}/stream",
            ctx.address, s.agent
        ))
        .bearer_auth(&s.tenant.key)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap()
}

async fn a_reply_in_an_agent_session_is_a_run_that_uses_the_agents_tools(ctx: &LlmApp) {
    let s = setup(ctx).await;
    let receiver = Receiver::start().await;
    let hook = ctx
        .post(
            "/api/v1/webhooks",
            &s.tenant.key,
            json!({ "url": receiver.url, "events": ["agent.started", "agent.completed", "agent.failed"] }),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.body);
    let secret = hook.data()["secret"].as_str().unwrap().to_string();
    let mut stream = subscribe(ctx, &s.tenant.key, &s.session, None).await;
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "notes.md", "content": "buy milk" }),
    )]));
    ctx.llm.push(Script::Text(vec!["Saved ", "notes.md"]));
    let (reply, run) = ask(ctx, &s, "Note that I need milk").await;

    let events = read_until(&mut stream, ended(1)).await;
    assert_eq!(
        kinds(&events),
        [
            "message.created",
            "reply.started",
            "step.started",
            "tool.called",
            "tool.result",
            "step.completed",
            "step.started",
            "token",
            "token",
            "step.completed",
            "reply.completed"
        ]
    );
    let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        events[1].2["run_id"],
        run.as_str(),
        "the reply names its run"
    );
    assert!(events[1..]
        .iter()
        .all(|e| e.2["reply_id"] == reply.as_str()));
    assert_eq!(events[3].2["name"], "write_file");
    assert_eq!(events[4].2["output"], "wrote 8 bytes to notes.md");
    assert_eq!(events[7].2["step"], 1);
    let end = &events.last().unwrap().2;
    assert_eq!(end["message"]["content"], "Saved notes.md");
    assert_eq!(end["message"]["run_id"], run.as_str());

    // The file is in the session's project.
    let file = std::path::Path::new(&ctx.state.config.storage.platform_root)
        .join(&ctx.state.config.node.region)
        .join(&s.tenant.id)
        .join("projects")
        .join(&s.project)
        .join("notes.md");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "buy milk");

    // The reply names its run; the run names its session and reply, with its steps.
    let path = format!("/api/v1/chat/sessions/{}/messages", s.session);
    let history = ctx.get(&path, &s.tenant.key).await;
    assert_eq!(history.data()[0]["id"], reply.as_str());
    assert_eq!(history.data()[0]["run_id"], run.as_str());
    assert_eq!(history.data()[0]["status"], "complete");
    let shown = run_of(ctx, &s, &run).await;
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["session_id"], s.session.as_str());
    assert_eq!(shown["message_id"], reply.as_str());
    assert_eq!(shown["goal"], "Note that I need milk");
    assert_eq!(shown["output"], "Saved notes.md");
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["tool_calls"][0]["name"], "write_file");
    assert_eq!(
        shown["artifacts"],
        json!([{ "path": "notes.md", "bytes": 8 }])
    );

    // The run's own stream is the same run, event for event.
    let text = run_stream(ctx, &s, &run, 0).await.text().await.unwrap();
    let through_run: Vec<Event> = Frames::parse_all(&text)
        .into_iter()
        .map(|f| (f.id, f.event, f.data))
        .collect();
    assert_eq!(through_run, events[1..].to_vec());
    // Resumed at its end, the run's stream has nothing more to send.
    let last = events.last().unwrap().0;
    assert_eq!(run_stream(ctx, &s, &run, last).await.status(), 204);

    // Webhooks report the run like any other, naming the session.
    let got = receiver.wait_for(|g| g.len() >= 2).await;
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["agent.started", "agent.completed"]);
    assert!(got.iter().all(|r| verify(&secret, r)));
    for body in &bodies {
        assert_eq!(body["data"]["id"], run.as_str());
        assert_eq!(body["data"]["session_id"], s.session.as_str());
        assert_eq!(body["data"]["message_id"], reply.as_str());
    }
    receiver.stop().await;

    // The next reply's run sees the conversation: the tool call and its result included.
    ctx.llm.push(Script::Text(vec!["You need milk."]));
    ask(ctx, &s, "What do I need?").await;
    let events = read_until(&mut stream, ended(1)).await;
    assert_eq!(
        events.last().unwrap().2["message"]["content"],
        "You need milk."
    );
    let request = ctx.llm.requests().last().unwrap().clone();
    let messages = request["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(messages[0]["content"], "You keep notes.");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["name"],
        "write_file"
    );
    assert_eq!(messages[4]["content"], "Saved notes.md");
    assert_eq!(messages[5]["content"], "What do I need?");
}

async fn sqlite_app() -> LlmApp {
    agent_app(Backend::Sqlite).await.unwrap()
}

/// The reply's events up to the third token of step 1 (the step after the tool call).
fn streaming_step_1(events: &[Event]) -> bool {
    events
        .iter()
        .filter(|e| e.1 == "token" && e.2["step"] == 1)
        .count()
        >= 3
}

#[actix_web::test]
async fn a_reply_is_cancelled_through_the_session_or_through_its_run() {
    let ctx = sqlite_app().await;
    let s = setup(&ctx).await;
    let mut stream = subscribe(&ctx, &s.tenant.key, &s.session, None).await;

    // Through the session: the run is cancelled, mid-step, after a tool step.
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "a.md", "content": "a" }),
    )]));
    ctx.llm
        .push(Script::Slow(vec!["word "; 300], Duration::from_millis(20)));
    let (reply, run) = ask(&ctx, &s, "talk").await;
    read_until(&mut stream, streaming_step_1).await;
    let res = ctx
        .post(
            &format!("/api/v1/chat/sessions/{}/cancel", s.session),
            &s.tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.data()["cancelled"], true);
    assert_eq!(res.data()["reply_id"], reply.as_str());
    let events = read_until(&mut stream, ended(1)).await;
    let end = events.last().unwrap();
    assert_eq!(end.1, "reply.cancelled");
    let partial = end.2["message"]["content"].as_str().unwrap();
    assert!(partial.starts_with("word word word"), "{partial}");
    let shown = run_of(&ctx, &s, &run).await;
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(shown["steps"].as_array().unwrap().len(), 1);

    // Through the run: the reply ends cancelled on the session.
    ctx.llm
        .push(Script::Slow(vec!["more "; 300], Duration::from_millis(20)));
    let (reply, run) = ask(&ctx, &s, "talk more").await;
    read_until(&mut stream, |e| e.iter().any(|e| e.1 == "token")).await;
    let res = ctx
        .post(
            &format!("/api/v1/agents/{}/runs/{run}/cancel", s.agent),
            &s.tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["status"], "cancelled");
    let events = read_until(&mut stream, ended(1)).await;
    let end = events.last().unwrap();
    assert_eq!(
        (end.1.as_str(), &end.2["reply_id"]),
        ("reply.cancelled", &json!(reply))
    );
    let path = format!("/api/v1/chat/sessions/{}/messages", s.session);
    assert_eq!(
        ctx.get(&path, &s.tenant.key).await.data()[0]["status"],
        "cancelled"
    );

    // Nothing is in flight; the session answers the next message.
    ctx.llm.push(Script::Text(vec!["still here"]));
    ask(&ctx, &s, "still there?").await;
    let events = read_until(&mut stream, ended(1)).await;
    assert_eq!(events.last().unwrap().2["message"]["content"], "still here");

    // The history the model got: every tool call has its result, and the two cancelled
    // replies' partial texts are marked as cut off.
    let asked = ctx.llm.requests().last().unwrap()["messages"].clone();
    let asked = asked.as_array().unwrap();
    let calls: Vec<&str> = asked
        .iter()
        .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let results: Vec<&str> = asked
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(calls.len(), 1, "{asked:?}");
    assert_eq!(calls, results, "each tool call answered: {asked:?}");
    let cut: Vec<&str> = asked
        .iter()
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.ends_with("[This reply was cancelled before it was finished.]"))
        .collect();
    assert_eq!(cut.len(), 2, "{asked:?}");
    assert!(
        cut[0].starts_with("word word") && cut[1].starts_with("more"),
        "{cut:?}"
    );
    ctx.stop().await;
}

#[actix_web::test]
async fn replies_queue_behind_each_other_and_share_the_tenants_run_slots() {
    let ctx = sqlite_app().await;
    let s = setup(&ctx).await;
    let res = ctx
        .patch(
            &format!("/api/v1/tenants/{}/settings", s.tenant.id),
            &s.tenant.key,
            json!({ "max_concurrent_runs": 1 }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let mut stream = subscribe(&ctx, &s.tenant.key, &s.session, None).await;
    // A run through execute takes the tenant's one slot.
    ctx.llm
        .push(Script::Slow(vec!["busy "; 50], Duration::from_millis(20)));
    ctx.llm.push(Script::Text(vec!["first answer"]));
    ctx.llm.push(Script::Text(vec!["second answer"]));
    let executed = ctx
        .post(
            &format!("/api/v1/agents/{}/execute", s.agent),
            &s.tenant.key,
            json!({ "goal": "keep busy", "projectId": s.project }),
        )
        .await;
    let executed = executed.data()["id"].as_str().unwrap().to_string();
    ctx.run_until(&s.tenant.key, &s.agent, &executed, |r| {
        r["status"] == "running"
    })
    .await;
    let (first, first_run) = ask(&ctx, &s, "one").await;
    let (second, _) = ask(&ctx, &s, "two").await;

    let events = read_until(&mut stream, ended(2)).await;
    let at = |kind: &str, reply: &str| {
        events
            .iter()
            .position(|e| e.1 == kind && e.2["reply_id"] == reply)
            .unwrap_or_else(|| panic!("no {kind} for {reply} in {:?}", kinds(&events)))
    };
    // The first reply waited for the slot, and said so.
    let queued = &events[at("reply.queued", &first)];
    assert_eq!(queued.2["run_id"], first_run.as_str());
    assert!(at("reply.queued", &first) < at("reply.started", &first));
    // ... until the executed run gave it back.
    let executed = run_of(&ctx, &s, &executed).await;
    let chat_run = run_of(&ctx, &s, &first_run).await;
    assert_eq!(executed["status"], "completed");
    assert!(
        chat_run["started_at"].as_str().unwrap() >= executed["finished_at"].as_str().unwrap(),
        "{chat_run} started before {executed} ended"
    );
    // The second message waited for the first reply.
    let created_second = events
        .iter()
        .position(|e| e.1 == "message.created" && e.2["message"]["reply_id"] == second.as_str())
        .unwrap();
    assert!(at("reply.completed", &first) < created_second);
    assert_eq!(
        events[at("reply.completed", &first)].2["message"]["content"],
        "first answer"
    );
    assert_eq!(
        events[at("reply.completed", &second)].2["message"]["content"],
        "second answer"
    );
    ctx.stop().await;
}

#[actix_web::test]
async fn a_reply_cancelled_while_a_tool_call_waits_leaves_every_call_answered() {
    let ctx = sqlite_app().await;
    let s = setup(&ctx).await;
    let patched = ctx
        .patch(
            &format!("/api/v1/agents/{}", s.agent),
            &s.tenant.key,
            json!({ "config": { "approvals": ["write_file"] } }),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let mut stream = subscribe(&ctx, &s.tenant.key, &s.session, None).await;

    // The reply's run asks for a tool that waits for a human; the reply is cancelled then.
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "a.md", "content": "a" }),
    )]));
    let (_, run) = ask(&ctx, &s, "write a.md").await;
    let events = read_until(&mut stream, |e| {
        e.iter().any(|e| e.1 == "run.requires_action")
    })
    .await;
    let waits = events.last().unwrap();
    assert_eq!(waits.2["pending_tool_calls"][0]["tool_call_id"], "call_0");
    assert_eq!(run_of(&ctx, &s, &run).await["status"], "requires_action");
    let res = ctx
        .post(
            &format!("/api/v1/chat/sessions/{}/cancel", s.session),
            &s.tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.data()["cancelled"], true, "{}", res.body);
    let events = read_until(&mut stream, ended(1)).await;
    assert_eq!(events.last().unwrap().1, "reply.cancelled");
    assert_eq!(run_of(&ctx, &s, &run).await["status"], "cancelled");

    // The next message: the history the model gets answers the call that never ran.
    ctx.llm.push(Script::Text(vec!["fine"]));
    ask(&ctx, &s, "never mind").await;
    read_until(&mut stream, ended(1)).await;
    let asked = ctx.llm.requests().last().unwrap()["messages"].clone();
    let asked = asked.as_array().unwrap();
    let calls: Vec<&str> = asked
        .iter()
        .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let results: Vec<(&str, &str)> = asked
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(calls, ["call_0"], "{asked:?}");
    assert_eq!(results.len(), 1, "{asked:?}");
    assert_eq!(results[0].0, "call_0");
    assert!(results[0].1.contains("did not run"), "{results:?}");
    assert!(
        !std::path::Path::new(&ctx.state.config.storage.platform_root)
            .join(&ctx.state.config.node.region)
            .join(&s.tenant.id)
            .join("projects")
            .join(&s.project)
            .join("a.md")
            .exists()
    );
    ctx.stop().await;
}
