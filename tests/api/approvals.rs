//! Tool approvals: a run whose model asks for a tool that needs a human's yes waits
//! (`requires_action`, its pending calls listed, `run.requires_action` on its stream, the
//! `agent.requires_action` webhook event) until each call is answered through
//! `POST .../approve`; approved calls run (with edited arguments if given), denied ones
//! reach the model as their result; a wait ends with its deadline or a cancel, and
//! survives the server being killed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{backend_tests, TestTenant};
use dgidgi_actors::events::EventLog;
use dgidgi_testkit::until;

backend_tests!(@with crate::fake_llm::LlmApp::start;
    an_approved_call_runs_and_the_run_completes,
    a_denied_call_reaches_the_model_with_its_reason,
    parallel_calls_are_answered_separately_and_an_edit_replaces_the_arguments,
    a_wait_past_its_deadline_fails_the_run,
    a_waiting_run_can_be_cancelled,
);

/// A tenant, a project and an agent that writes files only with a human's yes.
async fn setup(ctx: &LlmApp, config: Value) -> (TestTenant, String, String) {
    let mut config = config;
    config
        .as_object_mut()
        .unwrap()
        .extend([("approvals".to_string(), json!(["write_file"]))]);
    crate::runs::setup(
        ctx,
        json!({ "tools": ["write_file", "read_file"], "config": config }),
    )
    .await
}

fn run_path(agent: &str, run: &str) -> String {
    format!("/api/v1/agents/{agent}/runs/{run}")
}

/// Executes and waits until the run stops to wait for a human: the run as it waits.
async fn waiting(ctx: &LlmApp, key: &str, agent: &str, project: &str) -> Value {
    let res = crate::runs::execute(ctx, key, agent, project, json!({ "wait": 10 })).await;
    assert_eq!(res.status, 202, "a waiting run has not ended: {}", res.body);
    let run = res.data().clone();
    assert_eq!(run["status"], "requires_action", "{run}");
    run
}

/// The run once it is no longer queued, running or waiting (at most 10 s).
async fn ended(ctx: &LlmApp, key: &str, agent: &str, run: &str) -> Value {
    until(Duration::from_secs(10), || async {
        let now = ctx.get(&run_path(agent, run), key).await.data().clone();
        (!["queued", "running", "requires_action"].contains(&now["status"].as_str().unwrap()))
            .then_some(now)
    })
    .await
    .expect("the run ends")
}

async fn approve(
    ctx: &LlmApp,
    key: &str,
    agent: &str,
    run: &str,
    decisions: Value,
) -> crate::helpers::Reply {
    ctx.post(
        &format!("{}/approve", run_path(agent, run)),
        key,
        json!({ "decisions": decisions }),
    )
    .await
}

fn file(ctx: &LlmApp, tenant: &TestTenant, project: &str, path: &str) -> std::path::PathBuf {
    std::path::Path::new(&ctx.state.config.storage.platform_root)
        .join(&ctx.state.config.node.region)
        .join(&tenant.id)
        .join("projects")
        .join(project)
        .join(path)
}

async fn an_approved_call_runs_and_the_run_completes(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({})).await;
    ctx.llm.push(Script::Tools(vec![
        ("read_file", json!({ "path": "missing.md" })),
        (
            "write_file",
            json!({ "path": "notes.md", "content": "approved" }),
        ),
    ]));
    ctx.llm.push(Script::Text(vec!["Wrote ", "notes.md"]));
    let run = waiting(ctx, &tenant.key, &agent, &project).await;
    let id = run["id"].as_str().unwrap();
    // Only the call that needs a yes waits; the other ran.
    assert_eq!(
        run["pending_tool_calls"],
        json!([{ "tool_call_id": "call_1", "name": "write_file",
                 "arguments": json!({ "path": "notes.md", "content": "approved" }).to_string() }])
    );
    assert!(run["approval_expires_at"].is_string(), "{run}");
    assert!(
        !file(ctx, &tenant, &project, "notes.md").exists(),
        "nothing written yet"
    );
    assert_eq!(ctx.llm.requests().len(), 1);
    let events = ctx.state.store.outbox_events(&tenant.id).await.unwrap();
    let waits = events
        .iter()
        .find(|e| e.event_type == "agent.requires_action")
        .expect("the webhook event");
    assert_eq!(
        waits.payload["pending_tool_calls"][0]["tool_call_id"], "call_1",
        "{}",
        waits.payload
    );

    // Answers that cannot be recorded are refused, and record nothing.
    let unknown = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_9", "approve": true }]),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (400, "VALIDATION_ERROR"),
        "{}",
        unknown.body
    );
    let bad = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_1", "approve": true, "arguments": "x" }]),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let other = ctx.tenant("Other", "free").await;
    let hidden = approve(
        ctx,
        &other.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_1", "approve": true }]),
    )
    .await;
    assert_eq!(
        hidden.status, 404,
        "another tenant's run is not there: {}",
        hidden.body
    );

    let res = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_1", "approve": true }]),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_ne!(res.data()["status"], "requires_action");
    let done = ended(ctx, &tenant.key, &agent, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], "Wrote notes.md");
    assert!(done.get("pending_tool_calls").is_none(), "{done}");
    assert_eq!(
        std::fs::read_to_string(file(ctx, &tenant, &project, "notes.md")).unwrap(),
        "approved"
    );
    let steps = done["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let results: Vec<_> = steps[0]["tool_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["call_0", "call_1"],
        "results in the order of the calls"
    );
    assert_eq!(done["artifacts"][0]["path"], "notes.md");

    // Once it ran, the call has been answered.
    let again = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_1", "approve": true }]),
    )
    .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "CONFLICT"),
        "{}",
        again.body
    );

    // The run's stream: the wait, then the resume, then the end.
    let kinds: Vec<String> = ctx
        .state
        .store
        .events_after(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} in {kinds:?}"))
    };
    assert!(at("run.requires_action") < at("run.resumed"), "{kinds:?}");
    assert!(at("run.resumed") < at("run.completed"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "run.started").count(),
        1,
        "{kinds:?}"
    );
    let events = ctx.state.store.outbox_events(&tenant.id).await.unwrap();
    let agent_events: Vec<_> = events
        .iter()
        .map(|e| e.event_type.as_str())
        .filter(|k| k.starts_with("agent."))
        .collect();
    assert_eq!(
        agent_events,
        ["agent.started", "agent.requires_action", "agent.completed"]
    );
}

async fn a_denied_call_reaches_the_model_with_its_reason(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({})).await;
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "prod.env", "content": "x" }),
    )]));
    ctx.llm
        .push(Script::Text(vec!["Understood, ", "not written."]));
    let run = waiting(ctx, &tenant.key, &agent, &project).await;
    let id = run["id"].as_str().unwrap();
    let res = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_0", "approve": false, "reason": "not in production" }]),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let done = ended(ctx, &tenant.key, &agent, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], "Understood, not written.");
    assert!(!file(ctx, &tenant, &project, "prod.env").exists());
    let result = &done["steps"][0]["tool_results"][0];
    assert_eq!(result["is_error"], true);
    // What the model read as the tool's answer.
    let asked = ctx.llm.requests()[1]["messages"].clone();
    let tool = asked
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .cloned()
        .expect("the tool's result");
    assert_eq!(tool["tool_call_id"], "call_0");
    let said = tool["content"].as_str().unwrap();
    assert!(
        said.contains("denied") && said.contains("not in production"),
        "{said}"
    );
}

async fn parallel_calls_are_answered_separately_and_an_edit_replaces_the_arguments(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({})).await;
    ctx.llm.push(Script::Tools(vec![
        (
            "write_file",
            json!({ "path": "a.md", "content": "from the model" }),
        ),
        (
            "write_file",
            json!({ "path": "b.md", "content": "from the model" }),
        ),
    ]));
    ctx.llm.push(Script::Text(vec!["done"]));
    let run = waiting(ctx, &tenant.key, &agent, &project).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(run["pending_tool_calls"].as_array().unwrap().len(), 2);

    // The second call first, approved with other arguments: the run still waits.
    let edited = json!({ "path": "b2.md", "content": "edited by a human" });
    let res = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_1", "approve": true, "arguments": edited }]),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let now = res.data();
    assert_eq!(now["status"], "requires_action", "{now}");
    let calls = now["pending_tool_calls"].as_array().unwrap();
    assert!(calls[0].get("decision").is_none(), "{now}");
    assert_eq!(calls[1]["decision"]["approve"], true, "{now}");
    // The same call cannot be answered twice.
    let twice = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_1", "approve": false }]),
    )
    .await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert_eq!(ctx.llm.requests().len(), 1, "nothing resumed yet");

    let res = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_0", "approve": false, "reason": "keep a.md as it is" }]),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let done = ended(ctx, &tenant.key, &agent, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    // Each answer reached its own call.
    assert!(!file(ctx, &tenant, &project, "a.md").exists());
    assert!(!file(ctx, &tenant, &project, "b.md").exists());
    assert_eq!(
        std::fs::read_to_string(file(ctx, &tenant, &project, "b2.md")).unwrap(),
        "edited by a human"
    );
    let asked = ctx.llm.requests()[1]["messages"].clone();
    let asked = asked.as_array().unwrap();
    let assistant = asked.iter().find(|m| m["role"] == "assistant").unwrap();
    let args: Value = serde_json::from_str(
        assistant["tool_calls"][1]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, edited, "the transcript holds the arguments that ran");
    let tools: Vec<(&str, &str)> = asked
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tools.len(), 2, "{asked:?}");
    assert_eq!(tools[0].0, "call_0");
    assert!(tools[0].1.contains("keep a.md as it is"), "{tools:?}");
    assert_eq!(tools[1].0, "call_1");
    assert!(tools[1].1.contains("b2.md"), "{tools:?}");
}

async fn a_wait_past_its_deadline_fails_the_run(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({ "approvalTimeoutSeconds": 1 })).await;
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "late.md", "content": "x" }),
    )]));
    let run = waiting(ctx, &tenant.key, &agent, &project).await;
    let id = run["id"].as_str().unwrap();
    let done = ended(ctx, &tenant.key, &agent, id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "approval_timeout", "{done}");
    // The call that never ran has a result that says so.
    let result = &done["steps"][0]["tool_results"][0];
    assert_eq!(
        (
            result["tool_call_id"].as_str(),
            result["is_error"].as_bool()
        ),
        (Some("call_0"), Some(true))
    );
    assert!(
        result["output"].as_str().unwrap().contains("did not run"),
        "{result}"
    );
    let late = approve(
        ctx,
        &tenant.key,
        &agent,
        id,
        json!([{ "toolCallId": "call_0", "approve": true }]),
    )
    .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(!file(ctx, &tenant, &project, "late.md").exists());
}

async fn a_waiting_run_can_be_cancelled(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({})).await;
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "never.md", "content": "x" }),
    )]));
    let run = waiting(ctx, &tenant.key, &agent, &project).await;
    let id = run["id"].as_str().unwrap();
    let res = ctx
        .post(
            &format!("{}/cancel", run_path(&agent, id)),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let done = ended(ctx, &tenant.key, &agent, id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let result = &done["steps"][0]["tool_results"][0];
    assert_eq!(result["is_error"], true, "{done}");
    assert!(
        result["output"].as_str().unwrap().contains("cancelled"),
        "{result}"
    );
    assert!(!file(ctx, &tenant, &project, "never.md").exists());
}

#[actix_web::test]
async fn a_wait_survives_the_server_being_killed_and_resumes_when_approved() {
    use crate::cli::{libc_kill, wait};
    use crate::restart::{call, start, writer};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let llm = dgidgi_testkit::FakeLlm::start().await;
    llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "kept.md", "content": "after the crash" }),
    )]));
    let (mut first, operator) = start(&db, &llm, dir.path(), true, &[]);
    let operator = operator.expect("the first start prints the operator key");
    let (key, project, agent) = writer(&first.base, &operator).await;
    let patched = call(
        reqwest::Method::PATCH,
        format!("{}/agents/{agent}", first.base),
        &key,
        Some(json!({ "config": { "approvals": "all" } })),
    )
    .await;
    assert_eq!(patched["config"]["approvals"], "all");
    let run = call(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/execute", first.base),
        &key,
        Some(json!({ "goal": "write it", "projectId": project, "wait": 10 })),
    )
    .await;
    assert_eq!(run["status"], "requires_action", "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    unsafe { libc_kill(first.child.id() as i32, 9) };
    wait(&mut first.child, Duration::from_secs(10)).expect("killed");

    llm.push(Script::Text(vec!["written"]));
    let (mut second, _) = start(&db, &llm, dir.path(), false, &[]);
    let url = format!("{}/agents/{agent}/runs/{id}", second.base);
    let now = call(reqwest::Method::GET, url.clone(), &key, None).await;
    assert_eq!(
        now["status"], "requires_action",
        "the wait is still there: {now}"
    );
    assert_eq!(now["pending_tool_calls"][0]["tool_call_id"], "call_0");
    call(
        reqwest::Method::POST,
        format!("{url}/approve"),
        &key,
        Some(json!({ "decisions": [{ "toolCallId": "call_0", "approve": true }] })),
    )
    .await;
    let finished = until(Duration::from_secs(10), || async {
        let now = call(reqwest::Method::GET, url.clone(), &key, None).await;
        (!["queued", "running", "requires_action"].contains(&now["status"].as_str().unwrap()))
            .then_some(now)
    })
    .await
    .expect("the run ends");
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["output"], "written");
    assert_eq!(
        llm.requests().len(),
        2,
        "the first step was not asked again"
    );
    assert_eq!(finished["artifacts"][0]["path"], "kept.md");
    unsafe { libc_kill(second.child.id() as i32, 9) };
    wait(&mut second.child, Duration::from_secs(10)).expect("stopped");
}

#[actix_web::test]
async fn the_cli_lists_pending_calls_and_answers_them() {
    use crate::cli_client::client;
    let ctx = LlmApp::start(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let (tenant, project, agent) = setup(&ctx, json!({})).await;
    ctx.llm.push(Script::Tools(vec![
        (
            "write_file",
            json!({ "path": "yes.md", "content": "from the model" }),
        ),
        ("write_file", json!({ "path": "no.md", "content": "x" })),
    ]));
    ctx.llm.push(Script::Text(vec!["ok"]));
    let run = waiting(&ctx, &tenant.key, &agent, &project).await;
    let id = run["id"].as_str().unwrap();

    let shown = client(
        &ctx,
        &tenant.key,
        &["runs", "get", id, "--agent", &agent],
        "",
    )
    .await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("requires_action"), "{}", shown.stdout);
    let rows: Vec<&str> = shown
        .stdout
        .lines()
        .filter(|l| l.starts_with("call_"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", shown.stdout);
    assert!(
        rows[0].contains("write_file")
            && rows[0].contains("yes.md")
            && rows[0].ends_with("waiting"),
        "{rows:?}"
    );

    let bad = client(
        &ctx,
        &tenant.key,
        &[
            "runs",
            "approve",
            id,
            "--agent",
            &agent,
            "--call",
            "call_0",
            "--arguments",
            "[1]",
        ],
        "",
    )
    .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let approved = client(
        &ctx,
        &tenant.key,
        &[
            "runs",
            "approve",
            id,
            "--agent",
            &agent,
            "--call",
            "call_0",
            "--arguments",
            r#"{"path": "yes.md", "content": "from the CLI"}"#,
        ],
        "",
    )
    .await;
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    assert!(
        approved
            .stdout
            .lines()
            .any(|l| l.starts_with("call_0") && l.ends_with("approved")),
        "{}",
        approved.stdout
    );
    let denied = client(
        &ctx,
        &tenant.key,
        &[
            "runs", "deny", id, "--agent", &agent, "--call", "call_1", "--reason", "no", "--json",
        ],
        "",
    )
    .await;
    assert_eq!(denied.code, 0, "{}", denied.stderr);
    assert_ne!(denied.json()["status"], "requires_action");
    let done = ended(&ctx, &tenant.key, &agent, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read_to_string(file(&ctx, &tenant, &project, "yes.md")).unwrap(),
        "from the CLI"
    );
    assert!(!file(&ctx, &tenant, &project, "no.md").exists());
    let again = client(
        &ctx,
        &tenant.key,
        &["runs", "deny", id, "--agent", &agent, "--call", "call_1"],
        "",
    )
    .await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.starts_with("error: CONFLICT:"),
        "{}",
        again.stderr
    );
    ctx.stop().await;
}
