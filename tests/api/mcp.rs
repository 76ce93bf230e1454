//! MCP both ways, against real peers nobody here wrote: the reference server
//! (`@modelcontextprotocol/server-everything`, Streamable HTTP) registered by a tenant and
//! called by its agents' runs, and the official TypeScript client calling a tenant's agents
//! through `/mcp`. The Node packages live in `tests/mcp` (`npm ci` there; `.ci/run` does
//! it); without Node or them the tests say they were skipped, except under CI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use figment::providers::Serialized;
use serde_json::{json, Value};
use sqlx::Row;

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{Backend, TestTenant};

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// Whether Node and the MCP packages are here; under CI they must be.
fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let installed = peers()
        .join("node_modules/@modelcontextprotocol/server-everything")
        .exists();
    if node && installed {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the MCP tests need Node.js and `npm ci` in tests/mcp under CI"
    );
    eprintln!("skipped: Node.js or tests/mcp/node_modules is missing (npm ci --prefix tests/mcp)");
    false
}

/// The reference MCP server in its Streamable HTTP mode, on a free loopback port; stopped
/// when dropped.
struct Everything {
    child: Child,
    url: String,
}

impl Everything {
    fn start() -> Self {
        let dir = peers();
        let mut child = Command::new("node")
            .arg("--require")
            .arg(dir.join("loopback.cjs"))
            .arg(dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", "0")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads on to the end, so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(port.trim().to_string());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server-everything says its port");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An app whose outbound calls may reach loopback (where the test's MCP server is).
async fn app(backend: Backend) -> Option<LlmApp> {
    LlmApp::start_with(backend, |f| {
        f.merge(Serialized::default("outbound.allow_private_targets", true))
            .merge(Serialized::default("mcp.call_timeout_secs", 5))
    })
    .await
}

async fn register(ctx: &LlmApp, tenant: &TestTenant, url: &str) -> Value {
    let res = ctx
        .post(
            "/api/v1/mcp-servers",
            &tenant.key,
            json!({ "name": "everything", "url": url, "headers": { "X-Api-Token": "s3cret-token" } }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.data().clone()
}

async fn run_to_end(ctx: &LlmApp, tenant: &TestTenant, agent: &str, project: &str) -> Value {
    let res = crate::runs::execute(ctx, &tenant.key, agent, project, json!({ "wait": 20 })).await;
    assert_eq!(res.status, 200, "{}", res.body);
    res.data().clone()
}

/// The results the run's tool calls got, from its steps.
fn tool_results(run: &Value) -> Vec<Value> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tool_results"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[actix_web::test]
async fn sqlite_registration_lists_the_real_tools_and_a_run_calls_one() {
    registration_lists_the_real_tools_and_a_run_calls_one(Backend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_registration_lists_the_real_tools_and_a_run_calls_one() {
    registration_lists_the_real_tools_and_a_run_calls_one(Backend::Postgres).await;
}

async fn registration_lists_the_real_tools_and_a_run_calls_one(backend: Backend) {
    if !available() {
        return;
    }
    let Some(ctx) = app(backend).await else {
        return;
    };
    let server = Everything::start();
    let tenant = ctx.tenant("Acme", "free").await;
    let registered = register(&ctx, &tenant, &server.url).await;
    assert_eq!(registered["header_names"], json!(["X-Api-Token"]));
    assert!(
        registered["tool_count"].as_u64().unwrap() >= 2,
        "{registered}"
    );
    let id = registered["id"].as_str().unwrap();

    // The header's value is shown nowhere and stored only sealed.
    let listed = ctx.get("/api/v1/mcp-servers", &tenant.key).await;
    assert_eq!(listed.data().as_array().unwrap().len(), 1);
    assert!(
        !listed.body.to_string().contains("s3cret"),
        "{}",
        listed.body
    );
    let row = sqlx::query("SELECT sealed_headers FROM mcp_servers")
        .fetch_one(&ctx.database().await)
        .await
        .unwrap();
    let sealed: String = row.get(0);
    assert!(!sealed.contains("s3cret"), "stored in clear: {sealed}");

    let tools = ctx
        .get(&format!("/api/v1/mcp-servers/{id}/tools"), &tenant.key)
        .await;
    assert_eq!(tools.status, 200, "{}", tools.body);
    let sum = tools
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "get-sum")
        .expect("server-everything lists get-sum")
        .clone();
    assert_eq!(sum["reference"], "mcp:everything/get-sum");
    assert!(sum["input_schema"]["properties"]["a"].is_object(), "{sum}");

    // An agent names the tool; the model asks for it; the real server answers.
    let project = ctx.project(&tenant.key, "web").await;
    let agent = ctx
        .agent(
            &tenant.key,
            json!({ "name": "adder", "tools": ["mcp:everything/get-sum", "write_file"] }),
        )
        .await;
    ctx.llm.push(Script::Tools(vec![(
        "mcp__everything__get-sum",
        json!({ "a": 2, "b": 40 }),
    )]));
    ctx.llm.push(Script::EchoToolResult);
    let run = run_to_end(&ctx, &tenant, &agent, &project).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        run["output"].as_str().unwrap().contains("42"),
        "the output carries the server's answer: {run}"
    );
    let results = tool_results(&run);
    assert_eq!(results.len(), 1, "{run}");
    assert_eq!(results[0]["is_error"], false, "{run}");
    // What the model was offered: the MCP tool under its function name, with its schema.
    let first = &ctx.llm.requests()[0];
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["write_file", "mcp__everything__get-sum"]);
    assert!(first["tools"][1]["function"]["parameters"]["properties"]["b"].is_object());

    // Refresh lists again; a changed URL that answers nothing is refused and changes nothing.
    let refreshed = ctx
        .post(
            &format!("/api/v1/mcp-servers/{id}/refresh"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let moved = ctx
        .patch(
            &format!("/api/v1/mcp-servers/{id}"),
            &tenant.key,
            json!({ "url": "http://127.0.0.1:9/mcp" }),
        )
        .await;
    assert_eq!(
        (moved.status, moved.code()),
        (400, "VALIDATION_ERROR"),
        "{}",
        moved.body
    );
    let kept = ctx
        .get(&format!("/api/v1/mcp-servers/{id}"), &tenant.key)
        .await;
    assert_eq!(kept.data()["url"], server.url.as_str());
    ctx.stop().await;
}

#[actix_web::test]
async fn a_tool_error_and_a_stopped_server_fail_the_call_not_the_run() {
    if !available() {
        return;
    }
    let ctx = app(Backend::Sqlite).await.unwrap();
    let mut server = Everything::start();
    let tenant = ctx.tenant("Acme", "free").await;
    register(&ctx, &tenant, &server.url).await;
    let project = ctx.project(&tenant.key, "web").await;
    let agent = ctx
        .agent(
            &tenant.key,
            json!({ "name": "all", "tools": ["mcp:everything/*"] }),
        )
        .await;

    // Arguments the tool refuses: its error is the call's result, and the run goes on.
    ctx.llm.push(Script::Tools(vec![(
        "mcp__everything__get-sum",
        json!({ "a": "two", "b": 40 }),
    )]));
    ctx.llm.push(Script::EchoToolResult);
    let run = run_to_end(&ctx, &tenant, &agent, &project).await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&run);
    assert_eq!(results[0]["is_error"], true, "{run}");

    // The echo tool works; then the server goes away mid-run: that call fails cleanly.
    ctx.llm.push(Script::Tools(vec![(
        "mcp__everything__echo",
        json!({ "message": "hello from the run" }),
    )]));
    ctx.llm.push(Script::EchoToolResult);
    let run = run_to_end(&ctx, &tenant, &agent, &project).await;
    assert!(
        run["output"]
            .as_str()
            .unwrap()
            .contains("hello from the run"),
        "{run}"
    );
    server.stop();
    ctx.llm.push(Script::Tools(vec![(
        "mcp__everything__echo",
        json!({ "message": "anyone there?" }),
    )]));
    ctx.llm.push(Script::EchoToolResult);
    let run = run_to_end(&ctx, &tenant, &agent, &project).await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&run);
    assert_eq!(results[0]["is_error"], true, "{run}");
    let said = results[0]["output"].as_str().unwrap();
    assert!(said.contains("MCP server 'everything'"), "{said}");
    // The server still answers its other requests.
    let health = ctx.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    ctx.stop().await;
}

#[actix_web::test]
async fn no_tenant_sees_or_uses_another_tenants_mcp_servers() {
    if !available() {
        return;
    }
    let ctx = app(Backend::Sqlite).await.unwrap();
    let server = Everything::start();
    let a = ctx.tenant("Acme", "free").await;
    let b = ctx.tenant("Beta", "free").await;
    let id = register(&ctx, &a, &server.url).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let listed = ctx.get("/api/v1/mcp-servers", &b.key).await;
    assert_eq!(listed.data(), &json!([]), "{}", listed.body);
    for path in [
        format!("/api/v1/mcp-servers/{id}"),
        format!("/api/v1/mcp-servers/{id}/tools"),
    ] {
        let res = ctx.get(&path, &b.key).await;
        assert_eq!(res.status, 404, "{path}: {}", res.body);
    }
    let patched = ctx
        .patch(
            &format!("/api/v1/mcp-servers/{id}"),
            &b.key,
            json!({ "name": "mine" }),
        )
        .await;
    assert_eq!(patched.status, 404, "{}", patched.body);
    let refreshed = ctx
        .post(
            &format!("/api/v1/mcp-servers/{id}/refresh"),
            &b.key,
            json!({}),
        )
        .await;
    assert_eq!(refreshed.status, 404, "{}", refreshed.body);
    let deleted = ctx
        .delete(&format!("/api/v1/mcp-servers/{id}"), &b.key)
        .await;
    assert_eq!(deleted.status, 404, "{}", deleted.body);
    // Naming A's server in B's agent is naming nothing.
    let agent = ctx
        .post(
            "/api/v1/agents",
            &b.key,
            json!({ "name": "thief", "tools": ["mcp:everything/echo"] }),
        )
        .await;
    assert_eq!(
        (agent.status, agent.code()),
        (400, "VALIDATION_ERROR"),
        "{}",
        agent.body
    );
    // B may register its own server under the same name.
    register(&ctx, &b, &server.url).await;
    let mine = ctx.get("/api/v1/mcp-servers", &b.key).await;
    assert_eq!(mine.data().as_array().unwrap().len(), 1);
    let again = ctx
        .post(
            "/api/v1/mcp-servers",
            &a.key,
            json!({ "name": "everything", "url": server.url }),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let gone = ctx
        .delete(&format!("/api/v1/mcp-servers/{id}"), &a.key)
        .await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    ctx.stop().await;
}

#[actix_web::test]
async fn the_outbound_guard_refuses_a_loopback_mcp_server() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let tenant = ctx.tenant("Acme", "free").await;
    for url in [
        "http://127.0.0.1:9/mcp",
        "http://localhost:9/mcp",
        "http://[::1]:9/mcp",
        "http://169.254.169.254/mcp",
        "file:///etc/passwd",
    ] {
        let res = ctx
            .post(
                "/api/v1/mcp-servers",
                &tenant.key,
                json!({ "name": "local", "url": url }),
            )
            .await;
        assert_eq!(
            (res.status, res.code()),
            (400, "VALIDATION_ERROR"),
            "{url}: {}",
            res.body
        );
    }
    let bad_name = ctx
        .post(
            "/api/v1/mcp-servers",
            &tenant.key,
            json!({ "name": "has space", "url": "https://example.com/mcp" }),
        )
        .await;
    assert_eq!(bad_name.status, 400, "{}", bad_name.body);
    ctx.stop().await;
}

/// The official TypeScript MCP client, run once: its JSON answer.
fn client(url: &str, key: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(peers().join("client.mjs"))
        .arg(url)
        .arg(key)
        .args(args)
        .current_dir(peers())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

#[actix_web::test]
async fn an_mcp_client_lists_and_runs_only_its_own_tenants_agents() {
    if !available() {
        return;
    }
    let ctx = app(Backend::Sqlite).await.unwrap();
    let a = ctx.tenant("Acme", "free").await;
    let b = ctx.tenant("Beta", "free").await;
    let project = ctx.project(&a.key, "web").await;
    ctx.agent(
        &a.key,
        json!({ "name": "Release notes", "description": "Writes release notes", "projectId": project }),
    )
    .await;
    ctx.agent(&b.key, json!({ "name": "secret-agent" })).await;
    let url = format!("{}/mcp", ctx.address);

    let listed = client(&url, &a.key, &["list"]);
    assert_eq!(listed["server"]["name"], "dgidgi", "{listed}");
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["run_Release_notes"], "{listed}");
    assert_eq!(listed["tools"][0]["description"], "Writes release notes");

    ctx.llm.push(Script::Slow(
        vec!["Version 2 ", "fixes everything."],
        Duration::from_millis(50),
    ));
    let called = client(
        &url,
        &a.key,
        &["call", "run_Release_notes", r#"{"goal": "Notes for v2"}"#],
    );
    let result = &called["result"];
    assert_eq!(result["isError"], false, "{called}");
    assert_eq!(
        result["content"][0]["text"], "Version 2 fixes everything.",
        "{called}"
    );
    assert_eq!(
        result["structuredContent"]["status"], "completed",
        "{called}"
    );
    assert!(
        !called["progress"].as_array().unwrap().is_empty(),
        "progress while the run works: {called}"
    );
    let run_id = result["structuredContent"]["runId"].as_str().unwrap();
    let runs = ctx
        .get(
            &format!(
                "/api/v1/agents/{}/runs/{run_id}",
                result["structuredContent"]["agentId"].as_str().unwrap()
            ),
            &a.key,
        )
        .await;
    assert_eq!(runs.data()["status"], "completed");

    // Another tenant's key sees only its own agents, and cannot run A's.
    let other = client(&url, &b.key, &["list"]);
    let names: Vec<&str> = other["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["run_secret-agent"], "{other}");
    let refused = client(
        &url,
        &b.key,
        &["call", "run_Release_notes", r#"{"goal": "x"}"#],
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no tool"),
        "{refused}"
    );
    // No key, no MCP.
    let anonymous = client(&url, "not-a-key", &["list"]);
    assert!(anonymous["error"].is_string(), "{anonymous}");
    ctx.stop().await;
}

#[actix_web::test]
async fn a_client_that_goes_away_cancels_its_run() {
    // A gone client is noticed when the next keep-alive cannot be written.
    let ctx = LlmApp::start_with(Backend::Sqlite, |f| {
        f.merge(Serialized::default("streams.heartbeat_secs", 1))
    })
    .await
    .unwrap();
    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "web").await;
    let agent = ctx
        .agent(&tenant.key, json!({ "name": "slow", "projectId": project }))
        .await;
    // Ten seconds of answer, a token every quarter of a second.
    ctx.llm
        .push(Script::Slow(vec!["tick "; 40], Duration::from_millis(250)));
    let call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "run_slow", "arguments": { "goal": "think" }, "_meta": { "progressToken": "p1" } }
    });
    let mut res = ctx
        .client
        .post(format!("{}/mcp", ctx.address))
        .bearer_auth(&tenant.key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The first progress notification: the run is working.
    let first = res.chunk().await.unwrap().unwrap_or_default();
    let mut seen = String::from_utf8_lossy(&first).to_string();
    while !seen.contains("notifications/progress") {
        let more = res.chunk().await.unwrap().expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&more));
    }
    let run = dgidgi_testkit::until(Duration::from_secs(5), || async {
        let runs = ctx
            .get(&format!("/api/v1/agents/{agent}/runs"), &tenant.key)
            .await;
        runs.data().as_array().and_then(|r| r.first().cloned())
    })
    .await
    .expect("the run exists");
    assert_eq!(run["status"], "running", "{run}");
    drop(res);
    let id = run["id"].as_str().unwrap().to_string();
    let ended = dgidgi_testkit::until(Duration::from_secs(10), || async {
        let now = ctx
            .get(&format!("/api/v1/agents/{agent}/runs/{id}"), &tenant.key)
            .await;
        (now.data()["status"] == "cancelled").then_some(())
    })
    .await;
    let now = ctx
        .get(&format!("/api/v1/agents/{agent}/runs/{id}"), &tenant.key)
        .await;
    assert!(
        ended.is_some(),
        "the run is cancelled once its caller has gone: {}",
        now.body
    );
    ctx.stop().await;
}

#[actix_web::test]
async fn an_mcp_tool_waits_for_approval_like_a_built_in_one() {
    if !available() {
        return;
    }
    let ctx = app(Backend::Sqlite).await.unwrap();
    let server = Everything::start();
    let tenant = ctx.tenant("Acme", "free").await;
    register(&ctx, &tenant, &server.url).await;
    let project = ctx.project(&tenant.key, "web").await;
    let agent = ctx
        .agent(
            &tenant.key,
            json!({ "name": "careful", "tools": ["mcp:everything/echo", "mcp:everything/get-sum"],
                    "config": { "approvals": ["mcp:everything/*"] } }),
        )
        .await;
    ctx.llm.push(Script::Tools(vec![(
        "mcp__everything__echo",
        json!({ "message": "as the model wrote it" }),
    )]));
    ctx.llm.push(Script::EchoToolResult);
    let res =
        crate::runs::execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 10 })).await;
    assert_eq!(res.status, 202, "{}", res.body);
    let run = res.data().clone();
    assert_eq!(run["status"], "requires_action", "{run}");
    assert_eq!(
        run["pending_tool_calls"][0]["name"], "mcp__everything__echo",
        "{run}"
    );
    let id = run["id"].as_str().unwrap();
    let answered = ctx
        .post(
            &format!("/api/v1/agents/{agent}/runs/{id}/approve"),
            &tenant.key,
            json!({ "decisions": [{ "toolCallId": "call_0", "approve": true,
                                    "arguments": { "message": "as a human edited it" } }] }),
        )
        .await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    let done = dgidgi_testkit::until(Duration::from_secs(10), || async {
        let now = ctx
            .get(&format!("/api/v1/agents/{agent}/runs/{id}"), &tenant.key)
            .await;
        (now.data()["status"] == "completed").then(|| now.data().clone())
    })
    .await
    .expect("the run completes once its call is answered");
    assert!(
        done["output"]
            .as_str()
            .unwrap()
            .contains("as a human edited it"),
        "the server ran the edited call: {done}"
    );
    ctx.stop().await;
}
