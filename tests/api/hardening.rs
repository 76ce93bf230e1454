//! What a security probe, a fault-injection pass and a newcomer found (issue 12), each
//! over real HTTP: query tokens, credentials, secrets in answers, the tool sandbox, limits
//! on what a model or a client may pile up, and event streams that end or stop.

use std::io::{Read, Write};
use std::time::Duration;

use figment::providers::Serialized;
use reqwest::Method;
use serde_json::{json, Value};

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{eventually, holds_for, Backend, TestApp};
use crate::runs::{execute, setup};

async fn sqlite(configure: impl FnOnce(figment::Figment) -> figment::Figment) -> TestApp {
    TestApp::spawn(Backend::Sqlite, configure).await.unwrap()
}

async fn session(app: &TestApp, key: &str) -> String {
    let project = app.project(key, "p").await;
    let res = app
        .post(
            "/api/v1/chat/sessions",
            key,
            json!({ "projectId": project }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.data()["id"].as_str().unwrap().to_string()
}

async fn status_of(app: &TestApp, path: &str, query_token: &str) -> (u16, Value) {
    let res = app
        .client
        .get(format!("{}{path}?access_token={query_token}", app.address))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = if res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"))
    {
        res.json().await.unwrap()
    } else {
        Value::Null
    };
    (status, body)
}

#[actix_web::test]
async fn query_tokens_are_trimmed_never_keys_and_only_on_streams() {
    let app = sqlite(|f| f).await;
    let tenant = app.tenant("Acme", "free").await;
    let session = session(&app, &tenant.key).await;
    let stream = format!("/api/v1/chat/sessions/{session}/stream");
    // An API key in the URL, however it is padded, is refused and the refusal says why.
    for padded in [
        format!("%20{}", tenant.key),
        format!("+{}", tenant.key),
        format!("%09{}", tenant.key),
        tenant.key.clone(),
    ] {
        let (status, body) = status_of(&app, &stream, &padded).await;
        assert_eq!(status, 401, "{padded}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("not accepted in URLs"), "{message}");
    }
    // A JWT in the URL opens an event stream, and nothing else.
    let token = app.token(&tenant.key).await.data()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let op_token = app.token(&app.operator_key).await.data()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for (path, token) in [
        ("/api/v1/api-keys", &token),
        ("/api/v1/projects", &token),
        ("/metrics", &op_token),
        ("/api/v1/tenants", &op_token),
    ] {
        let (status, body) = status_of(&app, path, token).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let res = app
        .client
        .get(format!("{}{stream}?access_token={token}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    app.stop().await;
}

#[actix_web::test]
async fn two_authorization_headers_are_refused_and_secrets_are_never_cached() {
    let app = sqlite(|f| f).await;
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .client
        .get(format!("{}/api/v1/projects", app.address))
        .header("authorization", format!("Bearer {}", tenant.key))
        .header("authorization", "Bearer chy_sdk_another")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Every answer that carries a secret says no-store.
    let created = app
        .client
        .post(format!("{}/api/v1/tenants", app.address))
        .bearer_auth(&app.operator_key)
        .json(&json!({ "name": "Other" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let key = app
        .client
        .post(format!("{}/api/v1/api-keys", app.address))
        .bearer_auth(&tenant.key)
        .json(&json!({ "name": "ci", "type": "ci" }))
        .send()
        .await
        .unwrap();
    assert_eq!(key.headers()["cache-control"], "no-store");
    let token = app
        .client
        .post(format!("{}/api/v1/auth/token", app.address))
        .json(&json!({ "api_key": tenant.key }))
        .send()
        .await
        .unwrap();
    assert_eq!(token.headers()["cache-control"], "no-store");
    let listed = app.get("/api/v1/projects", &tenant.key).await;
    assert!(listed.header("cache-control").is_none());
    app.stop().await;
}

#[actix_web::test]
async fn the_token_endpoint_takes_the_bearer_header_whatever_the_body() {
    let app = sqlite(|f| f).await;
    let tenant = app.tenant("Acme", "free").await;
    for body in [json!({}), json!({ "note": "ignored" })] {
        let res = app
            .call(
                Method::POST,
                "/api/v1/auth/token",
                Some(&tenant.key),
                Some(&body),
            )
            .await;
        assert_eq!(res.status, 200, "{body}: {}", res.body);
        assert!(res.data()["access_token"].is_string());
    }
    app.stop().await;
}

#[actix_web::test]
async fn scopes_bound_region_routes_and_revoking_keys() {
    let app = sqlite(|f| f).await;
    let tenant = app.tenant("Acme", "growth").await;
    let make = |scopes: Value| {
        let app = &app;
        let key = tenant.key.clone();
        async move {
            let res = app
                .post(
                    "/api/v1/api-keys",
                    &key,
                    json!({ "name": "k", "type": "sdk", "scopes": scopes }),
                )
                .await;
            assert_eq!(res.status, 201, "{}", res.body);
            (
                res.data()["key"].as_str().unwrap().to_string(),
                res.data()["id"].as_str().unwrap().to_string(),
            )
        }
    };
    let (projects_only, _) = make(json!(["projects:read"])).await;
    for path in ["/api/v1/regions", "/api/v1/routing-info"] {
        let res = app.get(path, &projects_only).await;
        assert_eq!(res.status, 403, "{path}: {}", res.body);
        let res = app.get(path, &tenant.key).await;
        assert_eq!(res.status, 200, "{path}: {}", res.body);
    }
    // A key that may only manage keys cannot revoke one that holds more than it does.
    let (keys_only, keys_only_id) = make(json!(["keys:read", "keys:write"])).await;
    let (_, broad_id) = make(json!(["projects:read", "projects:write"])).await;
    let res = app
        .delete(&format!("/api/v1/api-keys/{broad_id}"), &keys_only)
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    let res = app
        .delete(&format!("/api/v1/api-keys/{}", tenant.key_id), &keys_only)
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    let listed = app.get("/api/v1/projects", &tenant.key).await;
    assert_eq!(listed.status, 200, "the broad key still works");
    // It may revoke itself, and the broad key may revoke anything of the tenant.
    let res = app
        .delete(&format!("/api/v1/api-keys/{broad_id}"), &tenant.key)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app
        .delete(&format!("/api/v1/api-keys/{keys_only_id}"), &keys_only)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    app.stop().await;
}

#[actix_web::test]
async fn errors_always_carry_details_and_never_a_rust_type_name() {
    let app = sqlite(|f| f).await;
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "p").await;
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/api/v1/projects/{project}"),
            json!(["a"]),
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{project}"),
            json!("text"),
        ),
        (Method::POST, "/api/v1/projects".to_string(), json!(42)),
        (Method::GET, "/api/v1/nowhere".to_string(), Value::Null),
        (Method::PUT, "/api/v1/projects".to_string(), Value::Null),
    ] {
        let body = (!body.is_null()).then_some(body);
        let res = app
            .call(method.clone(), &path, Some(&tenant.key), body.as_ref())
            .await;
        assert!(
            res.status >= 400 && res.status < 500,
            "{method} {path}: {}",
            res.body
        );
        assert!(
            res.body["error"]["details"].is_object(),
            "{method} {path}: {}",
            res.body
        );
        let message = res.body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("struct ") && !message.contains("enum "),
            "{method} {path}: {message}"
        );
    }
    let res = app.get("/api/v1/projects", "chy_sdk_x").await;
    assert_eq!(res.body["error"]["details"], json!({}));
    app.stop().await;
}

#[actix_web::test]
async fn workspace_tools_do_not_follow_symbolic_links() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let (tenant, project, agent) = setup(
        &ctx,
        json!({ "tools": ["write_file", "read_file", "list_files"], "config": { "autonomyLevel": "medium" } }),
    )
    .await;
    // A secret outside the workspace, and a link to it (and to its folder) inside it.
    let outside = ctx.dir().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "the operator's secret").unwrap();
    let workspace = ctx
        .dir()
        .join("storage/us-east")
        .join(&tenant.id)
        .join("projects")
        .join(&project);
    std::fs::create_dir_all(&workspace).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), workspace.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, workspace.join("dir")).unwrap();
    ctx.llm.push(Script::Tools(vec![
        ("read_file", json!({ "path": "link.txt" })),
        ("read_file", json!({ "path": "dir/secret.txt" })),
        (
            "write_file",
            json!({ "path": "dir/planted.txt", "content": "x" }),
        ),
    ]));
    ctx.llm.push(Script::Text(vec!["done"]));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 20 })).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let results = &res.data()["steps"][0]["tool_results"];
    for result in results.as_array().unwrap() {
        assert_eq!(result["is_error"], true, "{result}");
        assert!(
            result["output"].as_str().unwrap().contains("symbolic link"),
            "{result}"
        );
    }
    assert!(!res.body.to_string().contains("the operator's secret"));
    assert!(!outside.join("planted.txt").exists());
    ctx.stop().await;
}

#[actix_web::test]
async fn a_huge_tool_call_or_answer_fails_its_step_with_a_clear_code() {
    let ctx = LlmApp::start_with(Backend::Sqlite, |f| {
        f.merge(Serialized::default("llm.max_tool_arguments_bytes", 100_000))
            .merge(Serialized::default("llm.max_step_output_bytes", 100_000))
    })
    .await
    .unwrap();
    let (tenant, project, agent) = setup(
        &ctx,
        json!({ "tools": ["write_file"], "config": { "autonomyLevel": "medium" } }),
    )
    .await;
    let big = "x".repeat(300_000);
    ctx.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "big.txt", "content": big }),
    )]));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 20 })).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["status"], "failed");
    assert_eq!(
        res.data()["error"]["code"],
        "provider_tool_arguments_too_large",
        "{}",
        res.data()["error"]
    );
    // An answer that streams past the cap: the step fails, what was stored stays bounded.
    let piece: &'static str = Box::leak("word ".repeat(2_000).into_boxed_str());
    ctx.llm.push(Script::Text(vec![piece; 30]));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 20 })).await;
    assert_eq!(
        res.data()["error"]["code"],
        "provider_output_too_large",
        "{}",
        res.data()["error"]
    );
    let run = res.data()["id"].as_str().unwrap();
    let read = app_get_len(
        &ctx,
        &format!("/api/v1/agents/{agent}/runs/{run}"),
        &tenant.key,
    )
    .await;
    assert!(read < 200_000, "GET run answered {read} bytes");
    ctx.stop().await;
}

async fn app_get_len(app: &TestApp, path: &str, key: &str) -> usize {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len()
}

#[actix_web::test]
async fn open_streams_and_queued_runs_are_capped_per_key_and_tenant() {
    let app = sqlite(|f| {
        // The server learns that a client left on its next write, a heartbeat at the latest.
        f.merge(Serialized::default("streams.heartbeat_secs", 1))
            .merge(Serialized::default("streams.max_per_key", 2))
            .merge(Serialized::default("streams.max_per_tenant", 3))
            .merge(Serialized::default("runs.max_queued_per_tenant", 2))
            .merge(Serialized::default("providers.slow.kind", "offline"))
            .merge(Serialized::default("providers.slow.token_delay_ms", 200))
            .merge(Serialized::default("llm.default_provider", "slow"))
    })
    .await;
    let tenant = app.tenant("Acme", "free").await;
    let session = session(&app, &tenant.key).await;
    let url = format!("{}/api/v1/chat/sessions/{session}/stream", app.address);
    let open = |key: String| {
        let (client, url) = (app.client.clone(), url.clone());
        async move { client.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let first = open(tenant.key.clone()).await;
    let second = open(tenant.key.clone()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = TestApp::reply(open(tenant.key.clone()).await).await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.code(), "RATE_LIMIT_EXCEEDED");
    // Another key of the tenant gets the tenant's last one.
    let other = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "b", "type": "sdk" }),
        )
        .await;
    let other = other.data()["key"].as_str().unwrap().to_string();
    let fourth = open(other.clone()).await;
    assert_eq!(fourth.status(), 200);
    let fifth = TestApp::reply(open(other.clone()).await).await;
    assert_eq!(fifth.status, 429, "{}", fifth.body);
    // Closing a stream gives its place back.
    drop(first);
    let mut again = 0;
    for _ in 0..150 {
        let res = open(tenant.key.clone()).await;
        again = res.status().as_u16();
        if again == 200 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again, 200);
    drop((second, fourth));

    // One run at a time, two may wait; the next execute is refused.
    app.patch(
        &format!("/api/v1/tenants/{}/settings", tenant.id),
        &tenant.key,
        json!({ "max_concurrent_runs": 1 }),
    )
    .await;
    let project = app.project(&tenant.key, "runs").await;
    let agent = app.agent(&tenant.key, json!({ "name": "slow" })).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = app
            .post(
                &format!("/api/v1/agents/{agent}/execute"),
                &tenant.key,
                json!({ "goal": "take your time", "projectId": project }),
            )
            .await;
        statuses.push(res.status);
        if res.status == 429 {
            assert_eq!(res.code(), "RATE_LIMIT_EXCEEDED");
            assert!(res.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("wait for a slot"));
        }
        // The first run leaves the queue before the next ones count as waiting.
        if statuses.len() == 1 {
            let run = res.data()["id"].as_str().unwrap();
            app.run_until(&tenant.key, &agent, run, |r| r["status"] != "queued")
                .await;
        }
    }
    assert_eq!(statuses, [202, 202, 202, 429]);
    app.stop().await;
}

#[actix_web::test]
async fn a_finished_run_resumed_at_its_end_answers_204_at_once() {
    let app = sqlite(|f| f).await;
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "p").await;
    let agent = app.agent(&tenant.key, json!({ "name": "echo" })).await;
    let done = app
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "hello", "projectId": project, "wait": true }),
        )
        .await;
    assert_eq!(done.data()["status"], "completed", "{}", done.body);
    let run = done.data()["id"].as_str().unwrap();
    let path = format!("{}/api/v1/agents/{agent}/runs/{run}/stream", app.address);
    let whole = app
        .client
        .get(&path)
        .bearer_auth(&tenant.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: i64 = whole
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .parse()
        .unwrap();
    for after in [last, last + 10] {
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            app.client
                .get(&path)
                .bearer_auth(&tenant.key)
                .header("Last-Event-ID", after.to_string())
                .send(),
        )
        .await
        .expect("answered at once")
        .unwrap();
        assert_eq!(res.status(), 204, "Last-Event-ID {after}");
    }
    // One event short of the end: that event, then the stream closes.
    let rest = tokio::time::timeout(
        Duration::from_secs(5),
        app.client
            .get(&path)
            .bearer_auth(&tenant.key)
            .header("Last-Event-ID", (last - 1).to_string())
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the stream ends")
    .unwrap();
    assert!(rest.contains("event: run.completed"), "{rest}");
    app.stop().await;
}

/// The `event:` names of an SSE text.
fn kinds(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

#[actix_web::test]
async fn a_new_chat_subscriber_starts_at_the_reply_in_flight_unless_it_asks_for_all() {
    let app = sqlite(|f| {
        f.merge(Serialized::default("providers.slow.kind", "offline"))
            .merge(Serialized::default("providers.slow.token_delay_ms", 40))
            .merge(Serialized::default("llm.default_provider", "slow"))
    })
    .await;
    let tenant = app.tenant("Acme", "free").await;
    let session = session(&app, &tenant.key).await;
    let messages = format!("/api/v1/chat/sessions/{session}/messages");
    let first = app
        .post(&messages, &tenant.key, json!({ "content": "one" }))
        .await;
    let first_reply = first.data()["reply_id"].as_str().unwrap().to_string();
    for _ in 0..500 {
        let listed = app.get(&messages, &tenant.key).await;
        let done = listed
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == first_reply.as_str() && m["status"] == "complete");
        if done {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let second = app
        .post(&messages, &tenant.key, json!({ "content": "two" }))
        .await;
    let second_reply = second.data()["reply_id"].as_str().unwrap().to_string();
    // The second reply is in flight (streaming) when the subscribers come.
    let streaming = eventually(Duration::from_secs(5), || async {
        app.get(&messages, &tenant.key)
            .await
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == second_reply.as_str() && m["status"] == "streaming")
    })
    .await;
    assert!(streaming, "the second reply started");
    let read = |last_event_id: Option<&'static str>| {
        let (client, url, key) = (
            app.client.clone(),
            format!("{}/api/v1/chat/sessions/{session}/stream", app.address),
            tenant.key.clone(),
        );
        async move {
            let mut req = client.get(url).bearer_auth(key);
            if let Some(id) = last_event_id {
                req = req.header("Last-Event-ID", id);
            }
            let mut res = req.send().await.unwrap();
            let mut text = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while !text.contains("event: reply.completed") {
                    match res.chunk().await.unwrap() {
                        Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
                        None => break,
                    }
                }
            })
            .await;
            text
        }
    };
    let (fresh, all) = futures_util::join!(read(None), read(Some("0")));
    // The new subscriber sees the reply in flight from its start, and nothing before it.
    assert_eq!(kinds(&fresh).first(), Some(&"message.created"), "{fresh}");
    assert!(
        fresh.contains(&second_reply) && !fresh.contains(&first_reply),
        "{fresh}"
    );
    assert_eq!(kinds(&fresh).last(), Some(&"reply.completed"));
    // Last-Event-ID: 0 replays the whole session.
    assert!(
        all.contains(&first_reply) && all.starts_with("id: 1\n"),
        "{all}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_idle_chat_session_passivates_for_good() {
    let app = sqlite(|f| f.merge(Serialized::default("chat.idle_secs", 1))).await;
    let tenant = app.tenant("Acme", "free").await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let id = session(&app, &tenant.key).await;
        let res = app
            .post(
                &format!("/api/v1/chat/sessions/{id}/messages"),
                &tenant.key,
                json!({ "content": "hi" }),
            )
            .await;
        assert_eq!(res.status, 202);
        sessions.push(id);
    }
    let restarts = || {
        let text = app.state.metrics.render();
        text.lines()
            .filter(|l| {
                l.starts_with("dgidgi_actor_restarts_total") && l.contains("kind=\"session\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = restarts();
    // Each answers and passivates after a second idle...
    let state = app.state.clone();
    let gone = eventually(Duration::from_secs(5), || {
        let state = state.clone();
        async move { state.sessions.actors().live() == 0 }
    })
    .await;
    assert!(gone, "the idle sessions did not passivate");
    // ... and stays gone: over several of its idle checks (idle_secs / 4), no restart.
    let stayed = holds_for(Duration::from_millis(1500), || async {
        restarts() == before && app.state.sessions.actors().live() == 0
    })
    .await;
    assert!(stayed, "passivated sessions were restarted");
    // A later message brings one back and is answered.
    let res = app
        .post(
            &format!("/api/v1/chat/sessions/{}/messages", sessions[0]),
            &tenant.key,
            json!({ "content": "again" }),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.body);
    let reply = res.data()["reply_id"].as_str().unwrap().to_string();
    let mut answered = false;
    for _ in 0..250 {
        let listed = app
            .get(
                &format!("/api/v1/chat/sessions/{}/messages", sessions[0]),
                &tenant.key,
            )
            .await;
        answered = listed
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == reply.as_str() && m["status"] == "complete");
        if answered {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered);
    app.stop().await;
}

#[actix_web::test]
async fn a_subscriber_that_stops_reading_is_disconnected() {
    let app = sqlite(|f| {
        f.merge(Serialized::default("streams.stall_timeout_secs", 1))
            .merge(Serialized::default("chat.max_queue", 20))
    })
    .await;
    let tenant = app.tenant("Acme", "free").await;
    let session = session(&app, &tenant.key).await;
    // A raw client that sends its request and then reads nothing.
    let port = app.address.rsplit(':').next().unwrap();
    let mut socket = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        socket,
        "GET /api/v1/chat/sessions/{session}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {}\r\n\r\n",
        tenant.key
    )
    .unwrap();
    // Long replies (the offline provider echoes the question word by word) fill the
    // socket's buffers and then the stream's queue.
    let question = "word ".repeat(6_000);
    for _ in 0..16 {
        let res = app
            .post(
                &format!("/api/v1/chat/sessions/{session}/messages"),
                &tenant.key,
                json!({ "content": question }),
            )
            .await;
        assert_eq!(res.status, 202, "{}", res.body);
    }
    // The server gives up on it without the client reading anything: its stream (and the
    // slot it held) is gone, which the server alone could not do while the socket was full.
    let key = format!("k:{}", tenant.key_id);
    let mut open = true;
    for _ in 0..200 {
        open = app.state.open_streams.get(&key).is_some_and(|n| *n > 0);
        if !open {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!open, "the stalled stream is still open on the server");
    // Reading now drains what was buffered, then ends.
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buffer = vec![0u8; 1 << 20];
    let ended = loop {
        match socket.read(&mut buffer) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "the stalled stream was still open");
    app.stop().await;
}

#[actix_web::test]
async fn the_offline_provider_can_be_slow_call_a_tool_and_fail_on_request() {
    let app = sqlite(|f| {
        f.merge(Serialized::default("providers.demo.kind", "offline"))
            .merge(Serialized::default("providers.demo.token_delay_ms", 100))
            .merge(Serialized::default("providers.demo.tool_calls", true))
            .merge(Serialized::default("llm.default_provider", "demo"))
    })
    .await;
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "p").await;
    let agent = app
        .agent(
            &tenant.key,
            json!({ "name": "demo", "tools": ["write_file", "read_file"], "config": { "autonomyLevel": "medium" } }),
        )
        .await;
    let execute = |goal: &'static str, wait: Value| {
        let (app, key, agent, project) = (&app, tenant.key.clone(), agent.clone(), project.clone());
        async move {
            app.post(
                &format!("/api/v1/agents/{agent}/execute"),
                &key,
                json!({ "goal": goal, "projectId": project, "wait": wait }),
            )
            .await
        }
    };
    // A tool call, an artifact, then the answer.
    let done = execute("Summarise the plan", json!(30)).await;
    assert_eq!(done.data()["status"], "completed", "{}", done.body);
    assert_eq!(
        done.data()["steps"][0]["tool_calls"][0]["name"],
        "write_file"
    );
    assert_eq!(done.data()["artifacts"][0]["path"], "offline-notes.md");
    assert_eq!(done.data()["steps"].as_array().unwrap().len(), 2);
    // Slow enough to cancel mid-answer.
    let queued = execute("Take your time", json!(false)).await;
    assert_eq!(queued.status, 202);
    let run = queued.data()["id"].as_str().unwrap().to_string();
    let stream = format!("/api/v1/agents/{agent}/runs/{run}/stream");
    assert!(
        app.until_event(&stream, &tenant.key, "token").await,
        "the answer started"
    );
    let res = app
        .post(
            &format!("/api/v1/agents/{agent}/runs/{run}/cancel"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert!(res.status < 300, "{}", res.body);
    let cancelled = app
        .run_until(&tenant.key, &agent, &run, |r| {
            r["status"] != "running" && r["status"] != "queued"
        })
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // And a failure on request.
    let failed = execute("Please [fail] now", json!(30)).await;
    assert_eq!(failed.data()["status"], "failed", "{}", failed.body);
    assert_eq!(failed.data()["error"]["code"], "provider_bad_request");
    app.stop().await;
}
