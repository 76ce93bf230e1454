//! Tenants' MCP servers: where each is, the headers sent to it (sealed by the caller, bound
//! to the tenant), and the tools it listed last.

use serde::Serialize;

use super::read::Record;
use super::writer::Stmt;
use super::{json_column, to_json, Error, Page, Paged, Result, Store};
use crate::ids::{now_rfc3339, IdKind};
use dgidgi_actors::tools::RemoteTool;

#[derive(Debug, Clone, Serialize)]
pub struct McpServer {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub url: String,
    /// The headers, as a sealed JSON object; never shown.
    #[serde(skip)]
    pub sealed_headers: Option<String>,
    /// The names of the headers sent, to show.
    pub header_names: Vec<String>,
    pub tools: Vec<RemoteTool>,
    pub tools_listed_at: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A server to register, its tools already listed.
pub struct NewMcpServer {
    pub name: String,
    pub url: String,
    pub sealed_headers: Option<String>,
    pub header_names: Vec<String>,
    pub tools: Vec<RemoteTool>,
}

const COLUMNS: &str = "id, tenant_id, name, url, sealed_headers, header_names, tools, \
                       tools_listed_at, created_at, updated_at";

fn server_from_row(row: &Record) -> Result<McpServer> {
    Ok(McpServer {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        name: row.get("name")?,
        url: row.get("url")?,
        sealed_headers: row.get("sealed_headers")?,
        header_names: json_column(row, "header_names")?,
        tools: json_column(row, "tools")?,
        tools_listed_at: row.get("tools_listed_at")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

/// `sql` with a server's columns bound in the order of `COLUMNS`.
fn server_row(sql: &'static str, s: &McpServer) -> Stmt {
    Stmt::new(sql)
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.name)
        .bind(&s.url)
        .bind(&s.sealed_headers)
        .bind(to_json(&s.header_names))
        .bind(to_json(&s.tools))
        .bind(&s.tools_listed_at)
        .bind(&s.created_at)
        .bind(&s.updated_at)
}

impl Store {
    pub async fn create_mcp_server(&self, tenant_id: &str, new: NewMcpServer) -> Result<McpServer> {
        let now = now_rfc3339();
        let server = McpServer {
            id: IdKind::McpServer.new_id(),
            tenant_id: tenant_id.to_string(),
            name: new.name,
            url: new.url,
            sealed_headers: new.sealed_headers,
            header_names: new.header_names,
            tools: new.tools,
            tools_listed_at: now.clone(),
            created_at: now.clone(),
            updated_at: now,
        };
        let insert = server_row(
            "INSERT INTO mcp_servers (id, tenant_id, name, url, sealed_headers, header_names, tools, \
             tools_listed_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &server,
        );
        self.write_one(insert)
            .await
            .map_err(|e| e.conflict_as("an MCP server of this tenant already has this name"))?;
        Ok(server)
    }

    pub async fn get_mcp_server(&self, tenant_id: &str, id: &str) -> Result<Option<McpServer>> {
        self.tenant_row(
            &format!("SELECT {COLUMNS} FROM mcp_servers"),
            tenant_id,
            id,
            server_from_row,
        )
        .await
    }

    /// The tenant's servers called `names`.
    pub async fn mcp_servers_named(
        &self,
        tenant_id: &str,
        names: &[&str],
    ) -> Result<Vec<McpServer>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let places: Vec<String> = (2..names.len() + 2).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM mcp_servers WHERE tenant_id = $1 AND name IN ({})",
            places.join(", ")
        );
        let mut binds = vec![tenant_id.into()];
        binds.extend(names.iter().map(|n| (*n).into()));
        self.read(&sql, binds, server_from_row).await
    }

    pub async fn list_mcp_servers(&self, tenant_id: &str, page: &Page) -> Result<Paged<McpServer>> {
        let select = format!("SELECT {COLUMNS} FROM mcp_servers");
        self.page_where(
            &select,
            "tenant_id = $1",
            &[tenant_id],
            page,
            server_from_row,
            |s| &s.id,
        )
        .await
    }

    /// Writes `server` as changed (name, url, headers, tools), if it is still as it was
    /// when read (`seen`: its `updated_at` then); `Error::Gone` otherwise.
    pub async fn save_mcp_server(&self, server: &McpServer, seen: &str) -> Result<()> {
        let update = server_row(
            "UPDATE mcp_servers SET name = $3, url = $4, sealed_headers = $5, header_names = $6, \
             tools = $7, tools_listed_at = $8, updated_at = $10 \
             WHERE id = $1 AND tenant_id = $2 AND updated_at = $11",
            server,
        )
        .bind(seen)
        .or_gone();
        self.write_one(update)
            .await
            .map_err(|e| e.conflict_as("an MCP server of this tenant already has this name"))?;
        Ok(())
    }

    pub async fn delete_mcp_server(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let delete = Stmt::new("DELETE FROM mcp_servers WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .or_gone();
        match self.write_one(delete).await {
            Ok(_) => Ok(true),
            Err(Error::Gone) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every server's sealed headers, for resealing after a key rotation.
    pub async fn mcp_server_headers(&self) -> Result<Vec<(String, String, String)>> {
        self.read(
            "SELECT id, tenant_id, sealed_headers FROM mcp_servers WHERE sealed_headers IS NOT NULL",
            Vec::new(),
            |row| {
                Ok((
                    row.get("id")?,
                    row.get("tenant_id")?,
                    row.get("sealed_headers")?,
                ))
            },
        )
        .await
    }

    pub async fn set_mcp_server_headers(&self, id: &str, sealed: &str) -> Result<()> {
        let update = Stmt::new("UPDATE mcp_servers SET sealed_headers = $2 WHERE id = $1")
            .bind(id)
            .bind(sealed);
        self.write_one(update).await?;
        Ok(())
    }
}
