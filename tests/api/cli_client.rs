//! The command-line client (`dgidgi projects|agents|runs|chat`) run as a process against a
//! server started by the test.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::cli::BIN;
use crate::helpers::{Backend, TestApp};

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `dgidgi <args>` with the API's address and `key`, feeding `stdin`.
pub async fn client(app: &TestApp, key: &str, args: &[&str], stdin: &str) -> Out {
    let (url, key, stdin) = (
        format!("{}/api/v1", app.address),
        key.to_string(),
        stdin.to_string(),
    );
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    actix_web::rt::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DGIDGI_API_URL", url)
            .env("DGIDGI_API_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn projects_are_listed_created_read_and_deleted_from_the_command_line() {
    let app = TestApp::plain(Backend::Sqlite).await.unwrap();
    let tenant = app.tenant("Acme", "free").await;
    let made = client(
        &app,
        &tenant.key,
        &[
            "projects",
            "create",
            "web-app",
            "--language",
            "TypeScript",
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(made.code, 0, "{}", made.stderr);
    let id = made.json()["id"].as_str().unwrap().to_string();
    assert_eq!(made.json()["language"], "TypeScript");

    let listed = client(&app, &tenant.key, &["projects", "list"], "").await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", listed.stdout);
    assert!(lines[0].contains("NAME") && lines[0].contains("LANGUAGE"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&id) && l.contains("web-app")),
        "{}",
        listed.stdout
    );

    let got = client(&app, &tenant.key, &["projects", "get", &id], "").await;
    assert_eq!(got.code, 0);
    assert!(
        got.stdout.contains("name") && got.stdout.contains("web-app"),
        "{}",
        got.stdout
    );

    let deleted = client(&app, &tenant.key, &["projects", "delete", &id], "").await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let gone = client(&app, &tenant.key, &["projects", "get", &id], "").await;
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr.trim(),
        "error: RESOURCE_NOT_FOUND: Project not found"
    );

    let refused = client(&app, "chy_sdk_notakey", &["projects", "list"], "").await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.starts_with("error: UNAUTHORIZED:"),
        "{}",
        refused.stderr
    );
    app.stop().await;
}

#[actix_web::test]
async fn agents_execute_with_and_without_streaming_and_runs_are_read_back() {
    let app = TestApp::plain(Backend::Sqlite).await.unwrap();
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "web").await;
    let made = client(
        &app,
        &tenant.key,
        &[
            "agents",
            "create",
            "helper",
            "--provider",
            "offline",
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(made.code, 0, "{}", made.stderr);
    let agent = made.json()["id"].as_str().unwrap().to_string();
    let listed = client(&app, &tenant.key, &["agents", "list"], "").await;
    assert!(listed
        .stdout
        .lines()
        .any(|l| l.starts_with(&agent) && l.contains("helper")));

    let ran = client(
        &app,
        &tenant.key,
        &[
            "agents",
            "execute",
            &agent,
            "Say hello",
            "--project",
            &project,
        ],
        "",
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("offline provider"), "{}", ran.stdout);
    // The run's id is said (on stderr, so that stdout is the answer alone).
    assert!(ran.stderr.contains("run run_"), "{}", ran.stderr);
    // Streamed, the answer is printed once.
    let plain_stream = client(
        &app,
        &tenant.key,
        &[
            "agents",
            "execute",
            &agent,
            "Say hello",
            "--project",
            &project,
            "--stream",
        ],
        "",
    )
    .await;
    assert_eq!(plain_stream.code, 0, "{}", plain_stream.stderr);
    assert_eq!(
        plain_stream.stdout.matches("offline provider").count(),
        1,
        "{}",
        plain_stream.stdout
    );

    let streamed = client(
        &app,
        &tenant.key,
        &[
            "agents",
            "execute",
            &agent,
            "Say hello",
            "--project",
            &project,
            "--stream",
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(streamed.code, 0, "{}", streamed.stderr);
    // Tokens first, as they came, then the finished run as JSON on the last line.
    let last = streamed.stdout.trim().lines().last().unwrap();
    let run: Value = serde_json::from_str(last).unwrap();
    assert_eq!(run["status"], "completed");
    let output = run["output"].as_str().unwrap();
    assert!(
        streamed
            .stdout
            .starts_with(output.split(' ').next().unwrap()),
        "{}",
        streamed.stdout
    );

    let run_id = run["id"].as_str().unwrap();
    let got = client(
        &app,
        &tenant.key,
        &["runs", "get", run_id, "--agent", &agent, "--json"],
        "",
    )
    .await;
    assert_eq!(got.json()["status"], "completed");
    let cancel = client(
        &app,
        &tenant.key,
        &["runs", "cancel", run_id, "--agent", &agent],
        "",
    )
    .await;
    assert_eq!(cancel.code, 1, "a finished run cannot be cancelled");
    assert!(
        cancel.stderr.starts_with("error: CONFLICT:"),
        "{}",
        cancel.stderr
    );
    app.stop().await;
}

#[actix_web::test]
async fn chat_sends_each_line_and_prints_the_reply_as_it_streams() {
    let app = TestApp::plain(Backend::Sqlite).await.unwrap();
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "web").await;
    let session = app
        .post(
            "/api/v1/chat/sessions",
            &tenant.key,
            json!({ "projectId": project }),
        )
        .await;
    let session = session.data()["id"].as_str().unwrap().to_string();
    let chat = client(
        &app,
        &tenant.key,
        &["chat", &session],
        "hello there\nand again\n",
    )
    .await;
    assert_eq!(chat.code, 0, "{}", chat.stderr);
    let replies: Vec<&str> = chat.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(replies.len(), 2, "{}", chat.stdout);
    assert!(
        replies.iter().all(|r| r.contains("offline provider")),
        "{}",
        chat.stdout
    );
    let history = app
        .get(
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &tenant.key,
        )
        .await;
    let contents: Vec<_> = history
        .data()
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents.len(), 2);
    let missing = client(
        &app,
        &tenant.key,
        &["chat", "ses_00000000000000000000000000"],
        "",
    )
    .await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("RESOURCE_NOT_FOUND"));
    // Without a session, --project creates one (its id printed first) and chats in it.
    let fresh = client(
        &app,
        &tenant.key,
        &["chat", "--project", &project, "--title", "From the CLI"],
        "hi
",
    )
    .await;
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    assert!(fresh.stderr.starts_with("session ses_"), "{}", fresh.stderr);
    assert!(
        fresh.stdout.contains("offline provider"),
        "{}",
        fresh.stdout
    );
    app.stop().await;
}

#[actix_web::test]
async fn every_client_command_has_help_and_no_server_flag() {
    for args in [
        vec!["projects", "list"],
        vec!["projects", "create"],
        vec!["projects", "get"],
        vec!["projects", "delete"],
        vec!["agents", "list"],
        vec!["agents", "create"],
        vec!["agents", "execute"],
        vec!["runs", "get"],
        vec!["runs", "cancel"],
        vec!["runs", "approve"],
        vec!["runs", "deny"],
        vec!["chat"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let about = help.lines().next().unwrap_or("");
        assert!(
            !about.starts_with("Usage:") && !about.is_empty(),
            "{args:?} has no help: {help}"
        );
        assert!(!help.contains("--log-format"), "{args:?}: {help}");
    }
}
