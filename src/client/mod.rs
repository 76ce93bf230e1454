//! The command-line client: talks to a running server over its public API with the key in
//! `DGIDGI_API_KEY` at `DGIDGI_API_URL`. Tables for people, `--json` for scripts; an API
//! error is printed as its code and message and ends the command with exit code 1.
//!
//! - `api.rs`: the HTTP calls (envelopes, pages, SSE);
//! - `commands.rs`: what each command does;
//! - `print.rs`: tables and records.

mod api;
mod commands;
mod print;

use reqwest::Method;
use serde_json::json;

use crate::cli::Command;
use api::Api;
use commands::{agents, chat, projects, runs};
use print::text;

/// Why a command failed: the API's error code and message, or the client's own.
#[derive(Debug)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Failure>;

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
