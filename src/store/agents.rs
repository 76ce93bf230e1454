//! Agents: what a run is made from (instructions, provider, model, tools, autonomy).

pub use dgidgi_actors::agent::{Agent, AgentConfig};

use super::read::Record;
use super::writer::Stmt;
use super::{json_column, to_json, Page, Paged, Result, Store};

const COLUMNS: &str =
    "id, tenant_id, project_id, name, description, system_prompt, provider, model, \
                       fallbacks, tools, config, created_at, updated_at";

fn agent_from_row(row: &Record) -> Result<Agent> {
    Ok(Agent {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        project_id: row.get("project_id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        system_prompt: row.get("system_prompt")?,
        provider: row.get("provider")?,
        model: row.get("model")?,
        fallbacks: json_column(row, "fallbacks")?,
        tools: json_column(row, "tools")?,
        config: json_column(row, "config")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

impl Store {
    pub async fn create_agent(&self, agent: &Agent) -> Result<()> {
        let sql = format!("INSERT INTO agents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)");
        self.write_one(agent_row(sql, agent)).await?;
        Ok(())
    }

    /// Replaces every field of the stored agent (of the same tenant) with `agent`'s.
    pub async fn save_agent(&self, agent: &Agent) -> Result<bool> {
        let sql = "UPDATE agents SET project_id = $3, name = $4, description = $5, system_prompt = $6, \
                   provider = $7, model = $8, fallbacks = $9, tools = $10, config = $11, created_at = $12, \
                   updated_at = $13 WHERE id = $1 AND tenant_id = $2";
        Ok(self.write_one(agent_row(sql, agent)).await?.changed == 1)
    }

    pub async fn get_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>> {
        self.tenant_row(
            &format!("SELECT {COLUMNS} FROM agents"),
            tenant_id,
            id,
            agent_from_row,
        )
        .await
    }

    pub async fn list_agents(&self, tenant_id: &str, page: &Page) -> Result<Paged<Agent>> {
        let select = format!("SELECT {COLUMNS} FROM agents");
        self.page_where(
            &select,
            "tenant_id = $1",
            &[tenant_id],
            page,
            agent_from_row,
            |a| &a.id,
        )
        .await
    }

    pub async fn delete_agent(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let delete = Stmt::new("DELETE FROM agents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id);
        Ok(self.write_one(delete).await?.changed == 1)
    }
}

/// `sql` with an agent's columns bound in the order of `COLUMNS`.
fn agent_row(sql: impl Into<std::borrow::Cow<'static, str>>, agent: &Agent) -> Stmt {
    Stmt::new(sql)
        .bind(&agent.id)
        .bind(&agent.tenant_id)
        .bind(&agent.project_id)
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(&agent.system_prompt)
        .bind(&agent.provider)
        .bind(&agent.model)
        .bind(to_json(&agent.fallbacks))
        .bind(to_json(&agent.tools))
        .bind(to_json(&agent.config))
        .bind(&agent.created_at)
        .bind(&agent.updated_at)
}
