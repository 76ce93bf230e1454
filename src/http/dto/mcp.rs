//! MCP servers and their tools.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store;

/// A tenant's MCP server as the API shows it: the names of the headers sent to it, never
/// their values.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpServer {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub url: String,
    pub header_names: Vec<String>,
    /// How many tools it listed last.
    pub tool_count: usize,
    pub tools_listed_at: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<store::McpServer> for McpServer {
    fn from(s: store::McpServer) -> Self {
        Self {
            id: s.id,
            tenant_id: s.tenant_id,
            name: s.name,
            url: s.url,
            header_names: s.header_names,
            tool_count: s.tools.len(),
            tools_listed_at: s.tools_listed_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A tool an MCP server listed, and how an agent names it.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpTool {
    /// The server's name for it.
    pub name: String,
    /// What an agent's `tools` (and `config.approvals`) say to use it: `mcp:<server>/<tool>`.
    pub reference: String,
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: serde_json::Value,
}

impl From<dgidgi_actors::tools::RemoteTool> for McpTool {
    fn from(t: dgidgi_actors::tools::RemoteTool) -> Self {
        Self {
            reference: t.canonical(),
            name: t.name,
            description: t.description,
            input_schema: t.parameters,
        }
    }
}
