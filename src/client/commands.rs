//! What each client command does.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use dgidgi_actors::events::{RunEvent, SessionEvent};
use reqwest::Method;
use serde_json::{json, Value};

use super::api::Api;
use super::print::{print_list, print_one, text, AGENT_FIELDS, PROJECT_FIELDS, RUN_FIELDS};
use super::Result;
use crate::cli::{AgentAction, Output, ProjectAction, RunAction};

pub(super) async fn projects(api: &Api, out: Output, action: ProjectAction) -> Result<i32> {
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

pub(super) async fn agents(api: &Api, out: Output, action: AgentAction) -> Result<i32> {
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
pub(super) fn finished(out: Output, run: &Value, print_output: bool) -> Result<i32> {
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
pub(super) async fn wait_for_run(api: &Api, path: &str) -> Result<()> {
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
pub(super) async fn follow_run(api: &Api, path: &str) -> Result<()> {
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
        // A run that writes a chat reply ends with the reply.
        !RunEvent::is_end(event) && !SessionEvent::REPLY_ENDS.contains(&event)
    })
    .await?;
    Ok(())
}

pub(super) async fn runs(api: &Api, out: Output, action: RunAction) -> Result<i32> {
    match action {
        RunAction::Get { run, agent } => {
            let run = api
                .call(Method::GET, &format!("/agents/{agent}/runs/{run}"), None)
                .await?;
            print_run(out, &run);
        }
        RunAction::Approve {
            run,
            agent,
            calls,
            arguments,
        } => {
            let arguments = match arguments {
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(args) if args.is_object() && calls.len() == 1 => Some(args),
                    Ok(_) if calls.len() != 1 => {
                        eprintln!("error: --arguments goes with exactly one --call");
                        return Ok(2);
                    }
                    _ => {
                        eprintln!("error: --arguments must be a JSON object");
                        return Ok(2);
                    }
                },
                None => None,
            };
            let decisions: Vec<_> = calls
                .iter()
                .map(|call| json!({ "toolCallId": call, "approve": true, "arguments": arguments }))
                .collect();
            let run = decide(api, &agent, &run, decisions).await?;
            print_run(out, &run);
        }
        RunAction::Deny {
            run,
            agent,
            calls,
            reason,
        } => {
            let decisions: Vec<_> = calls
                .iter()
                .map(|call| json!({ "toolCallId": call, "approve": false, "reason": reason }))
                .collect();
            let run = decide(api, &agent, &run, decisions).await?;
            print_run(out, &run);
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

/// Sends `decisions` on the calls run `run` waits on; the run as it then is.
async fn decide(
    api: &Api,
    agent: &str,
    run: &str,
    decisions: Vec<serde_json::Value>,
) -> Result<serde_json::Value> {
    api.call(
        Method::POST,
        &format!("/agents/{agent}/runs/{run}/approve"),
        Some(json!({ "decisions": decisions })),
    )
    .await
}

/// A run as a record, then the tool calls it waits on, if any, as a table.
fn print_run(out: Output, run: &serde_json::Value) {
    print_one(out, run, &RUN_FIELDS);
    let Some(calls) = run["pending_tool_calls"].as_array().filter(|_| !out.json) else {
        return;
    };
    println!();
    print_list(
        out,
        calls
            .iter()
            .map(|c| {
                let answer = match c["decision"]["approve"].as_bool() {
                    Some(true) => "approved",
                    Some(false) => "denied",
                    None => "waiting",
                };
                let mut c = c.clone();
                c["answer"] = answer.into();
                c
            })
            .collect(),
        &[
            ("TOOL CALL", "tool_call_id"),
            ("TOOL", "name"),
            ("ARGUMENTS", "arguments"),
            ("ANSWER", "answer"),
        ],
    );
}

/// Reads messages from stdin, one per line; prints each reply as it streams.
pub(super) async fn chat(api: &Api, session: &str) -> Result<i32> {
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
                        // In a session with an agent: its tool calls, and a wait for a run slot.
                        RunEvent::TOOL_CALLED => {
                            eprintln!(
                                "\n[tool] {} {}",
                                text(&data["name"]),
                                text(&data["arguments"])
                            );
                            true
                        }
                        SessionEvent::REPLY_QUEUED => {
                            eprintln!("[waiting for a run slot]");
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
