//! The client side: tenants' MCP servers (Streamable HTTP), reached through `rmcp` over the
//! outbound-guarded HTTP client. Each listing and each tool call opens its own connection
//! (initialize, the request, close), so nothing about a server lives in one node's memory.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use dgidgi_actors::tools::{McpRef, RemoteTool, RemoteTools, ToolOutcome};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::config::Config;
use crate::sealing::Sealer;
use crate::store::{McpServer, Store};

/// The most text of one tool result handed to the model.
const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Connects to tenants' MCP servers: lists their tools, calls them.
#[derive(Clone)]
pub struct McpClient {
    store: Store,
    sealer: Sealer,
    http: reqwest::Client,
    list_timeout: Duration,
    call_timeout: Duration,
}

impl McpClient {
    pub fn new(config: &Config, store: Store, sealer: Sealer) -> Self {
        let call_timeout = Duration::from_secs(config.mcp.call_timeout_secs.max(1));
        Self {
            store,
            sealer,
            http: crate::outbound::client(
                call_timeout,
                config.outbound.allow_private_targets,
                "dgidgi-mcp",
            ),
            list_timeout: Duration::from_secs(config.mcp.list_timeout_secs.max(1)),
            call_timeout,
        }
    }

    /// `headers` sealed for the tenant's row (`None` when there are none).
    pub fn seal_headers(
        &self,
        tenant_id: &str,
        headers: &BTreeMap<String, String>,
    ) -> Option<String> {
        (!headers.is_empty()).then(|| {
            self.sealer.seal_bound(
                &serde_json::to_string(headers).expect("strings serialize"),
                tenant_id,
            )
        })
    }

    /// The headers a server's row holds, opened.
    pub fn headers(&self, server: &McpServer) -> Result<BTreeMap<String, String>, String> {
        let Some(sealed) = &server.sealed_headers else {
            return Ok(BTreeMap::new());
        };
        let plain = self
            .sealer
            .open_bound(sealed, &server.tenant_id)
            .map_err(|_| "its stored headers cannot be opened with the current keys".to_string())?;
        serde_json::from_str(&plain).map_err(|e| format!("its stored headers are corrupt: {e}"))
    }

    /// The tools the server at `url` lists now, under the server's `name`.
    pub async fn list(
        &self,
        name: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<Vec<RemoteTool>, String> {
        let listed = tokio::time::timeout(self.list_timeout, async {
            let client = self.connect(url, headers).await?;
            let tools = client
                .list_all_tools()
                .await
                .map_err(|e| format!("tools/list failed: {e}"));
            close(client).await;
            tools
        })
        .await
        .map_err(|_| format!("no answer within {} s", self.list_timeout.as_secs()))??;
        Ok(listed
            .into_iter()
            .map(|tool| RemoteTool {
                server: name.to_string(),
                name: tool.name.to_string(),
                description: tool
                    .description
                    .map(|d| d.to_string())
                    .or(tool.title)
                    .unwrap_or_default(),
                parameters: Value::Object((*tool.input_schema).clone()),
            })
            .collect())
    }

    async fn connect(
        &self,
        url: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<RunningService<RoleClient, ()>, String> {
        let mut custom = HashMap::new();
        for (name, value) in headers {
            custom.insert(
                http::HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("header {name}: {e}"))?,
                http::HeaderValue::try_from(value.as_str())
                    .map_err(|_| format!("header {name}: not a valid value"))?,
            );
        }
        let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom);
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        ().serve(transport)
            .await
            .map_err(|e| format!("cannot connect: {}", describe(&e)))
    }

    async fn call_server(
        &self,
        server: &McpServer,
        tool: &RemoteTool,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<CallToolResult, String> {
        let headers = self.headers(server)?;
        let client = self.connect(&server.url, &headers).await?;
        let result = client
            .call_tool(CallToolRequestParams::new(tool.name.clone()).with_arguments(arguments))
            .await
            .map_err(|e| format!("the call failed: {}", describe(&e)));
        close(client).await;
        result
    }
}

/// Ends a connection (its session, when the server keeps one), without waiting long.
async fn close(client: RunningService<RoleClient, ()>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.cancel()).await;
}

/// An error and its causes, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

#[async_trait]
impl RemoteTools for McpClient {
    async fn resolve(
        &self,
        tenant_id: &str,
        entries: &[String],
    ) -> Result<Vec<RemoteTool>, String> {
        let mut names: Vec<&str> = entries
            .iter()
            .filter_map(|e| McpRef::parse(e))
            .map(|r| r.server)
            .collect();
        names.sort_unstable();
        names.dedup();
        let servers = self
            .store
            .mcp_servers_named(tenant_id, &names)
            .await
            .map_err(|e| e.to_string())?;
        let mut tools = Vec::new();
        for server in servers {
            tools.extend(
                server
                    .tools
                    .into_iter()
                    .filter(|t| entries.iter().any(|e| t.named_by(e))),
            );
        }
        Ok(tools)
    }

    async fn call(
        &self,
        tenant_id: &str,
        tool: &RemoteTool,
        arguments: serde_json::Map<String, Value>,
    ) -> ToolOutcome {
        let started = std::time::Instant::now();
        let server = match self
            .store
            .mcp_servers_named(tenant_id, &[tool.server.as_str()])
            .await
        {
            Ok(found) => match found.into_iter().next() {
                Some(server) => server,
                None => {
                    return ToolOutcome::error(format!(
                        "the MCP server '{}' is no longer registered",
                        tool.server
                    ))
                }
            },
            Err(e) => return ToolOutcome::error(format!("the MCP server cannot be read: {e}")),
        };
        let answer = tokio::time::timeout(
            self.call_timeout,
            self.call_server(&server, tool, arguments),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} s (mcp.call_timeout_secs)",
                self.call_timeout.as_secs()
            ))
        });
        let outcome = match answer {
            Ok(result) => outcome(result),
            Err(e) => ToolOutcome::error(format!(
                "MCP server '{}', tool '{}': {e}",
                tool.server, tool.name
            )),
        };
        let status = if outcome.is_error { "error" } else { "ok" };
        metrics::counter!("dgidgi_mcp_tool_calls_total", "status" => status).increment(1);
        metrics::histogram!("dgidgi_mcp_tool_call_seconds").record(started.elapsed().as_secs_f64());
        outcome
    }
}

/// A tool's result as text for the model: its text blocks, what its other blocks are
/// (images and audio by type and size, embedded resources with their text, links), and its
/// structured content as JSON when the text does not already say it.
fn outcome(result: CallToolResult) -> ToolOutcome {
    let mut parts = Vec::new();
    for block in &result.content {
        let block = serde_json::to_value(block).unwrap_or(Value::Null);
        let field = |name: &str| block[name].as_str().unwrap_or_default().to_string();
        parts.push(match block["type"].as_str().unwrap_or_default() {
            "text" => field("text"),
            kind @ ("image" | "audio") => format!(
                "[{kind} {}, {} bytes]",
                field("mimeType"),
                field("data").len() / 4 * 3
            ),
            "resource" => {
                let resource = &block["resource"];
                let uri = resource["uri"].as_str().unwrap_or_default();
                match resource["text"].as_str() {
                    Some(text) => format!("[resource {uri}]\n{text}"),
                    None => format!(
                        "[resource {uri}, {}, binary]",
                        resource["mimeType"].as_str().unwrap_or("no type")
                    ),
                }
            }
            "resource_link" => format!("[resource link {} ({})]", field("uri"), field("name")),
            _ => block.to_string(),
        });
    }
    if let Some(structured) = &result.structured_content {
        let json = structured.to_string();
        if !parts.iter().any(|p| p.trim() == json) {
            parts.push(json);
        }
    }
    let mut output = parts.join("\n");
    if output.len() > MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        let total = output.len();
        output.truncate(end);
        output.push_str(&format!("\n[truncated: {total} bytes in all]"));
    }
    ToolOutcome {
        output,
        is_error: result.is_error.unwrap_or(false),
        artifact: None,
    }
}
