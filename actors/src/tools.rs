//! Built-in tools that work on a run's project workspace: `write_file`, `read_file`,
//! `list_files`. Paths are relative to the workspace and can never leave it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::provider::{ToolCall, ToolSpec};

/// The names of the built-in tools.
pub const TOOL_NAMES: [&str; 3] = ["write_file", "read_file", "list_files"];

const MAX_WRITE_BYTES: usize = 1024 * 1024;
const MAX_READ_BYTES: usize = 64 * 1024;
const MAX_LISTED: usize = 1000;

/// The specs of the named tools, for the model.
pub fn specs(names: &[String]) -> Vec<ToolSpec> {
    names
        .iter()
        .filter_map(|name| match name.as_str() {
            "write_file" => Some(ToolSpec {
                name: "write_file",
                description: "Write a UTF-8 text file in the project workspace, creating folders as needed.",
                parameters: json!({ "type": "object", "required": ["path", "content"], "properties": {
                    "path": { "type": "string", "description": "Path relative to the workspace" },
                    "content": { "type": "string" } } }),
            }),
            "read_file" => Some(ToolSpec {
                name: "read_file",
                description: "Read a UTF-8 text file of the project workspace.",
                parameters: json!({ "type": "object", "required": ["path"], "properties": {
                    "path": { "type": "string", "description": "Path relative to the workspace" } } }),
            }),
            "list_files" => Some(ToolSpec {
                name: "list_files",
                description: "List the files of the project workspace (or of a folder in it).",
                parameters: json!({ "type": "object", "properties": {
                    "path": { "type": "string", "description": "Folder relative to the workspace; empty for all" } } }),
            }),
            _ => None,
        })
        .collect()
}

/// A file a run wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub bytes: u64,
}

/// What a tool call produced: text for the model, and the file written, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub output: String,
    pub is_error: bool,
    pub artifact: Option<Artifact>,
}

impl ToolOutcome {
    fn ok(output: String) -> Self {
        Self {
            output,
            is_error: false,
            artifact: None,
        }
    }

    fn error(message: impl Into<String>) -> Self {
        Self {
            output: message.into(),
            is_error: true,
            artifact: None,
        }
    }
}

/// Where a project's files are kept (a folder of platform storage, or the tenant's own
/// bucket). Paths are relative and already checked; errors are messages for the model.
#[async_trait]
pub trait FileStore: Send + Sync {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), String>;
    /// The file's bytes, or `None` when there is no such file.
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
    /// Every file under `prefix` (empty: all), at most `max`.
    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, String>;
}

/// Opens the file store of a tenant's project, through the tenant's storage configuration.
#[async_trait]
pub trait Workspaces: Send + Sync {
    async fn open(&self, tenant_id: &str, project_id: &str) -> Result<Arc<dyn FileStore>, String>;
}

/// A project's files, as the built-in tools see them.
#[derive(Clone)]
pub struct Workspace {
    files: Result<Arc<dyn FileStore>, String>,
}

#[derive(Deserialize)]
struct PathArgs {
    #[serde(default)]
    path: String,
    #[serde(default)]
    content: Option<String>,
}

impl Workspace {
    /// A workspace over `files`; when they could not be opened, every tool call reports why.
    pub fn new(files: Result<Arc<dyn FileStore>, String>) -> Self {
        Self { files }
    }

    /// Runs `call`; failures are reported to the model as tool errors, never raised.
    pub async fn run(&self, call: &ToolCall) -> ToolOutcome {
        let args: PathArgs = match serde_json::from_str(if call.arguments.trim().is_empty() {
            "{}"
        } else {
            &call.arguments
        }) {
            Ok(a) => a,
            Err(e) => return ToolOutcome::error(format!("arguments are not valid JSON: {e}")),
        };
        let files = match &self.files {
            Ok(files) => files.as_ref(),
            Err(e) => return ToolOutcome::error(format!("the workspace is unavailable: {e}")),
        };
        match call.name.as_str() {
            "write_file" => write(files, &args.path, args.content.unwrap_or_default()).await,
            "read_file" => read(files, &args.path).await,
            "list_files" => list(files, &args.path).await,
            other => ToolOutcome::error(format!("unknown tool '{other}'")),
        }
    }
}

/// `relative` as a clean path inside the workspace (`a/b.txt`), refusing anything that
/// could leave it: `..`, absolute paths, empty segments.
pub fn checked_path(relative: &str) -> Result<String, String> {
    if relative.is_empty() || relative.contains('\0') || relative.contains('\\') {
        return Err("a path is required (relative, with '/' between folders)".into());
    }
    let mut parts = Vec::new();
    for part in relative.split('/') {
        match part {
            "" | "." if !parts.is_empty() || part == "." => continue,
            "" | ".." => {
                return Err(format!(
                    "'{relative}' is outside the workspace: use a relative path without '..'"
                ))
            }
            _ if part.chars().any(char::is_control) => {
                return Err(format!("'{relative}' contains control characters"))
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err("a path is required".into());
    }
    Ok(parts.join("/"))
}

async fn write(files: &dyn FileStore, relative: &str, content: String) -> ToolOutcome {
    if content.len() > MAX_WRITE_BYTES {
        return ToolOutcome::error(format!("content is larger than {MAX_WRITE_BYTES} bytes"));
    }
    let path = match checked_path(relative) {
        Ok(p) => p,
        Err(e) => return ToolOutcome::error(e),
    };
    let bytes = content.len() as u64;
    match files.put(&path, content.into_bytes()).await {
        Ok(()) => ToolOutcome {
            output: format!("wrote {bytes} bytes to {path}"),
            is_error: false,
            artifact: Some(Artifact { path, bytes }),
        },
        Err(e) => ToolOutcome::error(format!("cannot write {path}: {e}")),
    }
}

async fn read(files: &dyn FileStore, relative: &str) -> ToolOutcome {
    let path = match checked_path(relative) {
        Ok(p) => p,
        Err(e) => return ToolOutcome::error(e),
    };
    match files.get(&path).await {
        Ok(Some(bytes)) if bytes.len() > MAX_READ_BYTES => ToolOutcome::ok(format!(
            "{}\n[truncated: {} bytes in all]",
            String::from_utf8_lossy(&bytes[..MAX_READ_BYTES]),
            bytes.len()
        )),
        Ok(Some(bytes)) => ToolOutcome::ok(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) => ToolOutcome::error(format!("no file '{path}' in the workspace")),
        Err(e) => ToolOutcome::error(format!("cannot read {path}: {e}")),
    }
}

async fn list(files: &dyn FileStore, relative: &str) -> ToolOutcome {
    let prefix = if relative.is_empty() || relative == "." {
        String::new()
    } else {
        match checked_path(relative) {
            Ok(p) => p,
            Err(e) => return ToolOutcome::error(e),
        }
    };
    match files.list(&prefix, MAX_LISTED).await {
        Ok(mut found) => {
            found.sort();
            ToolOutcome::ok(found.join("\n"))
        }
        Err(e) => ToolOutcome::error(format!("cannot list the workspace: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_workspace() {
        for (given, clean) in [
            ("a.txt", "a.txt"),
            ("src/a.txt", "src/a.txt"),
            ("./src//a.txt", "src/a.txt"),
            ("src/./a.txt", "src/a.txt"),
        ] {
            assert_eq!(checked_path(given).as_deref(), Ok(clean), "{given}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../secret.txt",
            "/etc/passwd",
            "a/../../escape.txt",
            "a/..",
            "a\\b",
            "a\0b",
            "a\nb",
        ] {
            assert!(checked_path(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
