//! Chat sessions: ordered replies streamed to any number of subscribers, reconnects without
//! loss, cancel, a bounded queue, slow subscribers, passivation, failures, isolation.

use std::time::Duration;

use figment::providers::Serialized;
use serde_json::{json, Value};

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{backend_tests, Backend, TestApp, TestTenant};

backend_tests!(@with crate::fake_llm::LlmApp::start;
    two_subscribers_see_the_same_reply_and_the_history_keeps_it,
    messages_sent_during_a_reply_are_answered_in_order,
    a_session_is_tenant_scoped,
);

pub type Event = (i64, String, Value);

/// A tenant, a project and a session in it.
async fn session(app: &TestApp, extra: Value) -> (TestTenant, String) {
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "chat").await;
    let mut body = json!({ "projectId": project, "title": "Support", "systemPrompt": "Be brief" });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let res = app.post("/api/v1/chat/sessions", &tenant.key, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let id = res.data()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ses_"));
    (tenant, id)
}

/// Opens the session's stream (after `last` if given).
pub async fn subscribe(
    app: &TestApp,
    key: &str,
    session: &str,
    last: Option<i64>,
) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!(
            "{}/api/v1/chat/sessions/{session}/stream",
            app.address
        ))
        .bearer_auth(key);
    if let Some(id) = last {
        req = req.header("last-event-id", id.to_string());
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert!(res.headers().get("x-ratelimit-remaining").is_some());
    res
}

/// Reads events until `done` holds for what was read (at most 15 s).
pub async fn read_until(
    res: &mut reqwest::Response,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut buffer = String::new();
    let read = async {
        while !done(&events) {
            let Some(chunk) = res.chunk().await.unwrap() else {
                break;
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if frame.starts_with(':') {
                    continue;
                }
                let field = |name: &str| {
                    frame
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                        .unwrap_or("")
                        .to_string()
                };
                events.push((
                    field("id:").parse().unwrap(),
                    field("event:"),
                    serde_json::from_str(&field("data:")).unwrap(),
                ));
                if done(&events) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the expected events arrived");
    events
}

pub fn ended(n: usize) -> impl Fn(&[Event]) -> bool {
    move |events| {
        events
            .iter()
            .filter(|e| {
                ["reply.completed", "reply.failed", "reply.cancelled"].contains(&e.1.as_str())
            })
            .count()
            >= n
    }
}

fn reply_text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.1 == "token")
        .map(|e| e.2["delta"].as_str().unwrap())
        .collect()
}

pub async fn post(app: &TestApp, key: &str, session: &str, content: &str) -> crate::helpers::Reply {
    app.post(
        &format!("/api/v1/chat/sessions/{session}/messages"),
        key,
        json!({ "content": content }),
    )
    .await
}

async fn two_subscribers_see_the_same_reply_and_the_history_keeps_it(ctx: &LlmApp) {
    let (tenant, session) = session(ctx, json!({})).await;
    let mut first = subscribe(ctx, &tenant.key, &session, None).await;
    let mut second = subscribe(ctx, &tenant.key, &session, None).await;
    let mut leaving = subscribe(ctx, &tenant.key, &session, None).await;
    let pieces = vec!["Hello", ", ", "how ", "can ", "I ", "help?"];
    ctx.llm
        .push(Script::Slow(pieces, Duration::from_millis(40)));
    let posted = post(ctx, &tenant.key, &session, "Hi!").await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    let reply_id = posted.data()["reply_id"].as_str().unwrap().to_string();
    assert_eq!(posted.data()["message"]["content"], "Hi!");

    // One subscriber drops after 4 events, mid-reply, and comes straight back.
    let before = read_until(&mut leaving, |e| e.len() >= 4).await;
    drop(leaving);
    let last_seen = before.last().unwrap().0;
    let mut back = subscribe(ctx, &tenant.key, &session, Some(last_seen)).await;
    let a = read_until(&mut first, ended(1)).await;
    let b = read_until(&mut second, ended(1)).await;
    assert_eq!(
        a, b,
        "every subscriber sees the same events in the same order"
    );
    let after = read_until(&mut back, ended(1)).await;
    assert_eq!(
        after.first().map(|e| e.0),
        Some(5),
        "it came back mid-reply"
    );
    assert_eq!(
        [before, after].concat(),
        a,
        "nothing missed, nothing repeated"
    );
    let kinds: Vec<&str> = a.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"message.created"));
    assert_eq!(kinds[1], "reply.started");
    assert_eq!(kinds.last(), Some(&"reply.completed"));
    let ids: Vec<i64> = a.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=a.len() as i64).collect::<Vec<_>>());
    assert_eq!(reply_text(&a), "Hello, how can I help?");
    let tokens = a.iter().filter(|e| e.1 == "token");
    assert!(tokens.clone().all(|e| e.2["reply_id"] == reply_id.as_str()));
    let completed = &a.last().unwrap().2;
    assert_eq!(completed["message"]["content"], "Hello, how can I help?");
    assert_eq!(completed["usage"]["total_tokens"], 18);

    let history = ctx
        .get(
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &tenant.key,
        )
        .await;
    let messages = history.data().as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        (messages[0]["role"].as_str(), messages[0]["status"].as_str()),
        (Some("assistant"), Some("complete"))
    );
    assert_eq!(messages[0]["id"], reply_id.as_str());
    assert_eq!(messages[1]["content"], "Hi!");

    // After the reply, a reconnect from event 4 replays exactly the rest.
    let mut again = subscribe(ctx, &tenant.key, &session, Some(4)).await;
    let rest = read_until(&mut again, ended(1)).await;
    assert_eq!(rest, a[4..].to_vec());
}

async fn messages_sent_during_a_reply_are_answered_in_order(ctx: &LlmApp) {
    let (tenant, session) = session(ctx, json!({})).await;
    let mut stream = subscribe(ctx, &tenant.key, &session, None).await;
    ctx.llm.push(Script::Slow(
        vec!["one ", "two ", "three"],
        Duration::from_millis(30),
    ));
    ctx.llm.push(Script::Text(vec!["second answer"]));
    ctx.llm.push(Script::Text(vec!["third answer"]));
    let mut ids = Vec::new();
    for question in ["first?", "second?", "third?"] {
        let res = post(ctx, &tenant.key, &session, question).await;
        assert_eq!(res.status, 202);
        ids.push(res.data()["message"]["id"].as_str().unwrap().to_string());
    }
    let events = read_until(&mut stream, ended(3)).await;
    let created: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "message.created")
        .map(|e| e.2["message"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(created, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let answers: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "reply.completed")
        .map(|e| e.2["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["one two three", "second answer", "third answer"]);
    // Each reply was asked with the whole conversation before it.
    let third = &ctx.llm.requests()[2]["messages"];
    let contents: Vec<&str> = third
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "Be brief",
            "first?",
            "one two three",
            "second?",
            "second answer",
            "third?"
        ]
    );
}

async fn a_session_is_tenant_scoped(ctx: &LlmApp) {
    let (tenant, session) = session(ctx, json!({})).await;
    post(ctx, &tenant.key, &session, "mine").await;
    let other = ctx.tenant("Other", "free").await;
    for (method, path, body) in [
        (
            reqwest::Method::GET,
            format!("/api/v1/chat/sessions/{session}"),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/chat/sessions/{session}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/chat/sessions/{session}/messages"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/chat/sessions/{session}/messages"),
            Some(json!({ "content": "hi" })),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/chat/sessions/{session}/cancel"),
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/chat/sessions/{session}/stream"),
            None,
        ),
    ] {
        let res = ctx
            .call(method.clone(), &path, Some(&other.key), body.as_ref())
            .await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.body);
        assert_eq!(res.code(), "RESOURCE_NOT_FOUND");
    }
    let listed = ctx.get("/api/v1/chat/sessions", &other.key).await;
    assert_eq!(listed.data(), &json!([]));
    let mine = ctx.get("/api/v1/chat/sessions", &tenant.key).await;
    assert_eq!(mine.data()[0]["id"], session.as_str());
    let bad = ctx
        .post(
            "/api/v1/chat/sessions",
            &tenant.key,
            json!({ "projectId": "proj_00000000000000000000000000000000" }),
        )
        .await;
    assert_eq!(bad.status, 404);
    let empty = post(ctx, &tenant.key, &session, "   ").await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.body["error"]["details"]["field"], "content");
    let deleted = ctx
        .delete(&format!("/api/v1/chat/sessions/{session}"), &tenant.key)
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        ctx.get(&format!("/api/v1/chat/sessions/{session}"), &tenant.key)
            .await
            .status,
        404
    );
}

async fn llm_app_with(configure: impl FnOnce(figment::Figment) -> figment::Figment) -> LlmApp {
    LlmApp::start_with(Backend::Sqlite, configure)
        .await
        .unwrap()
}

#[actix_web::test]
async fn cancel_stops_the_reply_and_keeps_its_partial_text() {
    let ctx = llm_app_with(|f| f).await;
    let (tenant, session) = session(&ctx, json!({})).await;
    let mut stream = subscribe(&ctx, &tenant.key, &session, None).await;
    ctx.llm
        .push(Script::Slow(vec!["word "; 300], Duration::from_millis(20)));
    ctx.llm.push(Script::Text(vec!["still here"]));
    post(&ctx, &tenant.key, &session, "talk a lot").await;
    read_until(&mut stream, |e| {
        e.iter().filter(|e| e.1 == "token").count() >= 3
    })
    .await;
    let res = ctx
        .post(
            &format!("/api/v1/chat/sessions/{session}/cancel"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.data()["cancelled"], true);
    let events = read_until(&mut stream, ended(1)).await;
    let end = events.last().unwrap();
    assert_eq!(end.1, "reply.cancelled");
    let partial = end.2["message"]["content"].as_str().unwrap().to_string();
    assert!(
        partial.starts_with("word word word") && partial.len() < 300 * 5,
        "{partial}"
    );
    let history = ctx
        .get(
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &tenant.key,
        )
        .await;
    assert_eq!(history.data()[0]["status"], "cancelled");
    assert_eq!(history.data()[0]["content"], partial.as_str());
    // Nothing in flight now; the session answers the next message.
    let res = ctx
        .post(
            &format!("/api/v1/chat/sessions/{session}/cancel"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(res.data()["cancelled"], false);
    post(&ctx, &tenant.key, &session, "still there?").await;
    let events = read_until(&mut stream, ended(1)).await;
    assert_eq!(events.last().unwrap().2["message"]["content"], "still here");
    ctx.stop().await;
}

#[actix_web::test]
async fn a_full_queue_refuses_more_messages_with_429() {
    let ctx = llm_app_with(|f| f.merge(Serialized::default("chat.max_queue", 2))).await;
    let (tenant, session) = session(&ctx, json!({})).await;
    ctx.llm
        .push(Script::Slow(vec!["slow "; 50], Duration::from_millis(20)));
    let mut stream = subscribe(&ctx, &tenant.key, &session, None).await;
    post(&ctx, &tenant.key, &session, "1").await;
    read_until(&mut stream, |e| e.iter().any(|e| e.1 == "reply.started")).await;
    assert_eq!(post(&ctx, &tenant.key, &session, "2").await.status, 202);
    assert_eq!(post(&ctx, &tenant.key, &session, "3").await.status, 202);
    let refused = post(&ctx, &tenant.key, &session, "4").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.code(), "RATE_LIMIT_EXCEEDED");
    let history = ctx
        .get(
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &tenant.key,
        )
        .await;
    let contents: Vec<&str> = history
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(!contents.contains(&"4"), "a refused message is not stored");
    ctx.stop().await;
}

#[actix_web::test]
async fn a_stalled_subscriber_does_not_hold_up_another_and_catches_up_later() {
    let ctx = llm_app_with(|f| f).await;
    let (tenant, session) = session(&ctx, json!({})).await;
    // This one never reads while the reply streams.
    let mut stalled = subscribe(&ctx, &tenant.key, &session, None).await;
    let mut reader = subscribe(&ctx, &tenant.key, &session, None).await;
    let long: Vec<&'static str> =
        vec!["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef "; 3000];
    ctx.llm.push(Script::Text(long));
    post(&ctx, &tenant.key, &session, "a lot please").await;
    let started = std::time::Instant::now();
    let read = read_until(&mut reader, ended(1)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(read.iter().filter(|e| e.1 == "token").count(), 3000);
    let late = read_until(&mut stalled, ended(1)).await;
    assert_eq!(
        late, read,
        "the slow one got everything, in order, from the store"
    );
    ctx.stop().await;
}

#[actix_web::test]
async fn an_idle_session_passivates_and_comes_back_with_its_history() {
    let ctx = llm_app_with(|f| f.merge(Serialized::default("chat.idle_secs", 0))).await;
    let (tenant, session) = session(&ctx, json!({})).await;
    ctx.llm.push(Script::Text(vec!["Paris"]));
    post(&ctx, &tenant.key, &session, "Capital of France?").await;
    for _ in 0..200 {
        let history = ctx
            .get(
                &format!("/api/v1/chat/sessions/{session}/messages"),
                &tenant.key,
            )
            .await;
        if history.data()[0]["status"] == "complete" && ctx.state.sessions.actors().live() == 0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ctx.state.sessions.actors().live(),
        0,
        "the idle session left memory"
    );
    ctx.llm.push(Script::Text(vec!["About 2 million"]));
    let mut stream = subscribe(&ctx, &tenant.key, &session, Some(0)).await;
    post(&ctx, &tenant.key, &session, "Its population?").await;
    let events = read_until(&mut stream, ended(2)).await;
    assert_eq!(
        events.last().unwrap().2["message"]["content"],
        "About 2 million"
    );
    let asked = &ctx.llm.requests()[1]["messages"];
    let contents: Vec<&str> = asked
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["Be brief", "Capital of France?", "Paris", "Its population?"]
    );
    ctx.stop().await;
}

#[actix_web::test]
async fn a_provider_failure_mid_reply_ends_in_reply_failed_and_the_session_goes_on() {
    let ctx = llm_app_with(|f| f).await;
    let (tenant, session) = session(&ctx, json!({})).await;
    let mut stream = subscribe(&ctx, &tenant.key, &session, None).await;
    ctx.llm.push(Script::Cut(vec!["I was saying"]));
    ctx.llm.push(Script::Text(vec!["back again"]));
    post(&ctx, &tenant.key, &session, "go").await;
    let events = read_until(&mut stream, ended(1)).await;
    let end = &events.last().unwrap();
    assert_eq!(end.1, "reply.failed");
    assert_eq!(end.2["error"]["code"], "provider_stream_broken");
    assert_eq!(end.2["message"]["content"], "I was saying");
    post(&ctx, &tenant.key, &session, "again").await;
    let events = read_until(&mut stream, ended(1)).await;
    assert_eq!(events.last().unwrap().1, "reply.completed");
    ctx.stop().await;
}

#[actix_web::test]
async fn a_browser_stream_authenticates_with_a_token_in_the_query_but_never_a_key() {
    let ctx = llm_app_with(|f| f).await;
    let (tenant, session) = session(&ctx, json!({})).await;
    let token = ctx.token(&tenant.key).await;
    let token = token.data()["access_token"].as_str().unwrap();
    let url = format!("{}/api/v1/chat/sessions/{session}/stream", ctx.address);
    let ok = ctx
        .client
        .get(format!("{url}?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let key = ctx
        .client
        .get(format!("{url}?access_token={}", tenant.key))
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), 401);
    let post = ctx
        .client
        .post(format!(
            "{}/api/v1/chat/sessions/{session}/messages?access_token={token}",
            ctx.address
        ))
        .json(&json!({ "content": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401, "only GET streams take the query token");
    ctx.stop().await;
}
