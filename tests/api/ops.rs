//! Operators: `/metrics` during a run, the live actor tree and its stream, JSON logs with
//! request, tenant and run ids.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::Logged;
use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{Backend, TestApp};

async fn metrics(app: &TestApp, key: &str) -> (u16, String) {
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The value of the first sample of `series` (name with labels, as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts a slow run (20 tokens, 60 ms apart); returns (tenant key, tenant id, agent, run).
async fn slow_run(ctx: &LlmApp) -> (String, String, String, String) {
    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "web").await;
    let agent = ctx.agent(&tenant.key, json!({ "name": "slow" })).await;
    ctx.llm
        .push(Script::Slow(vec!["tick "; 20], Duration::from_millis(60)));
    let res = ctx
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "count", "projectId": project }),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.body);
    let run = res.data()["id"].as_str().unwrap().to_string();
    (tenant.key, tenant.id, agent, run)
}

#[actix_web::test]
async fn metrics_during_a_run_show_the_run_its_tokens_and_the_actors() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let (key, _, agent, run) = slow_run(&ctx).await;
    ctx.run_until(&key, &agent, &run, |r| r["status"] == "running")
        .await;
    let (status, during) = metrics(&ctx, &ctx.operator_key).await;
    assert_eq!(status, 200);
    assert!(
        sample(&during, "dgidgi_actors_live{kind=\"run\"}").unwrap() >= 1.0,
        "{during}"
    );
    assert!(sample(&during, "dgidgi_actors_live{kind=\"tenant\"}").unwrap() >= 1.0);
    assert!(sample(&during, "dgidgi_actors_live{kind=\"webhook\"}").unwrap() >= 1.0);
    assert!(sample(&during, "dgidgi_runs_started_total").unwrap() >= 1.0);
    assert!(sample(&during, "dgidgi_runs_live{state=\"running\"}").unwrap() >= 1.0);
    assert!(during.contains("dgidgi_actor_messages_total{kind=\"tenant\"}"));
    assert!(during.contains("dgidgi_actor_mailbox_depth{kind=\"run\"}"));
    assert!(during.contains(
        "dgidgi_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/agents/{id}/execute\",status=\"202\"}"
    ), "{during}");

    ctx.run_until(&key, &agent, &run, |r| r["status"] == "completed")
        .await;
    let (_, after) = metrics(&ctx, &ctx.operator_key).await;
    assert!(sample(&after, "dgidgi_runs_finished_total{status=\"completed\"}").unwrap() >= 1.0);
    let tokens = after
        .lines()
        .find(|l| l.starts_with("dgidgi_llm_tokens_out_total{") && l.contains("provider=\"fake\""))
        .unwrap_or_else(|| panic!("no token series for the fake provider: {after}"));
    assert!(tokens.contains("model=\""), "{tokens}");
    assert!(after.contains("dgidgi_run_duration_seconds_bucket"));
    assert!(after.contains("dgidgi_step_duration_seconds_count"));
    assert!(after.contains("# TYPE dgidgi_runs_finished_total counter"));

    // Operators only.
    assert_eq!(metrics(&ctx, &key).await.0, 403);
    assert_eq!(metrics(&ctx, "chy_sdk_nope").await.0, 401);
    ctx.stop().await;
}

#[actix_web::test]
async fn the_actor_tree_shows_tenants_with_their_runs_and_sessions() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let (key, tenant_id, agent, run) = slow_run(&ctx).await;
    ctx.run_until(&key, &agent, &run, |r| r["status"] == "running")
        .await;
    let project = ctx.project(&key, "chat").await;
    let session = ctx
        .post(
            "/api/v1/chat/sessions",
            &key,
            json!({ "projectId": project }),
        )
        .await;
    let session = session.data()["id"].as_str().unwrap().to_string();
    ctx.llm.push(Script::Text(vec!["hi"]));
    let res = ctx
        .post(
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &key,
            json!({ "content": "hello" }),
        )
        .await;
    assert_eq!(res.status, 202);

    let res = ctx.get("/api/v1/ops/actors", &ctx.operator_key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let tree = res.data();
    let branch = tree["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == tenant_id.as_str())
        .unwrap_or_else(|| panic!("tenant missing: {tree}"));
    assert_eq!(branch["actor"]["kind"], "tenant");
    assert_eq!(branch["actor"]["state"], "live");
    let live_run = &branch["runs"][0];
    assert_eq!(live_run["id"], run.as_str());
    assert_eq!(live_run["kind"], "run");
    assert_eq!(live_run["state"], "running");
    for field in [
        "age_secs",
        "mailbox_depth",
        "restarts",
        "messages_handled",
        "started_at",
    ] {
        assert!(!live_run[field].is_null(), "{field}: {live_run}");
    }
    assert_eq!(branch["sessions"][0]["id"], session.as_str());
    assert_eq!(tree["webhooks"]["kind"], "webhook");
    assert!(tree["totals"]["run"].as_u64().unwrap() >= 1);

    let res = ctx.get("/api/v1/ops/actors", &key).await;
    assert_eq!(res.status, 403, "tenants do not see the runtime");
    ctx.stop().await;
}

#[actix_web::test]
async fn the_actor_stream_sends_the_tree_as_it_changes() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let mut res = ctx
        .client
        .get(format!("{}/api/v1/ops/actors/stream", ctx.address))
        .bearer_auth(&ctx.operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (_, _, _, run) = slow_run(&ctx).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = res.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: metrics") && seen.contains(&format!("\"id\":\"{run}\"")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    assert!(seen.contains("event: actors"));
    ctx.stop().await;
}

#[actix_web::test]
async fn json_logs_carry_request_tenant_and_run_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Logged::start(
        dir.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info,dgidgi=debug")],
    );
    let (base, operator) = (server.base.clone(), server.operator.clone());
    let client = reqwest::Client::new();
    let post = |path: &str, key: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let tenant: Value = post("/tenants", &operator, json!({ "name": "Acme" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant_id = tenant["data"]["id"].as_str().unwrap().to_string();
    let key = tenant["data"]["api_key"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let project: Value = post("/projects", &key, json!({ "name": "web" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent: Value = post(
        "/agents",
        &key,
        json!({ "name": "a", "provider": "offline" }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let run: Value = post(
        &format!("/agents/{}/execute", agent["data"]["id"].as_str().unwrap()),
        &key,
        json!({ "goal": "hi", "projectId": project["data"]["id"], "wait": true }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let run_id = run["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(run["data"]["status"], "completed");
    let lines: Vec<Value> = server
        .stop()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_span = |line: &Value, span: &str, field: &str, value: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == span && s[field] == value))
    };
    assert!(
        lines.iter().any(|l| l["message"] == "request"
            && in_span(l, "request", "tenant_id", &tenant_id)
            && l["spans"][0]["request_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("req_"))),
        "no request line with its request and tenant ids"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "run ended"
            && in_span(l, "run", "run_id", &run_id)
            && in_span(l, "run", "tenant_id", &tenant_id)),
        "no run line with its run and tenant ids"
    );
}
