//! The tools a run offers its model ([`Toolbox`]): the built-ins that work on the run's
//! project workspace (`write_file`, `read_file`, `list_files`; paths are relative to the
//! workspace and can never leave it), and the tools of the tenant's MCP servers that the
//! agent names (`mcp:<server>/<tool>` or `mcp:<server>/*`), called through [`RemoteTools`].

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
                name: "write_file".into(),
                description: "Write a UTF-8 text file in the project workspace, creating folders as needed.".into(),
                parameters: json!({ "type": "object", "required": ["path", "content"], "properties": {
                    "path": { "type": "string", "description": "Path relative to the workspace" },
                    "content": { "type": "string" } } }),
            }),
            "read_file" => Some(ToolSpec {
                name: "read_file".into(),
                description: "Read a UTF-8 text file of the project workspace.".into(),
                parameters: json!({ "type": "object", "required": ["path"], "properties": {
                    "path": { "type": "string", "description": "Path relative to the workspace" } } }),
            }),
            "list_files" => Some(ToolSpec {
                name: "list_files".into(),
                description: "List the files of the project workspace (or of a folder in it).".into(),
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
    pub fn ok(output: String) -> Self {
        Self {
            output,
            is_error: false,
            artifact: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
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

/// A tool of one of a tenant's MCP servers, as registered (its arguments' JSON Schema as
/// the server listed it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteTool {
    pub server: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub parameters: serde_json::Value,
}

impl RemoteTool {
    /// The name an agent's `tools` and `config.approvals` use: `mcp:<server>/<tool>`.
    pub fn canonical(&self) -> String {
        format!("mcp:{}/{}", self.server, self.name)
    }

    /// The function name the model sees, `mcp__<server>__<tool>`, in the characters and
    /// length that providers allow for function names.
    pub fn function(&self) -> String {
        function_name(&format!("mcp__{}__{}", self.server, self.name))
    }

    /// Whether an agent's tool entry (`mcp:<server>/<tool>`, `mcp:<server>/*`) names it.
    pub fn named_by(&self, entry: &str) -> bool {
        McpRef::parse(entry)
            .is_some_and(|r| r.server == self.server && (r.tool == "*" || r.tool == self.name))
    }
}

/// `raw` as a tool's function name: the characters providers and MCP clients allow
/// (letters, digits, `_`, `-`; any other becomes `_`), at most 64 of them.
pub fn function_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// An agent's tool entry that names an MCP tool: `mcp:<server>/<tool>` or
/// `mcp:<server>/*` (every tool of the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpRef<'a> {
    pub server: &'a str,
    pub tool: &'a str,
}

impl<'a> McpRef<'a> {
    pub fn parse(entry: &'a str) -> Option<Self> {
        let (server, tool) = entry.strip_prefix("mcp:")?.split_once('/')?;
        (!server.is_empty() && !tool.is_empty()).then_some(Self { server, tool })
    }
}

/// The tenants' MCP servers, as the runs see them.
#[async_trait]
pub trait RemoteTools: Send + Sync {
    /// The registered tools of the tenant's servers that `entries` (an agent's tools) name.
    async fn resolve(&self, tenant_id: &str, entries: &[String])
        -> Result<Vec<RemoteTool>, String>;
    /// Calls `tool` with `arguments`; a failure (the server down, slow, or refusing) is a
    /// tool error for the model, never raised.
    async fn call(
        &self,
        tenant_id: &str,
        tool: &RemoteTool,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> ToolOutcome;
}

/// The tools one run offers its model: the built-ins it names, on its project's workspace,
/// and the MCP tools it names.
pub struct Toolbox {
    builtin: Vec<ToolSpec>,
    workspace: Workspace,
    remote: Vec<RemoteTool>,
    client: Option<Arc<dyn RemoteTools>>,
    tenant_id: String,
}

impl Toolbox {
    /// The tools `entries` name, for a run of `tenant_id` on `project_id`. Fails only when
    /// the tenant's MCP tools cannot be read.
    pub async fn open(
        workspaces: &dyn Workspaces,
        remote: &Arc<dyn RemoteTools>,
        tenant_id: &str,
        project_id: &str,
        entries: &[String],
    ) -> Result<Self, String> {
        let builtin = specs(entries);
        let workspace = if builtin.is_empty() {
            Workspace::new(Err("this run has no workspace tools".into()))
        } else {
            Workspace::new(workspaces.open(tenant_id, project_id).await)
        };
        let wants_remote = entries.iter().any(|e| McpRef::parse(e).is_some());
        let tools = if wants_remote {
            remote.resolve(tenant_id, entries).await?
        } else {
            Vec::new()
        };
        Ok(Self {
            builtin,
            workspace,
            remote: tools,
            client: wants_remote.then(|| remote.clone()),
            tenant_id: tenant_id.to_string(),
        })
    }

    /// What the model is offered.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = self.builtin.clone();
        specs.extend(self.remote.iter().map(|t| ToolSpec {
            name: t.function(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        }));
        specs
    }

    /// The name `config.approvals` knows a call of `function` by.
    pub fn canonical(&self, function: &str) -> String {
        self.remote_tool(function)
            .map_or_else(|| function.to_string(), RemoteTool::canonical)
    }

    fn remote_tool(&self, function: &str) -> Option<&RemoteTool> {
        self.remote.iter().find(|t| t.function() == function)
    }

    /// Runs `call`; failures are reported to the model as tool errors, never raised.
    pub async fn run(&self, call: &ToolCall) -> ToolOutcome {
        let Some(tool) = self.remote_tool(&call.name) else {
            return self.workspace.run(call).await;
        };
        let Some(client) = &self.client else {
            return ToolOutcome::error("MCP tools are not available to this run");
        };
        let text = if call.arguments.trim().is_empty() {
            "{}"
        } else {
            &call.arguments
        };
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(arguments)) => {
                client.call(&self.tenant_id, tool, arguments).await
            }
            Ok(_) => ToolOutcome::error("arguments must be a JSON object"),
            Err(e) => ToolOutcome::error(format!("arguments are not valid JSON: {e}")),
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
    fn mcp_tools_are_named_and_selected_by_their_references() {
        let tool = RemoteTool {
            server: "crm".into(),
            name: "find.contact/v2".into(),
            description: String::new(),
            parameters: json!({}),
        };
        assert_eq!(tool.canonical(), "mcp:crm/find.contact/v2");
        assert_eq!(tool.function(), "mcp__crm__find_contact_v2");
        assert!(tool.named_by("mcp:crm/*"));
        assert!(tool.named_by("mcp:crm/find.contact/v2"));
        assert!(!tool.named_by("mcp:crm/find"));
        assert!(!tool.named_by("mcp:other/*"));
        assert!(!tool.named_by("write_file"));
        assert_eq!(function_name(&"x".repeat(100)).len(), 64);
        let approvals = crate::agent::Approvals::Tools(vec!["mcp:crm/*".into()]);
        assert!(approvals.covers("mcp:crm/find.contact/v2"));
        assert!(!approvals.covers("mcp:crmx/find"));
        assert!(!approvals.covers("write_file"));
    }

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
