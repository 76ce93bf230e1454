use dgidgi_actors as domain;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// How far an agent may go on its own.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    /// One step, no tools.
    Low,
    /// Eight steps.
    Medium,
    /// Thirty-two steps.
    High,
}

impl From<domain::agent::Autonomy> for Autonomy {
    fn from(a: domain::agent::Autonomy) -> Self {
        use domain::agent::Autonomy as A;
        match a {
            A::Low => Self::Low,
            A::Medium => Self::Medium,
            A::High => Self::High,
        }
    }
}

/// How an agent behaves; camelCase both ways, as the SDK sends it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub autonomy_level: Autonomy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The tools whose calls wait for a human's yes: `"all"` or a list of tool names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Value>,
    /// How long a call waits for its answer before the run fails (`approval_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_timeout_seconds: Option<u64>,
    /// The most LLM tokens one run may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_run: Option<u64>,
    /// The most one run may cost, in US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_per_run: Option<f64>,
}

impl From<domain::agent::AgentConfig> for AgentConfig {
    fn from(c: domain::agent::AgentConfig) -> Self {
        Self {
            autonomy_level: c.autonomy_level.into(),
            max_steps: c.max_steps,
            temperature: c.temperature,
            timeout_seconds: c.timeout_seconds,
            approvals: c
                .approvals
                .map(|a| serde_json::to_value(a).expect("approvals serialize")),
            approval_timeout_seconds: c.approval_timeout_seconds,
            max_tokens_per_run: c.max_tokens_per_run,
            max_cost_per_run: c.max_cost_per_run_micros.map(super::usd),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    /// The provider by name; `None` uses the tenant's or the server's default.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Providers tried in order when the first one fails.
    pub fallbacks: Vec<String>,
    pub tools: Vec<String>,
    pub config: AgentConfig,
    pub created_at: String,
    pub updated_at: String,
}

impl From<domain::agent::Agent> for Agent {
    fn from(a: domain::agent::Agent) -> Self {
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            project_id: a.project_id,
            name: a.name,
            description: a.description,
            system_prompt: a.system_prompt,
            provider: a.provider,
            model: a.model,
            fallbacks: a.fallbacks,
            tools: a.tools,
            config: a.config.into(),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}
