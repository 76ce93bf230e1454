//! The SSE wire format, pinned: a recorded stream of a run (tool calls, a failed tool, the
//! answer) and of a chat session (two replies) must stay byte-identical apart from ids and
//! timestamps. `DGIDGI_RECORD=1 cargo test wire` records them again.

use std::time::Duration;

use serde_json::json;

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{Backend, TestApp};
use crate::runs::{execute, setup};

/// `text` with every id (`run_…`, `msg_…`: a prefix, `_`, 20+ hex digits) and every
/// RFC 3339 timestamp replaced by a placeholder.
fn normalized(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        // A timestamp: 20dd-dd-ddT... up to its Z.
        if text[i..].len() > 20
            && text[i..].starts_with("20")
            && bytes[i + 4] == b'-'
            && bytes[i + 10] == b'T'
        {
            if let Some(z) = text[i..].find('Z') {
                out.push_str("<time>");
                i += z + 1;
                continue;
            }
        }
        // An id: lowercase letters, '_', then hex digits.
        if bytes[i].is_ascii_lowercase() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let letters = text[i..].bytes().take_while(u8::is_ascii_lowercase).count();
            let after = i + letters;
            if letters <= 5 && bytes.get(after) == Some(&b'_') {
                let hex = text[after + 1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if hex >= 20 {
                    out.push_str(&text[i..after]);
                    out.push_str("_<id>");
                    i = after + 1 + hex;
                    continue;
                }
            }
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Compares `got` (normalized) with the recording `name`, or records it.
fn pinned(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/fixtures")
        .join(name);
    let got = normalized(got);
    if std::env::var_os("DGIDGI_RECORD").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (record with DGIDGI_RECORD=1)", path.display()));
    assert_eq!(got, want, "the {name} stream changed on the wire");
}

async fn whole_stream(app: &TestApp, path: &str, key: &str, until: &str) -> String {
    let mut res = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while !text.contains(until) {
            match res.chunk().await.unwrap() {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
                None => break,
            }
        }
    })
    .await
    .expect("the stream reaches its end");
    // Up to the end of the last whole event; keep-alive comments are not events.
    let end = text.rfind("\n\n").map_or(0, |i| i + 2);
    text[..end]
        .split("\n\n")
        .filter(|f| !f.is_empty() && !f.starts_with(':'))
        .map(|f| format!("{f}\n\n"))
        .collect()
}

#[actix_web::test]
async fn a_run_stream_is_pinned_on_the_wire() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let (tenant, project, agent) = setup(
        &ctx,
        json!({ "tools": ["write_file", "read_file"], "config": { "autonomyLevel": "medium" } }),
    )
    .await;
    ctx.llm.push(Script::Tools(vec![
        ("write_file", json!({ "path": "a.md", "content": "hello" })),
        ("read_file", json!({ "path": "../x" })),
    ]));
    ctx.llm.push(Script::Text(vec!["All ", "done"]));
    let res = execute(&ctx, &tenant.key, &agent, &project, json!({ "wait": 30 })).await;
    assert_eq!(res.data()["status"], "completed", "{}", res.body);
    let run = res.data()["id"].as_str().unwrap();
    let text = whole_stream(
        &ctx,
        &format!("/api/v1/agents/{agent}/runs/{run}/stream"),
        &tenant.key,
        "event: run.completed",
    )
    .await;
    pinned("run.sse", &text);
    ctx.stop().await;
}

#[actix_web::test]
async fn a_chat_stream_is_pinned_on_the_wire() {
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "p").await;
    let session = ctx
        .post(
            "/api/v1/chat/sessions",
            &tenant.key,
            json!({ "projectId": project, "systemPrompt": "Be brief" }),
        )
        .await;
    let session = session.data()["id"].as_str().unwrap().to_string();
    ctx.llm.push(Script::Text(vec!["Hello", " there"]));
    ctx.llm.push(Script::Status(
        500,
        json!({ "error": { "message": "down" } }),
    ));
    ctx.llm.push(Script::Status(
        500,
        json!({ "error": { "message": "down" } }),
    ));
    ctx.llm.push(Script::Status(
        500,
        json!({ "error": { "message": "down" } }),
    ));
    ctx.llm.push(Script::Status(
        500,
        json!({ "error": { "message": "down" } }),
    ));
    let messages = format!("/api/v1/chat/sessions/{session}/messages");
    ctx.post(&messages, &tenant.key, json!({ "content": "hi" }))
        .await;
    ctx.post(&messages, &tenant.key, json!({ "content": "again" }))
        .await;
    let text = whole_stream(
        &ctx,
        &format!("/api/v1/chat/sessions/{session}/stream"),
        &tenant.key,
        "event: reply.failed",
    )
    .await;
    pinned("chat.sse", &text);
    ctx.stop().await;
}

#[test]
fn ids_and_times_are_normalized() {
    assert_eq!(
        normalized(
            r#"{"id":"run_01a2336ac9d97bd3b8cc3a4b1e6d9e1f","at":"2026-12-01T21:09:41.123Z","n":"step_1"}"#
        ),
        r#"{"id":"run_<id>","at":"<time>","n":"step_1"}"#
    );
}
