//! Agents: what a run or a chat reply is made from, and the one rule that turns an agent
//! (with its tenant's settings and the server's defaults) into a run's budget, providers
//! and model.

use serde::{Deserialize, Serialize};

use crate::run::RunSpec;
use crate::tenant::TenantSettings;

/// How far an agent may go on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    /// One step, no tools.
    Low,
    /// Eight steps.
    #[default]
    Medium,
    /// Thirty-two steps.
    High,
}

impl Autonomy {
    pub fn parse(level: &str) -> Option<Self> {
        Some(match level {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            _ => return None,
        })
    }

    /// Steps allowed when the agent sets no `maxSteps`.
    pub fn step_budget(self) -> u32 {
        match self {
            Self::Low => 1,
            Self::Medium => 8,
            Self::High => 32,
        }
    }

    /// Whether the agent's tools are offered to the model.
    pub fn uses_tools(self) -> bool {
        self != Self::Low
    }
}

/// How an agent behaves; camelCase both ways, as the SDK sends it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub autonomy_level: Autonomy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The tools whose calls wait for a human's yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
    /// How long a call waits for its answer before the run fails (`approval_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_seconds: Option<u64>,
    /// The most LLM tokens one run may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_run: Option<u64>,
    /// The most one run may cost, in millionths of a US dollar (the API speaks dollars:
    /// `maxCostPerRun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_per_run_micros: Option<u64>,
}

/// Which tool calls wait for a human's yes: `"all"`, or the tools named (an MCP server's
/// every tool as `mcp:<server>/*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Approvals {
    Every(Every),
    Tools(Vec<String>),
}

/// `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    All,
}

impl Approvals {
    /// Whether a call of `tool` waits for a human's yes.
    pub fn covers(&self, tool: &str) -> bool {
        match self {
            Self::Every(Every::All) => true,
            Self::Tools(tools) => tools.iter().any(|t| {
                t == tool
                    || t.strip_suffix('*')
                        .is_some_and(|server| t.starts_with("mcp:") && tool.starts_with(server))
            }),
        }
    }
}

/// How long a call waits for its human when the agent does not say: a day.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 86_400;

#[derive(Debug, Clone, Serialize)]
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

/// What the server falls back on when neither the agent nor its tenant says.
#[derive(Debug, Clone)]
pub struct RunDefaults {
    /// The server's default provider.
    pub provider: String,
    /// A run's time limit.
    pub timeout_secs: u64,
}

/// The providers to try, in order: the agent's (else the tenant's, else the server's
/// default), then the agent's fallbacks. A chat session without an agent has no fallbacks.
pub fn providers(agent: Option<&Agent>, tenant: &TenantSettings, default: &str) -> Vec<String> {
    let first = agent
        .and_then(|a| a.provider.clone())
        .or(tenant.default_provider.clone())
        .unwrap_or_else(|| default.to_string());
    let mut chain = vec![first];
    for fallback in agent.map(|a| a.fallbacks.as_slice()).unwrap_or_default() {
        if !chain.contains(fallback) {
            chain.push(fallback.clone());
        }
    }
    chain
}

/// The model to ask for: the agent's, else the tenant's default (else the provider's own).
pub fn model(agent: Option<&Agent>, tenant: &TenantSettings) -> Option<String> {
    agent
        .and_then(|a| a.model.clone())
        .or(tenant.default_model.clone())
}

impl RunSpec {
    /// How a run of `agent` is carried out, for a tenant with `tenant` settings.
    pub fn for_agent(agent: &Agent, tenant: &TenantSettings, defaults: &RunDefaults) -> Self {
        let autonomy = agent.config.autonomy_level;
        Self {
            system_prompt: agent.system_prompt.clone(),
            providers: providers(Some(agent), tenant, &defaults.provider),
            model: model(Some(agent), tenant),
            tools: if autonomy.uses_tools() {
                agent.tools.clone()
            } else {
                Vec::new()
            },
            max_steps: agent
                .config
                .max_steps
                .unwrap_or_else(|| autonomy.step_budget()),
            temperature: agent.config.temperature,
            timeout_secs: agent
                .config
                .timeout_seconds
                .unwrap_or(defaults.timeout_secs),
            approvals: agent.config.approvals.clone(),
            approval_timeout_secs: agent
                .config
                .approval_timeout_seconds
                .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_SECS),
            budget: crate::run::Budget {
                tokens: agent.config.max_tokens_per_run,
                cost_micros: agent.config.max_cost_per_run_micros,
            },
            chat: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(autonomy: Autonomy) -> Agent {
        Agent {
            id: "agt_1".into(),
            tenant_id: "ten_1".into(),
            project_id: None,
            name: "a".into(),
            description: None,
            system_prompt: Some("be brief".into()),
            provider: None,
            model: None,
            fallbacks: vec!["backup".into(), "backup".into()],
            tools: vec!["write_file".into()],
            config: AgentConfig {
                autonomy_level: autonomy,
                ..AgentConfig::default()
            },
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn autonomy_sets_the_budget_and_the_tools_unless_the_agent_says() {
        let defaults = RunDefaults {
            provider: "offline".into(),
            timeout_secs: 600,
        };
        let tenant = TenantSettings::default();
        let low = RunSpec::for_agent(&agent(Autonomy::Low), &tenant, &defaults);
        assert_eq!((low.max_steps, low.tools.len()), (1, 0));
        let high = RunSpec::for_agent(&agent(Autonomy::High), &tenant, &defaults);
        assert_eq!((high.max_steps, high.tools.len()), (32, 1));
        let mut capped = agent(Autonomy::High);
        capped.config.max_steps = Some(3);
        capped.config.timeout_seconds = Some(5);
        let spec = RunSpec::for_agent(&capped, &tenant, &defaults);
        assert_eq!((spec.max_steps, spec.timeout_secs), (3, 5));
        assert_eq!(spec.providers, ["offline", "backup"]);
    }

    #[test]
    fn the_provider_is_the_agents_then_the_tenants_then_the_servers() {
        let mut tenant = TenantSettings::default();
        assert_eq!(providers(None, &tenant, "offline"), ["offline"]);
        tenant.default_provider = Some("team".into());
        tenant.default_model = Some("team-model".into());
        assert_eq!(providers(None, &tenant, "offline"), ["team"]);
        let mut own = agent(Autonomy::Medium);
        own.provider = Some("backup".into());
        own.model = Some("mine".into());
        assert_eq!(providers(Some(&own), &tenant, "offline"), ["backup"]);
        assert_eq!(model(Some(&own), &tenant).as_deref(), Some("mine"));
        assert_eq!(model(None, &tenant).as_deref(), Some("team-model"));
    }
}
