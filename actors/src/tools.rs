//! Built-in tools that work on a run's project workspace: `write_file`, `read_file`,
//! `list_files`. Paths are relative to the workspace and can never leave it.

use std::path::{Component, Path, PathBuf};

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

/// A project's folder of files.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

#[derive(Deserialize)]
struct PathArgs {
    #[serde(default)]
    path: String,
    #[serde(default)]
    content: Option<String>,
}

impl Workspace {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
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
        match call.name.as_str() {
            "write_file" => {
                self.write(&args.path, args.content.unwrap_or_default())
                    .await
            }
            "read_file" => self.read(&args.path).await,
            "list_files" => self.list(&args.path).await,
            other => ToolOutcome::error(format!("unknown tool '{other}'")),
        }
    }

    /// The absolute path of `relative`, refusing anything that could leave the workspace.
    fn resolve(&self, relative: &str) -> Result<PathBuf, String> {
        let path = Path::new(relative);
        if relative.is_empty() || relative.contains('\0') {
            return Err("a path is required".into());
        }
        if !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "'{relative}' is outside the workspace: use a relative path without '..'"
            ));
        }
        Ok(self.root.join(path))
    }

    /// Whether `path` (which exists) is inside the workspace once links are followed.
    async fn contained(&self, path: &Path) -> bool {
        match (
            tokio::fs::canonicalize(&self.root).await,
            tokio::fs::canonicalize(path).await,
        ) {
            (Ok(root), Ok(path)) => path.starts_with(root),
            _ => false,
        }
    }

    async fn write(&self, relative: &str, content: String) -> ToolOutcome {
        if content.len() > MAX_WRITE_BYTES {
            return ToolOutcome::error(format!("content is larger than {MAX_WRITE_BYTES} bytes"));
        }
        let path = match self.resolve(relative) {
            Ok(p) => p,
            Err(e) => return ToolOutcome::error(e),
        };
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        if let Err(e) = tokio::fs::create_dir_all(&parent).await {
            return ToolOutcome::error(format!("cannot create folder: {e}"));
        }
        if !self.contained(&parent).await {
            return ToolOutcome::error(format!("'{relative}' is outside the workspace"));
        }
        if tokio::fs::symlink_metadata(&path)
            .await
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return ToolOutcome::error(format!("'{relative}' is a link; links are not followed"));
        }
        match tokio::fs::write(&path, content.as_bytes()).await {
            Ok(()) => ToolOutcome {
                output: format!("wrote {} bytes to {relative}", content.len()),
                is_error: false,
                artifact: Some(Artifact {
                    path: relative.to_string(),
                    bytes: content.len() as u64,
                }),
            },
            Err(e) => ToolOutcome::error(format!("cannot write {relative}: {e}")),
        }
    }

    async fn read(&self, relative: &str) -> ToolOutcome {
        let path = match self.resolve(relative) {
            Ok(p) => p,
            Err(e) => return ToolOutcome::error(e),
        };
        if !self.contained(&path).await {
            return ToolOutcome::error(format!("no file '{relative}' in the workspace"));
        }
        match tokio::fs::read(&path).await {
            Ok(bytes) if bytes.len() > MAX_READ_BYTES => ToolOutcome::ok(format!(
                "{}\n[truncated: {} bytes in all]",
                String::from_utf8_lossy(&bytes[..MAX_READ_BYTES]),
                bytes.len()
            )),
            Ok(bytes) => ToolOutcome::ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => ToolOutcome::error(format!("cannot read {relative}: {e}")),
        }
    }

    async fn list(&self, relative: &str) -> ToolOutcome {
        let start = if relative.is_empty() || relative == "." {
            self.root.clone()
        } else {
            match self.resolve(relative) {
                Ok(p) => p,
                Err(e) => return ToolOutcome::error(e),
            }
        };
        if tokio::fs::metadata(&self.root).await.is_err() {
            return ToolOutcome::ok(String::new());
        }
        if !self.contained(&start).await {
            return ToolOutcome::error(format!("no folder '{relative}' in the workspace"));
        }
        let mut files = Vec::new();
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let Ok(kind) = entry.file_type().await else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    if let Ok(rel) = entry.path().strip_prefix(&self.root) {
                        files.push(rel.to_string_lossy().into_owned());
                    }
                }
                if files.len() >= MAX_LISTED {
                    break;
                }
            }
        }
        files.sort();
        ToolOutcome::ok(files.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: serde_json::Value) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: args.to_string(),
        }
    }

    #[actix::test]
    async fn files_written_can_be_read_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"));
        let wrote = ws
            .run(&call(
                "write_file",
                json!({ "path": "src/a.txt", "content": "hello" }),
            ))
            .await;
        assert!(!wrote.is_error, "{}", wrote.output);
        assert_eq!(
            wrote.artifact,
            Some(Artifact {
                path: "src/a.txt".into(),
                bytes: 5
            })
        );
        assert_eq!(
            ws.run(&call("read_file", json!({ "path": "src/a.txt" })))
                .await
                .output,
            "hello"
        );
        assert_eq!(
            ws.run(&call("list_files", json!({}))).await.output,
            "src/a.txt"
        );
    }

    #[actix::test]
    async fn paths_cannot_leave_the_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("secret.txt"), "no").unwrap();
        let ws = Workspace::new(dir.join("ws"));
        std::fs::create_dir_all(dir.join("ws")).unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("ws/link")).unwrap();
        for (name, path) in [
            ("read_file", "../secret.txt"),
            ("read_file", "/etc/passwd"),
            ("read_file", "link"),
            ("write_file", "../escape.txt"),
            ("write_file", "a/../../escape.txt"),
            ("write_file", "link"),
            ("list_files", ".."),
        ] {
            let out = ws
                .run(&call(name, json!({ "path": path, "content": "x" })))
                .await;
            assert!(out.is_error, "{name} {path}: {}", out.output);
        }
        assert!(!dir.join("escape.txt").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("secret.txt")).unwrap(),
            "no"
        );
    }
}
