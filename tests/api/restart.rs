//! A run survives its server being killed (-9): the next server on the same database
//! resumes it after its last finished step.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{dgidgi, libc_kill, wait, wait_for_port_logging};
use crate::fake_llm::{provider_settings, FakeLlm, Script};
use dgidgi_testkit::sse::{read_until, Frame};
use dgidgi_testkit::until;

pub struct Server {
    pub child: Child,
    pub base: String,
    /// What the server has logged since it started listening.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Starts a server; on a fresh database (`first`) also reads the operator key it prints.
pub fn start(
    db: &str,
    llm: &FakeLlm,
    workspaces: &std::path::Path,
    first: bool,
    extra: &[(&str, &str)],
) -> (Server, Option<String>) {
    let mut cmd = dgidgi(db);
    for (key, value) in provider_settings(llm) {
        cmd.env(
            format!("DGIDGI__{}", key.replace('.', "__").to_uppercase()),
            value,
        );
    }
    let mut child = cmd
        .env("DGIDGI__SERVER__PORT", "0")
        .env("DGIDGI__LLM__IDLE_TIMEOUT_MS", "60000")
        .env("DGIDGI__STORAGE__PLATFORM_ROOT", workspaces)
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (port, log) = wait_for_port_logging(BufReader::new(child.stderr.take().unwrap()));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut key = None;
    while first && key.is_none() {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no operator key printed"
        );
        key = line.starts_with("chy_op_").then(|| line.trim().to_string());
    }
    // What it prints later is drained, so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (
        Server {
            child,
            base: format!("http://127.0.0.1:{port}/api/v1"),
            log,
        },
        key,
    )
}

pub async fn call(method: reqwest::Method, url: String, key: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, url).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body["data"].clone()
}

/// A tenant on `base` (made by `operator`), a project and an agent that may write files:
/// the tenant's key, the project's id and the agent's.
pub async fn writer(base: &str, operator: &str) -> (String, String, String) {
    let post = |path: &str, key: String, body: Value| {
        let url = format!("{base}{path}");
        async move { call(reqwest::Method::POST, url, &key, Some(body)).await }
    };
    let tenant = post("/tenants", operator.into(), json!({ "name": "Acme" })).await;
    let key = tenant["api_key"]["key"].as_str().unwrap().to_string();
    let project = post("/projects", key.clone(), json!({ "name": "p" })).await;
    let agent = post(
        "/agents",
        key.clone(),
        json!({ "name": "writer", "tools": ["write_file"], "config": { "autonomyLevel": "medium" } }),
    )
    .await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    (key, id(&project), id(&agent))
}

/// A fake LLM whose first answer writes `notes.md` and whose second streams a little and
/// stalls: a run killed mid-step has one finished step to resume after.
async fn writes_then_stalls() -> FakeLlm {
    let llm = FakeLlm::start().await;
    llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "notes.md", "content": "step one" }),
    )]));
    llm.push(Script::Stall(vec!["half a thought"]));
    llm
}

/// The event stream at `url`, from after event `after`.
async fn stream_after(url: &str, key: &str, after: i64) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .header("Last-Event-ID", after.to_string())
        .send()
        .await
        .unwrap()
}

/// Reads the whole event stream at `url` (from its first event) until `seen` holds for an
/// event, for at most 10 s; whether it did.
pub async fn until_event(url: String, key: &str, mut seen: impl FnMut(&Frame) -> bool) -> bool {
    let mut res = stream_after(&url, key, 0).await;
    let read = read_until(&mut res, |_, frame| seen(frame));
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(false)
}

#[actix_web::test]
async fn a_run_killed_mid_step_resumes_after_its_last_finished_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let llm = writes_then_stalls().await;

    let (mut first, operator) = start(&db, &llm, dir.path(), true, &[]);
    let operator = operator.expect("the first start prints the operator key");
    let post = |url: String, key: String, body: Value| async move {
        call(reqwest::Method::POST, url, &key, Some(body)).await
    };
    let (key, project, agent) = writer(&first.base, &operator).await;
    let run = post(
        format!("{}/agents/{agent}/execute", first.base),
        key.clone(),
        json!({ "goal": "write notes", "projectId": project }),
    )
    .await;
    let run = run["id"].as_str().unwrap().to_string();

    // Step 0 finishes; step 1 streams a little and stalls. Then the server dies hard.
    let stream = format!("{}/agents/{agent}/runs/{run}/stream", first.base);
    let streaming = until_event(stream, &key, |f| f.event == "token" && f.data["step"] == 1);
    assert!(streaming.await, "step 1's first tokens are stored");
    assert_eq!(llm.requests().len(), 2, "the second step started");
    unsafe { libc_kill(first.child.id() as i32, 9) };
    wait(&mut first.child, Duration::from_secs(10)).expect("killed");

    llm.push(Script::Text(vec!["resumed ", "and done"]));
    let (mut second, _) = start(&db, &llm, dir.path(), false, &[]);
    let url = format!("{}/agents/{agent}/runs/{run}", second.base);
    let finished = until(Duration::from_secs(10), || async {
        let now = call(reqwest::Method::GET, url.clone(), &key, None).await;
        (now["status"] != "running" && now["status"] != "queued").then_some(now)
    })
    .await
    .expect("the run ends");
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["output"], "resumed and done");
    let steps = finished["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "step 0 was not run again");
    assert_eq!(steps[0]["tool_calls"][0]["name"], "write_file");
    assert_eq!(llm.requests().len(), 3);
    // The third call carried step 0's tool call and result: the conversation was rebuilt.
    let roles: Vec<_> = llm.requests()[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(
        roles,
        [
            json!("system"),
            json!("user"),
            json!("assistant"),
            json!("tool")
        ]
    );

    // The event log has no gap: the interrupted step's partial tokens, then the resume.
    let stream = reqwest::Client::new()
        .get(format!("{url}/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let text = stream.text().await.unwrap();
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let resumed = kinds
        .iter()
        .position(|k| *k == "run.resumed")
        .expect("a run.resumed event");
    assert!(kinds[..resumed].contains(&"token"));
    assert_eq!(kinds.last(), Some(&"run.completed"));

    unsafe { libc_kill(second.child.id() as i32, 15) };
    wait(&mut second.child, Duration::from_secs(20)).expect("the second server stops");
    llm.stop().await;
}

#[actix_web::test]
async fn a_chat_session_killed_mid_reply_is_settled_at_start_up_keeping_its_partial_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let llm = FakeLlm::start().await;
    llm.push(Script::Stall(vec!["half an ans"]));

    let (mut first, operator) = start(&db, &llm, dir.path(), true, &[]);
    let operator = operator.unwrap();
    let post = |url: String, key: String, body: Value| async move {
        call(reqwest::Method::POST, url, &key, Some(body)).await
    };
    let tenant = post(
        format!("{}/tenants", first.base),
        operator,
        json!({ "name": "Acme" }),
    )
    .await;
    let key = tenant["api_key"]["key"].as_str().unwrap().to_string();
    let project = post(
        format!("{}/projects", first.base),
        key.clone(),
        json!({ "name": "p" }),
    )
    .await;
    let session = post(
        format!("{}/chat/sessions", first.base),
        key.clone(),
        json!({ "projectId": project["id"] }),
    )
    .await;
    let session = session["id"].as_str().unwrap().to_string();
    let messages = format!("{}/chat/sessions/{session}/messages", first.base);
    post(messages.clone(), key.clone(), json!({ "content": "first" })).await;
    let waiting = post(
        messages.clone(),
        key.clone(),
        json!({ "content": "second" }),
    )
    .await;
    let second_reply = waiting["reply_id"].as_str().unwrap().to_string();
    let stream = format!("{}/chat/sessions/{session}/stream", first.base);
    let streaming = until_event(stream, &key, |f| f.event == "token");
    assert!(streaming.await, "the first reply's tokens are stored");
    unsafe { libc_kill(first.child.id() as i32, 9) };
    wait(&mut first.child, Duration::from_secs(10)).expect("killed");

    llm.push(Script::Text(vec!["second ", "answer"]));
    let (mut second, _) = start(&db, &llm, dir.path(), false, &[]);
    // The new process settles what the crash left by itself, with no client asking: the
    // cut reply fails keeping the text it had streamed, and the waiting message is answered.
    let listed = format!("{}/chat/sessions/{session}/messages", second.base);
    let answered = |messages: &Value| {
        messages
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == second_reply.as_str() && m["status"] == "complete")
    };
    let messages_now = until(Duration::from_secs(10), || async {
        let now = call(reqwest::Method::GET, listed.clone(), &key, None).await;
        answered(&now).then_some(now)
    })
    .await
    .unwrap_or_default();
    let cut = messages_now
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant" && m["status"] == "failed")
        .unwrap_or_else(|| panic!("the cut reply failed: {messages_now}"));
    assert_eq!(cut["error"]["code"], "interrupted");
    assert_eq!(cut["content"], "half an ans", "the partial text is kept");
    // The whole log, replayed on request (Last-Event-ID: 0).
    let mut stream = reqwest::Client::new()
        .get(format!("{}/chat/sessions/{session}/stream", second.base))
        .bearer_auth(&key)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let read = async {
        while !text.contains("event: reply.completed") {
            let Some(chunk) = stream.chunk().await.unwrap() else {
                break;
            };
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the waiting message is answered");
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let failed = kinds
        .iter()
        .position(|k| *k == "reply.failed")
        .expect("the cut reply failed");
    let completed = kinds.iter().position(|k| *k == "reply.completed").unwrap();
    assert!(failed < completed, "{kinds:?}");
    assert!(text.contains("\"interrupted\""), "{text}");
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "one log, no gap"
    );

    let history = call(
        reqwest::Method::GET,
        format!("{}/chat/sessions/{session}/messages", second.base),
        &key,
        None,
    )
    .await;
    let answer = history
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == second_reply.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (answer["status"].as_str(), answer["content"].as_str()),
        (Some("complete"), Some("second answer"))
    );
    let asked = &llm.requests()[1]["messages"];
    let contents: Vec<&str> = asked
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    // The cut reply's partial text is part of the conversation, as a cancelled one's is,
    // marked as cut off.
    assert_eq!(
        contents,
        [
            "You are a helpful assistant.",
            "first",
            "half an ans\n\n[This reply was interrupted before it was finished.]",
            "second"
        ]
    );

    unsafe { libc_kill(second.child.id() as i32, 15) };
    wait(&mut second.child, Duration::from_secs(20)).expect("the second server stops");
    llm.stop().await;
}

#[actix_web::test]
async fn webhook_deliveries_pending_when_the_server_is_killed_are_delivered_after_it_restarts() {
    use crate::webhooks::{verify, Receiver};

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let llm = FakeLlm::start().await;
    let receiver = Receiver::start().await;
    for _ in 0..1000 {
        receiver.answer(503, 0);
    }
    let env = [
        ("DGIDGI__OUTBOUND__ALLOW_PRIVATE_TARGETS", "true"),
        ("DGIDGI__WEBHOOKS__POLL_MS", "50"),
        (
            "DGIDGI__WEBHOOKS__RETRY_SCHEDULE_SECS",
            "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
        ),
    ];
    let start_with_env = |first: bool| start(&db, &llm, dir.path(), first, &env);
    let (mut first, operator) = start_with_env(true);
    let operator = operator.unwrap();
    let post = |url: String, key: String, body: Value| async move {
        call(reqwest::Method::POST, url, &key, Some(body)).await
    };
    let tenant = post(
        format!("{}/tenants", first.base),
        operator,
        json!({ "name": "Acme" }),
    )
    .await;
    let key = tenant["api_key"]["key"].as_str().unwrap().to_string();
    let hook = post(
        format!("{}/webhooks", first.base),
        key.clone(),
        json!({ "url": receiver.url, "events": ["project.created"] }),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    for name in ["one", "two", "three"] {
        post(
            format!("{}/projects", first.base),
            key.clone(),
            json!({ "name": name }),
        )
        .await;
    }
    receiver.wait_for(|g| g.len() >= 3).await;
    unsafe { libc_kill(first.child.id() as i32, 9) };
    wait(&mut first.child, Duration::from_secs(10)).expect("killed");
    let failed_before = receiver.got().len();
    receiver.heal();

    let (mut second, _) = start_with_env(false);
    let got = receiver
        .wait_for(|g| {
            let ok: std::collections::HashSet<&str> =
                g[failed_before..].iter().map(|r| r.body.as_str()).collect();
            ["\"one\"", "\"two\"", "\"three\""]
                .iter()
                .all(|n| ok.iter().any(|b| b.contains(n)))
        })
        .await;
    let after: Vec<_> = got[failed_before..].to_vec();
    assert!(after.iter().all(|r| verify(&secret, r)));
    let ids: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "three deliveries, each keeping its id across the restart"
    );

    unsafe { libc_kill(second.child.id() as i32, 15) };
    wait(&mut second.child, Duration::from_secs(20)).expect("the second server stops");
    receiver.stop().await;
    llm.stop().await;
}

#[actix_web::test]
async fn an_agent_reply_killed_mid_step_resumes_and_the_session_answers_the_next_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let llm = writes_then_stalls().await;

    let (mut first, operator) = start(&db, &llm, dir.path(), true, &[]);
    let post = |url: String, key: String, body: Value| async move {
        call(reqwest::Method::POST, url, &key, Some(body)).await
    };
    let (key, project, agent) = writer(&first.base, &operator.unwrap()).await;
    let session = post(
        format!("{}/chat/sessions", first.base),
        key.clone(),
        json!({ "projectId": project, "agentId": agent }),
    )
    .await;
    let session = session["id"].as_str().unwrap().to_string();
    let messages = format!("{}/chat/sessions/{session}/messages", first.base);
    let posted = post(messages, key.clone(), json!({ "content": "write notes" })).await;
    let reply = posted["reply_id"].as_str().unwrap().to_string();

    // Step 0 (the tool call) finishes; step 1 streams a little and stalls. Then the server
    // dies hard.
    let stream = format!("{}/chat/sessions/{session}/stream", first.base);
    let streaming = until_event(stream, &key, |f| f.event == "token" && f.data["step"] == 1);
    assert!(streaming.await, "step 1's first tokens are stored");
    unsafe { libc_kill(first.child.id() as i32, 9) };
    wait(&mut first.child, Duration::from_secs(10)).expect("killed");

    llm.push(Script::Text(vec!["resumed ", "and done"]));
    llm.push(Script::Text(vec!["next answer"]));
    let (mut second, _) = start(&db, &llm, dir.path(), false, &[]);
    // The run resumes after its last finished step and writes the reply, by itself.
    let listed = format!("{}/chat/sessions/{session}/messages", second.base);
    let replied = until(Duration::from_secs(10), || async {
        let now = call(reqwest::Method::GET, listed.clone(), &key, None).await;
        let reply = now[0].clone();
        (reply["status"] != "streaming").then_some(reply)
    })
    .await
    .expect("the reply ends");
    assert_eq!(replied["id"], reply.as_str());
    assert_eq!(replied["status"], "complete", "{replied}");
    assert_eq!(replied["content"], "resumed and done");
    let run = replied["run_id"].as_str().unwrap().to_string();
    let shown = call(
        reqwest::Method::GET,
        format!("{}/agents/{agent}/runs/{run}", second.base),
        &key,
        None,
    )
    .await;
    assert_eq!(shown["status"], "completed");
    assert_eq!(
        shown["steps"].as_array().unwrap().len(),
        2,
        "step 0 was not run again"
    );

    // The session's log: the cut step's tokens, then the resume, then the end; no gap.
    let mut res = reqwest::Client::new()
        .get(format!("{}/chat/sessions/{session}/stream", second.base))
        .bearer_auth(&key)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut frames = Vec::new();
    let read = read_until(&mut res, |_, frame| {
        frames.push(frame.clone());
        frame.event == "reply.completed"
    });
    assert!(tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(false));
    drop(res);
    let ids: Vec<i64> = frames.iter().map(|f| f.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    let resumed = kinds
        .iter()
        .position(|k| *k == "reply.resumed")
        .expect("a reply.resumed event");
    assert!(kinds[..resumed].contains(&"token"));
    assert_eq!(frames[resumed].data["after_step"], 1);

    // The session answers the next message.
    post(
        format!("{}/chat/sessions/{session}/messages", second.base),
        key.clone(),
        json!({ "content": "and now?" }),
    )
    .await;
    let next = until(Duration::from_secs(10), || async {
        let now = call(reqwest::Method::GET, listed.clone(), &key, None).await;
        let newest = &now[0];
        let answered = newest["role"] == "assistant" && newest["id"] != reply.as_str();
        (answered && newest["status"] != "streaming").then(|| newest.clone())
    })
    .await
    .expect("the next message is answered");
    assert_eq!(next["content"], "next answer");
    unsafe { libc_kill(second.child.id() as i32, 9) };
    let _ = wait(&mut second.child, Duration::from_secs(10));
    llm.stop().await;
}

/// The server dies right after the write path committed a run's last step and its end,
/// before anything published them (`DGIDGI_CRASH_AFTER_COMMIT`): a subscriber that comes
/// back after the last event it saw gets both from the store, once each, with no gap.
#[actix_web::test]
async fn events_committed_but_never_published_reach_a_subscriber_from_the_store() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let llm = FakeLlm::start().await;
    llm.push(Script::Slow(
        vec!["one ", "two ", "three"],
        Duration::from_millis(300),
    ));
    let crash = [("DGIDGI_CRASH_AFTER_COMMIT", "step.completed")];
    let (mut first, operator) = start(&db, &llm, dir.path(), true, &crash);
    let operator = operator.expect("the first start prints the operator key");
    let (key, project, agent) = writer(&first.base, &operator).await;
    let run = call(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/execute", first.base),
        &key,
        Some(json!({ "goal": "count", "projectId": project })),
    )
    .await;
    let run = run["id"].as_str().unwrap().to_string();

    // A live subscriber reads until the server dies under it.
    let path = format!("/agents/{agent}/runs/{run}/stream");
    let mut live = stream_after(&format!("{}{path}", first.base), &key, 0).await;
    let mut seen: Vec<Frame> = Vec::new();
    let read = read_until(&mut live, |_, frame| {
        seen.push(frame.clone());
        false
    });
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the stream ends when the server dies");
    let status = wait(&mut first.child, Duration::from_secs(10)).expect("the server stopped");
    assert_eq!(
        status.signal(),
        Some(6),
        "it aborted at the crash point: {status:?}"
    );
    let kinds: Vec<&str> = seen.iter().map(|f| f.event.as_str()).collect();
    assert!(kinds.contains(&"token"), "{kinds:?}");
    assert!(
        !kinds.contains(&"step.completed") && !kinds.contains(&"run.completed"),
        "nothing after the commit was published: {kinds:?}"
    );

    // The next server has the run's end from the store; the subscriber comes back.
    let (mut second, _) = start(&db, &llm, dir.path(), false, &[]);
    let last = seen.last().unwrap().id;
    let mut rest = Vec::new();
    let mut back = stream_after(&format!("{}{path}", second.base), &key, last).await;
    let ended = read_until(&mut back, |_, frame| {
        rest.push(frame.clone());
        frame.event == "run.completed"
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .unwrap_or(false),
        "the run's end is read from the store: {rest:?}"
    );
    let rest_kinds: Vec<&str> = rest.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(rest_kinds, ["step.completed", "run.completed"]);
    let ids: Vec<i64> = seen.iter().chain(&rest).map(|f| f.id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    let shown = call(
        reqwest::Method::GET,
        format!("{}/agents/{agent}/runs/{run}", second.base),
        &key,
        None,
    )
    .await;
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["output"], "one two three");
    let _ = second.child.kill();
}
