//! Agents and runs against the real async-openai client and a scripted OpenAI-compatible
//! server: streaming, tools, retries, failures, fallback, cancel, limits, SSE resume.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{backend_tests, holds_for, Backend, TestApp, TestTenant};

backend_tests!(@with crate::fake_llm::LlmApp::start;
    a_streamed_answer_completes_the_run_with_its_output_and_usage,
    tool_calls_over_several_steps_work_on_the_project_workspace,
    a_run_streams_its_events_and_resumes_after_last_event_id,
    agents_are_validated_and_tenant_scoped,
);

/// A tenant, a project and an agent made from `agent` (plus a name).
pub async fn setup(app: &TestApp, agent: Value) -> (TestTenant, String, String) {
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "web").await;
    let mut body =
        json!({ "name": "Code Generator", "systemPrompt": "You are a helpful coding assistant" });
    body.as_object_mut()
        .unwrap()
        .extend(agent.as_object().unwrap().clone());
    let agent = app.agent(&tenant.key, body).await;
    (tenant, project, agent)
}

pub async fn execute(
    app: &TestApp,
    key: &str,
    agent: &str,
    project: &str,
    extra: Value,
) -> crate::helpers::Reply {
    let mut body = json!({ "goal": "Create a React login component", "projectId": project });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.post(&format!("/api/v1/agents/{agent}/execute"), key, body)
        .await
}

/// Reads an SSE response to its end: (id, event, data) of each event.
async fn read_sse(
    app: &TestApp,
    path: &str,
    key: &str,
    last_event_id: Option<i64>,
) -> Vec<(i64, String, Value)> {
    let mut req = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert!(res.headers().get("x-ratelimit-limit").is_some());
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = res.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the stream closes after its last event");
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty() && !frame.starts_with(':'))
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            (
                field("id:").parse().unwrap(),
                field("event:"),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect()
}

async fn a_streamed_answer_completes_the_run_with_its_output_and_usage(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({})).await;
    ctx.llm
        .push(Script::Text(vec!["Here ", "is ", "your ", "component."]));
    let res = execute(
        ctx,
        &tenant.key,
        &agent,
        &project,
        json!({ "wait": true, "input": { "framework": "react" } }),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let run = res.data();
    assert!(run["id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(run["status"], "completed");
    assert_eq!(run["output"], "Here is your component.");
    assert_eq!(run["agent_id"], agent.as_str());
    assert_eq!(run["project_id"], project.as_str());
    assert_eq!(run["usage"]["total_tokens"], 18);
    assert_eq!(run["steps"].as_array().unwrap().len(), 1);
    assert_eq!(run["steps"][0]["model"], "fake-model");
    assert_eq!(run["steps"][0]["provider"], "fake");
    assert!(run["finished_at"].is_string() && run["error"].is_null());

    // What the provider was sent: instructions, the goal with its input, streaming on.
    let sent = &ctx.llm.requests()[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["model"], "fake-model");
    assert_eq!(
        sent["messages"][0],
        json!({ "role": "system", "content": "You are a helpful coding assistant" })
    );
    let goal = sent["messages"][1]["content"].as_str().unwrap();
    assert!(
        goal.starts_with("Create a React login component") && goal.contains("react"),
        "{goal}"
    );
    assert!(sent.get("tools").is_none(), "the agent has no tools");

    let read = ctx
        .get(
            &format!(
                "/api/v1/agents/{agent}/runs/{}",
                run["id"].as_str().unwrap()
            ),
            &tenant.key,
        )
        .await;
    assert_eq!(read.data(), run);
    let list = ctx
        .get(&format!("/api/v1/agents/{agent}/runs"), &tenant.key)
        .await;
    assert_eq!(list.data()[0]["id"], run["id"]);
    let events = ctx.state.store.outbox_events(&tenant.id).await.unwrap();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e.event_type.as_str())
        .filter(|k| k.starts_with("agent."))
        .collect();
    assert_eq!(kinds, ["agent.started", "agent.completed"]);
}

async fn tool_calls_over_several_steps_work_on_the_project_workspace(ctx: &LlmApp) {
    let (tenant, project, agent) =
        setup(ctx, json!({ "tools": ["write_file", "read_file", "list_files"], "config": { "autonomyLevel": "medium" } })).await;
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "src/Login.tsx", "content": "export const Login = () => null;" }),
    )]));
    ctx.llm.push(Script::Tools(vec![
        ("read_file", json!({ "path": "src/Login.tsx" })),
        ("read_file", json!({ "path": "../../etc/passwd" })),
    ]));
    ctx.llm.push(Script::Text(vec!["Wrote ", "src/Login.tsx"]));
    let res = execute(ctx, &tenant.key, &agent, &project, json!({ "wait": 30 })).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let run = res.data();
    assert_eq!(run["status"], "completed", "{run}");
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["tool_calls"][0]["name"], "write_file");
    assert_eq!(
        steps[1]["tool_results"][0]["output"],
        "export const Login = () => null;"
    );
    assert_eq!(
        steps[1]["tool_results"][1]["is_error"], true,
        "no escaping the workspace"
    );
    assert_eq!(
        run["artifacts"],
        json!([{ "path": "src/Login.tsx", "bytes": 32 }])
    );
    assert_eq!(run["output"], "Wrote src/Login.tsx");
    // Platform storage: the tenant's folder in its primary region.
    let file = std::path::Path::new(&ctx.state.config.storage.platform_root)
        .join(&ctx.state.config.node.region)
        .join(&tenant.id)
        .join("projects")
        .join(&project)
        .join("src/Login.tsx");
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "export const Login = () => null;"
    );

    let requests = ctx.llm.requests();
    assert_eq!(requests.len(), 3);
    let offered: Vec<_> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].clone())
        .collect();
    assert_eq!(
        offered,
        [json!("write_file"), json!("read_file"), json!("list_files")]
    );
    // The third call carries the whole conversation: the tool calls and their results.
    let messages = requests[2]["messages"].as_array().unwrap();
    let roles: Vec<_> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "tool"
        ]
    );
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["name"],
        "write_file"
    );
    assert_eq!(messages[3]["tool_call_id"], "call_0");
}

async fn a_run_streams_its_events_and_resumes_after_last_event_id(ctx: &LlmApp) {
    let (tenant, project, agent) = setup(ctx, json!({})).await;
    ctx.llm.push(Script::Slow(
        vec!["one ", "two ", "three"],
        Duration::from_millis(30),
    ));
    let res = execute(ctx, &tenant.key, &agent, &project, json!({})).await;
    assert_eq!(res.status, 202, "{}", res.body);
    let run = res.data()["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/agents/{agent}/runs/{run}/stream");

    // Followed live from the start.
    let live = read_sse(ctx, &path, &tenant.key, None).await;
    let ids: Vec<i64> = live.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "ids are 1, 2, 3... with no gap"
    );
    let kinds: Vec<&str> = live.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run.started"));
    assert_eq!(kinds.last(), Some(&"run.completed"));
    assert!(kinds.contains(&"step.started") && kinds.contains(&"step.completed"));
    let text: String = live
        .iter()
        .filter(|e| e.1 == "token")
        .map(|e| e.2["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one two three");

    // Reconnecting after event 3 gives exactly the rest; a finished run replays and closes.
    let rest = read_sse(ctx, &path, &tenant.key, Some(3)).await;
    assert_eq!(rest, live[3..].to_vec());
    let all = read_sse(ctx, &path, &tenant.key, None).await;
    assert_eq!(all, live);
    let bad = ctx
        .client
        .get(format!("{}{path}", ctx.address))
        .bearer_auth(&tenant.key)
        .header("last-event-id", "minus one")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

async fn agents_are_validated_and_tenant_scoped(ctx: &LlmApp) {
    let (tenant, project, agent) =
        setup(ctx, json!({ "provider": "fake", "fallbacks": ["backup"] })).await;
    for (body, field) in [
        (json!({ "name": "x", "tools": ["rm_rf"] }), "tools"),
        (json!({ "name": "x", "provider": "nowhere" }), "provider"),
        (
            json!({ "name": "x", "fallbacks": ["nowhere"] }),
            "fallbacks",
        ),
        (
            json!({ "name": "x", "config": { "autonomyLevel": "total" } }),
            "config.autonomyLevel",
        ),
        (
            json!({ "name": "x", "config": { "maxSteps": 0 } }),
            "config.maxSteps",
        ),
        (
            json!({ "name": "x", "config": { "temperature": 3.5 } }),
            "config.temperature",
        ),
        (
            json!({ "name": "x", "config": { "bogus": 1 } }),
            "config.bogus",
        ),
        (json!({ "systemPrompt": "x" }), "name"),
    ] {
        let res = ctx.post("/api/v1/agents", &tenant.key, body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        assert_eq!(res.body["error"]["details"]["field"], field, "{body}");
    }
    let changed = ctx
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &tenant.key,
            json!({ "model": "bigger", "config": { "maxSteps": 3 } }),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.data()["model"], "bigger");
    assert_eq!(
        changed.data()["config"],
        json!({ "autonomyLevel": "medium", "maxSteps": 3 })
    );
    assert_eq!(
        changed.data()["system_prompt"],
        "You are a helpful coding assistant"
    );

    // A run needs a project: the agent's or the request's; another tenant's is not found.
    let res = ctx
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "x" }),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"]["details"]["field"], "projectId");
    let other = ctx.tenant("Other", "free").await;
    let theirs = ctx.project(&other.key, "theirs").await;
    let res = execute(ctx, &tenant.key, &agent, &theirs, json!({})).await;
    assert_eq!(res.status, 404);

    // Another tenant sees none of it.
    let res = execute(ctx, &tenant.key, &agent, &project, json!({ "wait": true })).await;
    let run = res.data()["id"].as_str().unwrap().to_string();
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/agents/{agent}")),
        (reqwest::Method::PATCH, format!("/api/v1/agents/{agent}")),
        (reqwest::Method::DELETE, format!("/api/v1/agents/{agent}")),
        (
            reqwest::Method::POST,
            format!("/api/v1/agents/{agent}/execute"),
        ),
        (reqwest::Method::GET, format!("/api/v1/agents/{agent}/runs")),
        (
            reqwest::Method::GET,
            format!("/api/v1/agents/{agent}/runs/{run}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/agents/{agent}/runs/{run}/cancel"),
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/agents/{agent}/runs/{run}/stream"),
        ),
    ] {
        let body = if path.ends_with("execute") {
            json!({ "goal": "steal", "projectId": theirs })
        } else {
            json!({})
        };
        let res = ctx
            .call(method.clone(), &path, Some(&other.key), Some(&body))
            .await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.body);
        assert_eq!(res.code(), "RESOURCE_NOT_FOUND");
    }
    assert_eq!(
        ctx.get(&format!("/api/v1/agents/{agent}"), &tenant.key)
            .await
            .status,
        200
    );
    let listed = ctx.get("/api/v1/agents", &other.key).await;
    assert_eq!(listed.data(), &json!([]));
    let deleted = ctx
        .delete(&format!("/api/v1/agents/{agent}"), &tenant.key)
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        ctx.get(&format!("/api/v1/agents/{agent}"), &tenant.key)
            .await
            .status,
        404
    );
}

async fn llm_app() -> LlmApp {
    LlmApp::start(Backend::Sqlite).await.unwrap()
}

async fn failed_with(ctx: &LlmApp, script: Vec<Script>, agent_extra: Value) -> Value {
    let (tenant, project, agent) = setup(ctx, agent_extra).await;
    for s in script {
        ctx.llm.push(s);
    }
    let res = execute(ctx, &tenant.key, &agent, &project, json!({ "wait": 30 })).await;
    assert_eq!(res.status, 200, "{}", res.body);
    res.data().clone()
}

#[actix_web::test]
async fn a_429_is_retried_and_the_run_completes() {
    let ctx = llm_app().await;
    let limited =
        json!({ "error": { "message": "slow down", "type": "rate_limit_error", "code": null } });
    let run = failed_with(
        &ctx,
        vec![
            Script::Status(429, limited.clone()),
            Script::Status(429, limited),
            Script::Text(vec!["fine"]),
        ],
        json!({}),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "fine");
    assert_eq!(ctx.llm.requests().len(), 3);
    ctx.stop().await;
}

#[actix_web::test]
async fn server_errors_fail_the_run_after_the_retries() {
    let ctx = llm_app().await;
    let boom = json!({ "error": { "message": "upstream exploded", "type": "server_error" } });
    let run = failed_with(&ctx, vec![Script::Status(500, boom); 4], json!({})).await;
    eprintln!("N {}", ctx.llm.requests().len());
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "provider_server_error");
    assert_eq!(run["error"]["details"]["status"], 500);
    assert_eq!(
        ctx.llm.requests().len(),
        4,
        "the first try and the client's 3 retries"
    );
    let tenant = run["tenant_id"].as_str().unwrap();
    let events = ctx.state.store.outbox_events(tenant).await.unwrap();
    let failed = events
        .iter()
        .find(|e| e.event_type == "agent.failed")
        .expect("agent.failed recorded");
    assert_eq!(failed.payload["error"]["code"], "provider_server_error");
    ctx.stop().await;
}

#[actix_web::test]
async fn insufficient_quota_is_not_retried() {
    let ctx = llm_app().await;
    let quota = json!({ "error": { "message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota" } });
    let run = failed_with(&ctx, vec![Script::Status(429, quota)], json!({})).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "provider_insufficient_quota");
    assert_eq!(ctx.llm.requests().len(), 1);
    ctx.stop().await;
}

#[actix_web::test]
async fn a_stalled_stream_times_out_and_keeps_what_was_streamed() {
    let ctx = llm_app().await;
    let (tenant, project, agent) = setup(&ctx, json!({})).await;
    ctx.llm.push(Script::Stall(vec!["partial ", "answer"]));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 30 })).await;
    let run = res.data();
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "provider_timeout");
    assert_eq!(
        ctx.llm.requests().len(),
        1,
        "tokens were out, so no retry repeats them"
    );
    let events = read_sse(
        &ctx,
        &format!(
            "/api/v1/agents/{agent}/runs/{}/stream",
            run["id"].as_str().unwrap()
        ),
        &tenant.key,
        None,
    )
    .await;
    let text: String = events
        .iter()
        .filter(|e| e.1 == "token")
        .map(|e| e.2["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "partial answer");
    assert_eq!(events.last().unwrap().1, "run.failed");
    ctx.stop().await;
}

#[actix_web::test]
async fn malformed_and_cut_streams_fail_the_run_with_their_own_codes() {
    let ctx = llm_app().await;
    let run = failed_with(&ctx, vec![Script::Malformed], json!({})).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "provider_malformed_response");
    let run = failed_with(&ctx, vec![Script::Cut(vec!["half"])], json!({})).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "provider_stream_broken");
    ctx.stop().await;
}

#[actix_web::test]
async fn a_failing_provider_falls_back_to_the_next() {
    let ctx = llm_app().await;
    let denied = json!({ "error": { "message": "bad key", "type": "invalid_request_error" } });
    let run = failed_with(
        &ctx,
        vec![
            Script::Status(401, denied),
            Script::Text(vec!["from backup"]),
        ],
        json!({ "provider": "fake", "fallbacks": ["backup"] }),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], "from backup");
    assert_eq!(run["steps"][0]["provider"], "backup");
    let requests = ctx.llm.requests();
    assert_eq!(
        (requests[0]["model"].as_str(), requests[1]["model"].as_str()),
        (Some("fake-model"), Some("backup-model"))
    );
    ctx.stop().await;
}

#[actix_web::test]
async fn autonomy_sets_the_step_budget_and_whether_tools_are_offered() {
    let ctx = llm_app().await;
    // low: one step, no tools even if the agent has some.
    let run = failed_with(
        &ctx,
        vec![Script::Text(vec!["short"])],
        json!({ "tools": ["list_files"], "config": { "autonomyLevel": "low" } }),
    )
    .await;
    assert_eq!(run["status"], "completed");
    assert!(ctx.llm.requests()[0].get("tools").is_none());
    // A model that keeps asking for tools stops at the budget.
    let ls = || Script::Tools(vec![("list_files", json!({}))]);
    let run = failed_with(
        &ctx,
        vec![ls(), ls(), ls()],
        json!({ "tools": ["list_files"], "config": { "autonomyLevel": "high", "maxSteps": 2 } }),
    )
    .await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "step_budget_exhausted");
    assert_eq!(run["steps"].as_array().unwrap().len(), 2);
    ctx.stop().await;
}

#[actix_web::test]
async fn cancel_stops_a_streaming_run_and_keeps_its_partial_text() {
    let ctx = llm_app().await;
    let (tenant, project, agent) = setup(&ctx, json!({})).await;
    ctx.llm
        .push(Script::Slow(vec!["a "; 200], Duration::from_millis(25)));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({})).await;
    let run = res.data()["id"].as_str().unwrap().to_string();
    let stream = format!("/api/v1/agents/{agent}/runs/{run}/stream");
    assert!(
        ctx.until_event(&stream, &tenant.key, "token").await,
        "the answer started"
    );
    let started = std::time::Instant::now();
    let res = ctx
        .post(
            &format!("/api/v1/agents/{agent}/runs/{run}/cancel"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["status"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cancel is not held up by the stream"
    );
    let events = read_sse(
        &ctx,
        &format!("/api/v1/agents/{agent}/runs/{run}/stream"),
        &tenant.key,
        None,
    )
    .await;
    let tokens = events.iter().filter(|e| e.1 == "token").count();
    assert!(tokens > 0 && tokens < 200, "{tokens} tokens kept");
    assert_eq!(events.last().unwrap().1, "run.cancelled");
    let again = ctx
        .post(
            &format!("/api/v1/agents/{agent}/runs/{run}/cancel"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "CONFLICT");
    ctx.stop().await;
}

#[actix_web::test]
async fn a_tenant_runs_at_most_its_limit_at_once_and_a_queued_run_can_be_cancelled() {
    let ctx = llm_app().await;
    let (tenant, project, agent) = setup(&ctx, json!({})).await;
    let res = ctx
        .patch(
            &format!("/api/v1/tenants/{}/settings", tenant.id),
            &tenant.key,
            json!({ "max_concurrent_runs": 1 }),
        )
        .await;
    assert_eq!(res.status, 200);
    ctx.llm
        .push(Script::Slow(vec!["first "; 20], Duration::from_millis(20)));
    ctx.llm.push(Script::Text(vec!["third"]));
    let first = execute(&ctx, &tenant.key, &agent, &project, json!({}))
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ctx.run_until(&tenant.key, &agent, &first, |r| r["status"] == "running")
        .await;
    let second = execute(&ctx, &tenant.key, &agent, &project, json!({}))
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let third = execute(&ctx, &tenant.key, &agent, &project, json!({}))
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The limit holds them back while the first run streams (20 pieces, 20 ms apart).
    let held = holds_for(Duration::from_millis(150), || async {
        for queued in [&second, &third] {
            let path = format!("/api/v1/agents/{agent}/runs/{queued}");
            if ctx.get(&path, &tenant.key).await.data()["status"] != "queued" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(held, "the limit holds them back");
    // Cancelled before it started: it never reaches the provider.
    let res = ctx
        .post(
            &format!("/api/v1/agents/{agent}/runs/{second}/cancel"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.data()["status"], "cancelled");
    assert!(res.data()["started_at"].is_null());
    let done = ctx
        .run_until(&tenant.key, &agent, &third, |r| r["status"] == "completed")
        .await;
    assert_eq!(done["output"], "third");
    let first = ctx
        .run_until(&tenant.key, &agent, &first, |r| r["status"] == "completed")
        .await;
    assert!(
        first["finished_at"].as_str().unwrap() <= done["started_at"].as_str().unwrap(),
        "one at a time"
    );
    assert_eq!(ctx.llm.requests().len(), 2);
    ctx.stop().await;
}

#[actix_web::test]
async fn a_run_over_its_time_limit_fails() {
    let ctx = llm_app().await;
    let (tenant, project, agent) = setup(&ctx, json!({ "config": { "timeoutSeconds": 1 } })).await;
    ctx.llm
        .push(Script::Slow(vec!["tick "; 100], Duration::from_millis(50)));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 10 })).await;
    assert_eq!(res.data()["status"], "failed", "{}", res.body);
    assert_eq!(res.data()["error"]["code"], "run_timeout");
    ctx.stop().await;
}

#[actix_web::test]
async fn the_offline_provider_answers_without_any_network() {
    let app = TestApp::spawn(Backend::Sqlite, |f| f).await.unwrap();
    let (tenant, project, agent) = setup(&app, json!({})).await;
    let res = execute(&app, &tenant.key, &agent, &project, json!({ "wait": true })).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.data()["status"], "completed");
    assert_eq!(res.data()["steps"][0]["provider"], "offline");
    assert!(res.data()["output"]
        .as_str()
        .unwrap()
        .contains("offline provider"));
    app.stop().await;
}

/// A provider whose code panics, standing for a bug anywhere in a run.
struct PanickingProvider;

#[async_trait::async_trait]
impl dgidgi_actors::provider::LlmProvider for PanickingProvider {
    fn default_model(&self) -> &str {
        "boom"
    }

    async fn stream_chat(
        &self,
        _: dgidgi_actors::provider::ChatRequest,
    ) -> Result<dgidgi_actors::provider::ChunkStream, dgidgi_actors::provider::Error> {
        panic!("a bug in the provider")
    }
}

#[actix_web::test]
async fn a_panic_in_a_run_fails_that_run_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |f| f,
        |p| p.with("panicky", std::sync::Arc::new(PanickingProvider)),
    )
    .await
    .unwrap();
    let (tenant, project, broken) = setup(&app, json!({ "provider": "panicky" })).await;
    let healthy = app.agent(&tenant.key, json!({ "name": "fine" })).await;
    for _ in 0..3 {
        let res = execute(&app, &tenant.key, &broken, &project, json!({ "wait": 10 })).await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.data()["status"], "failed");
        assert_eq!(res.data()["error"]["code"], "internal_error");
        // Everyone else is still served, runs included.
        let res = execute(&app, &tenant.key, &healthy, &project, json!({ "wait": 10 })).await;
        assert_eq!(res.data()["status"], "completed", "{}", res.body);
        assert_eq!(app.get("/api/v1/projects", &tenant.key).await.status, 200);
    }
    app.stop().await;
}

#[actix_web::test]
async fn an_execute_retried_with_its_idempotency_key_starts_one_run() {
    let ctx = llm_app().await;
    let (tenant, project, agent) = setup(&ctx, json!({})).await;
    let send = || async {
        let res = ctx
            .client
            .post(format!("{}/api/v1/agents/{agent}/execute", ctx.address))
            .bearer_auth(&tenant.key)
            .header("idempotency-key", "run-once")
            .json(&json!({ "goal": "once", "projectId": project }))
            .send()
            .await
            .unwrap();
        TestApp::reply(res).await
    };
    let first = send().await;
    let again = send().await;
    assert_eq!(first.status, 202);
    assert_eq!(again.body, first.body);
    let runs = ctx
        .get(&format!("/api/v1/agents/{agent}/runs"), &tenant.key)
        .await;
    assert_eq!(runs.data().as_array().unwrap().len(), 1);
    ctx.stop().await;
}
