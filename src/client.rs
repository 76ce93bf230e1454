//! The command-line client: talks to a running server over its public API with the key in
//! `DGIDGI_API_KEY` at `DGIDGI_API_URL`. Tables for people, `--json` for scripts; an API
//! error is printed as its code and message and ends the command with exit code 1.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use dgidgi_actors::events::{RunEvent, SessionEvent};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{AgentAction, Command, Output, ProjectAction, RunAction};

/// Why a command failed: the API's error code and message, or the client's own.
#[derive(Debug)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn from_env() -> Result<Self> {
        let url = std::env::var("DGIDGI_API_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8080/api/v1".into());
        let url = url.trim_end_matches('/');
        let base = if url.ends_with("/api/v1") {
            url.to_string()
        } else {
            format!("{url}/api/v1")
        };
        let key = std::env::var("DGIDGI_API_KEY").map_err(|_| {
            Failure::new("NO_API_KEY", "set DGIDGI_API_KEY to an API key (chy_...)")
        })?;
        Ok(Self {
            base,
            key,
            http: reqwest::Client::new(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
            .await
            .map_err(|e| Failure::new("UNREACHABLE", format!("{}: {e}", self.base)))
    }

    /// The `data` of a JSON answer, or the API's error.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let res = self.send(method, path, body).await?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NO_CONTENT || text.is_empty() {
            return if status.is_success() {
                Ok(Value::Null)
            } else {
                Err(Failure::new("HTTP_ERROR", format!("HTTP {status}")))
            };
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| Failure::new("BAD_RESPONSE", format!("HTTP {status}: {text}")))?;
        if let Some(error) = body.get("error") {
            return Err(Failure::new(
                error["code"].as_str().unwrap_or("ERROR"),
                error["message"].as_str().unwrap_or_default(),
            ));
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Every item of a list route, page after page (at most 50 pages).
    async fn list(&self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let page = match &cursor {
                Some(c) => format!("{path}?limit=100&cursor={c}"),
                None => format!("{path}?limit=100"),
            };
            let res = self.send(Method::GET, &page, None).await?;
            let body: Value = res
                .json()
                .await
                .map_err(|e| Failure::new("BAD_RESPONSE", e.to_string()))?;
            if let Some(error) = body.get("error") {
                return Err(Failure::new(
                    error["code"].as_str().unwrap_or("ERROR"),
                    error["message"].as_str().unwrap_or_default(),
                ));
            }
            items.extend(body["data"].as_array().cloned().unwrap_or_default());
            cursor = body["meta"]["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// Follows an SSE stream from after `last`, calling `on` with (id, event, data) until it
    /// returns false or the stream ends.
    async fn follow(
        &self,
        path: &str,
        last: i64,
        mut on: impl FnMut(i64, &str, &Value) -> bool,
    ) -> Result<i64> {
        // Always named, 0 included: a chat stream without it starts at the reply in
        // flight, and the reply we wait for may already have ended.
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("last-event-id", last.to_string());
        let mut res = req
            .send()
            .await
            .map_err(|e| Failure::new("UNREACHABLE", e.to_string()))?;
        if !res.status().is_success() {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            return Err(Failure::new(
                body["error"]["code"].as_str().unwrap_or("HTTP_ERROR"),
                body["error"]["message"].as_str().unwrap_or_default(),
            ));
        }
        let mut buffer = String::new();
        let mut seen = last;
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| Failure::new("STREAM_BROKEN", e.to_string()))?
        {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let Some(id) = id else { continue };
                seen = id;
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if !on(id, &event, &data) {
                    return Ok(seen);
                }
            }
        }
        Ok(seen)
    }
}

/// Runs a client command; returns the process's exit code.
pub async fn run(command: Command) -> i32 {
    let outcome = async {
        let api = Api::from_env()?;
        match command {
            Command::Projects { out, action } => projects(&api, out, action).await,
            Command::Agents { out, action } => agents(&api, out, action).await,
            Command::Runs { out, action } => runs(&api, out, action).await,
            Command::Chat {
                session,
                project,
                title,
                system_prompt,
            } => {
                let session = match (session, project) {
                    (Some(session), _) => session,
                    (None, project) => {
                        let created = api
                            .call(
                                Method::POST,
                                "/chat/sessions",
                                Some(json!({ "projectId": project, "title": title, "systemPrompt": system_prompt })),
                            )
                            .await?;
                        let id = text(&created["id"]);
                        eprintln!("session {id}");
                        id
                    }
                };
                chat(&api, &session).await
            }
            Command::Serve | Command::Admin { .. } => unreachable!("server commands"),
        }
    }
    .await;
    match outcome {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}: {}", f.code, f.message);
            1
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows under headers, columns aligned.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row));
    }
}

/// Prints one resource as `field  value` lines.
fn record(value: &Value, fields: &[&str]) {
    let rows = fields
        .iter()
        .map(|f| vec![f.to_string(), text(&value[*f])])
        .collect();
    table(&["FIELD", "VALUE"], rows);
}

fn print_list(out: Output, items: Vec<Value>, columns: &[(&str, &str)]) {
    if out.json {
        println!("{}", Value::Array(items));
        return;
    }
    let rows = items
        .iter()
        .map(|i| columns.iter().map(|(_, f)| text(&i[*f])).collect())
        .collect();
    table(&columns.iter().map(|(h, _)| *h).collect::<Vec<_>>(), rows);
}

fn print_one(out: Output, value: &Value, fields: &[&str]) {
    if out.json {
        println!("{value}");
    } else {
        record(value, fields);
    }
}

const PROJECT_FIELDS: [&str; 5] = ["id", "name", "description", "language", "created_at"];
const AGENT_FIELDS: [&str; 6] = ["id", "name", "provider", "model", "tools", "created_at"];
const RUN_FIELDS: [&str; 7] = [
    "id",
    "agent_id",
    "status",
    "goal",
    "output",
    "error",
    "finished_at",
];

async fn projects(api: &Api, out: Output, action: ProjectAction) -> Result<i32> {
    match action {
        ProjectAction::List => {
            let items = api.list("/projects").await?;
            print_list(
                out,
                items,
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("LANGUAGE", "language"),
                    ("CREATED", "created_at"),
                ],
            );
        }
        ProjectAction::Create {
            name,
            description,
            language,
        } => {
            let body = json!({ "name": name, "description": description, "language": language });
            let project = api.call(Method::POST, "/projects", Some(body)).await?;
            print_one(out, &project, &PROJECT_FIELDS);
        }
        ProjectAction::Get { id } => {
            let project = api
                .call(Method::GET, &format!("/projects/{id}"), None)
                .await?;
            print_one(out, &project, &PROJECT_FIELDS);
        }
        ProjectAction::Delete { id } => {
            api.call(Method::DELETE, &format!("/projects/{id}"), None)
                .await?;
            if out.json {
                println!("{}", json!({ "id": id, "deleted": true }));
            } else {
                println!("deleted {id}");
            }
        }
    }
    Ok(0)
}

async fn agents(api: &Api, out: Output, action: AgentAction) -> Result<i32> {
    match action {
        AgentAction::List => {
            let items = api.list("/agents").await?;
            print_list(
                out,
                items,
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("PROVIDER", "provider"),
                    ("MODEL", "model"),
                ],
            );
            Ok(0)
        }
        AgentAction::Create {
            name,
            system_prompt,
            provider,
            model,
            tools,
            autonomy,
        } => {
            let mut body = json!({ "name": name, "systemPrompt": system_prompt, "provider": provider,
                                   "model": model, "tools": tools });
            if let Some(level) = autonomy {
                body["config"] = json!({ "autonomyLevel": level });
            }
            let agent = api.call(Method::POST, "/agents", Some(body)).await?;
            print_one(out, &agent, &AGENT_FIELDS);
            Ok(0)
        }
        AgentAction::Execute {
            agent,
            goal,
            project,
            stream,
        } => {
            let run = api
                .call(
                    Method::POST,
                    &format!("/agents/{agent}/execute"),
                    Some(json!({ "goal": goal, "projectId": project })),
                )
                .await?;
            let run_id = text(&run["id"]);
            // On stderr, so that stdout is the answer alone.
            eprintln!("run {run_id}");
            let path = format!("/agents/{agent}/runs/{run_id}");
            if stream {
                follow_run(api, &path).await?;
            } else {
                wait_for_run(api, &path).await?;
            }
            let run = api.call(Method::GET, &path, None).await?;
            // A streamed answer is already on stdout.
            finished(out, &run, !stream)
        }
    }
}

/// Prints a finished run (its output, unless `print_output` is false because it streamed);
/// a failed or cancelled one ends with exit code 1.
fn finished(out: Output, run: &Value, print_output: bool) -> Result<i32> {
    if out.json {
        println!("{run}");
    } else if print_output && !run["output"].is_null() && run["status"] == "completed" {
        println!("{}", text(&run["output"]));
    }
    match run["status"].as_str() {
        Some("completed") => Ok(0),
        Some("failed") => {
            eprintln!(
                "run {} failed: {}: {}",
                text(&run["id"]),
                text(&run["error"]["code"]),
                text(&run["error"]["message"])
            );
            Ok(1)
        }
        other => {
            eprintln!("run {} ended {}", text(&run["id"]), other.unwrap_or("?"));
            Ok(1)
        }
    }
}

/// Polls the run until it ends, with a spinner on a terminal.
async fn wait_for_run(api: &Api, path: &str) -> Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner.enable_steady_tick(Duration::from_millis(100));
    loop {
        let run = api.call(Method::GET, path, None).await?;
        let status = text(&run["status"]);
        let steps = run["steps"].as_array().map_or(0, Vec::len);
        spinner.set_message(format!(
            "{} {status}, {steps} step(s) done",
            text(&run["id"])
        ));
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            spinner.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the run's tokens to stdout and its tool calls to stderr as they happen.
async fn follow_run(api: &Api, path: &str) -> Result<()> {
    let mut stdout = std::io::stdout();
    api.follow(&format!("{path}/stream"), 0, |_, event, data| {
        match event {
            RunEvent::TOKEN => {
                let _ = write!(stdout, "{}", text(&data["delta"]));
                let _ = stdout.flush();
            }
            RunEvent::TOOL_CALLED => eprintln!(
                "\n[tool] {} {}",
                text(&data["name"]),
                text(&data["arguments"])
            ),
            RunEvent::STEP_COMPLETED => {
                let _ = writeln!(stdout);
            }
            _ => {}
        }
        !RunEvent::is_end(event)
    })
    .await?;
    Ok(())
}

async fn runs(api: &Api, out: Output, action: RunAction) -> Result<i32> {
    match action {
        RunAction::Get { run, agent } => {
            let run = api
                .call(Method::GET, &format!("/agents/{agent}/runs/{run}"), None)
                .await?;
            print_one(out, &run, &RUN_FIELDS);
        }
        RunAction::Cancel { run, agent } => {
            let run = api
                .call(
                    Method::POST,
                    &format!("/agents/{agent}/runs/{run}/cancel"),
                    Some(json!({})),
                )
                .await?;
            print_one(out, &run, &RUN_FIELDS);
        }
    }
    Ok(0)
}

/// Reads messages from stdin, one per line; prints each reply as it streams.
async fn chat(api: &Api, session: &str) -> Result<i32> {
    api.call(Method::GET, &format!("/chat/sessions/{session}"), None)
        .await?;
    let interactive = std::io::stdin().is_terminal();
    let mut last = 0;
    let mut stdout = std::io::stdout();
    loop {
        if interactive {
            eprint!("you> ");
        }
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
            return Ok(0);
        }
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        let posted = api
            .call(
                Method::POST,
                &format!("/chat/sessions/{session}/messages"),
                Some(json!({ "content": content })),
            )
            .await?;
        let reply_id = text(&posted["reply_id"]);
        let mut failed = None;
        last = api
            .follow(
                &format!("/chat/sessions/{session}/stream"),
                last,
                |_, event, data| {
                    if text(&data["reply_id"]) != reply_id {
                        return true;
                    }
                    match event {
                        SessionEvent::TOKEN => {
                            let _ = write!(stdout, "{}", text(&data["delta"]));
                            let _ = stdout.flush();
                            true
                        }
                        SessionEvent::REPLY_COMPLETED | SessionEvent::REPLY_CANCELLED => false,
                        SessionEvent::REPLY_FAILED => {
                            failed = Some(format!(
                                "{}: {}",
                                text(&data["error"]["code"]),
                                text(&data["error"]["message"])
                            ));
                            false
                        }
                        _ => true,
                    }
                },
            )
            .await?;
        let _ = writeln!(stdout);
        if let Some(why) = failed {
            eprintln!("reply failed: {why}");
        }
    }
}
