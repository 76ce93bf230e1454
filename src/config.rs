//! Configuration: `config/default.toml` (built in), then the file named in `DGIDGI_CONFIG`,
//! then `DGIDGI__SECTION__KEY` environment variables. Unknown keys and bad values stop
//! start-up with a message that names the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// The defaults, compiled in so the binary runs from any folder.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub actors: ActorsConfig,
    pub rate_limit: RateLimitConfig,
    /// What each plan allows (`[plans.<name>]`); `platform` is the operator's.
    pub plans: BTreeMap<String, PlanConfig>,
    pub compliance: ComplianceConfig,
    pub node: NodeConfig,
    /// The regions of the deployment by id (`[regions.<id>]`).
    pub regions: BTreeMap<String, RegionConfig>,
    pub storage: StorageConfig,
    pub llm: LlmConfig,
    /// OpenAI-compatible endpoints by name (`[providers.<name>]`); `offline` is built in.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    pub runs: RunsConfig,
    pub cluster: ClusterConfig,
    pub streams: StreamsConfig,
    pub chat: ChatConfig,
    pub webhooks: WebhooksConfig,
    pub outbound: OutboundConfig,
    pub secrets: SecretsConfig,
    pub mcp: McpConfig,
}

/// Calls to tenants' MCP servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The longest a tool call may take (connecting included); then it fails for the model.
    pub call_timeout_secs: u64,
    /// The longest listing a server's tools may take, at registration and refresh.
    pub list_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub retry_schedule_secs: Vec<u64>,
    pub disable_after_failures: u32,
    /// ... that have gone on for at least this long.
    pub disable_after_secs: u64,
    pub timeout_secs: u64,
    pub poll_ms: u64,
    pub rotation_window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    pub allow_private_targets: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    pub key: String,
    /// Keys `key` replaced: values sealed with them open, and are sealed again at start-up.
    pub previous_keys: Vec<String>,
    /// Where unconfigured secrets are kept; empty: `dgidgi.keys` beside an SQLite database.
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub max_queue: usize,
    pub idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub default_provider: String,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub flush_ms: u64,
    pub flush_batch: usize,
    pub max_step_output_bytes: usize,
    pub max_tool_arguments_bytes: usize,
    /// The most tokens one step's answer may have when a budget applies to the run.
    pub max_tokens_per_step: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (any OpenAI-compatible endpoint) or `offline`.
    pub kind: String,
    pub base_url: Option<String>,
    /// The name of the environment variable that holds the key (never the key itself).
    pub api_key_env: Option<String>,
    pub model: Option<String>,
    /// `offline` only: a pause before each token, in milliseconds (benchmarks and demos).
    pub token_delay_ms: Option<u64>,
    /// `offline` only: an agent's first step calls `write_file` (demos of tools).
    pub tool_calls: Option<bool>,
    /// What each model costs (cost attribution and cost budgets); a model not listed is
    /// counted in tokens only.
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
}

/// A model's price: US dollars per million tokens, prompt (input) and answer (output).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    pub default_timeout_secs: u64,
    pub max_wait_secs: u64,
    /// Runs of one tenant that may wait for a slot; more executes get 429.
    pub max_queued_per_tenant: u32,
    /// How long a run's writes are retried through a database outage.
    pub store_retry_secs: u64,
}

/// Several nodes on one database: heartbeats and run leases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often a node writes its heartbeat and renews its runs' leases.
    pub heartbeat_secs: u64,
    /// How long a run's lease lasts without renewal before another node may take it.
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub heartbeat_secs: u64,
    /// Open event streams at once, per API key and per tenant; more get 429.
    pub max_per_key: usize,
    pub max_per_tenant: usize,
    /// A subscriber that has not read for this long is disconnected.
    pub stall_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    /// The longest wait for a connection before a request gets 503.
    pub acquire_timeout_secs: u64,
    /// On SQLite, the free space below which the node is not ready.
    pub min_free_mb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_secret: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorsConfig {
    pub arbiters: usize,
    pub tenant_idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub window_secs: u64,
}

/// One plan: its place among the others, its limits and the features it includes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub tier: u32,
    pub max_concurrent_runs: u32,
    pub secondary_region: bool,
    pub byos: bool,
    pub data_residency: bool,
    pub compliance_levels: Vec<String>,
    pub rate_limit: PlanLimits,
    /// A new tenant's monthly LLM budgets on this plan (its settings may change them).
    #[serde(default)]
    pub monthly_token_budget: Option<u64>,
    #[serde(default)]
    pub monthly_cost_budget_usd: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    pub levels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub region: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub name: String,
    pub location: String,
    pub available: bool,
    /// Jurisdictions whose data may live here (`eu`, `us`).
    pub residency: Vec<String>,
    /// Compliance levels the region is certified for.
    pub compliance: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub platform_root: String,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    pub per_key: u32,
    pub per_tenant: u32,
}

/// The plan whose limits apply to platform-operator keys.
pub const OPERATOR_PLAN: &str = "platform";

impl Config {
    /// Loads the layered configuration from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = std::env::var_os("DGIDGI_CONFIG") {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "DGIDGI_CONFIG names {}, which is not a readable file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("DGIDGI__").split("__")))
    }

    /// Extracts and checks a configuration from any figment (tests build their own).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(ConfigError::from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults alone, for tests and tools.
    pub fn defaults() -> Figment {
        Figment::from(Toml::string(DEFAULTS))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return bad("database.url", "must start with sqlite: or postgres://");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes", "must be at least 1024");
        }
        if self.auth.jwt_ttl_secs == 0 {
            return bad("auth.jwt_ttl_secs", "must be at least 1");
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            return bad("auth.jwt_secret", "must be empty or at least 32 bytes");
        }
        if self.actors.arbiters == 0 {
            return bad("actors.arbiters", "must be at least 1");
        }
        if self.rate_limit.window_secs == 0 {
            return bad("rate_limit.window_secs", "must be at least 1");
        }
        if self.llm.idle_timeout_ms == 0 || self.llm.flush_batch == 0 {
            return bad("llm", "idle_timeout_ms and flush_batch must be at least 1");
        }
        if self.webhooks.timeout_secs == 0
            || self.webhooks.poll_ms == 0
            || self.webhooks.disable_after_failures == 0
        {
            return bad(
                "webhooks",
                "timeout_secs, poll_ms and disable_after_failures must be at least 1",
            );
        }
        if self.chat.max_queue == 0 {
            return bad("chat.max_queue", "must be at least 1");
        }
        if self.streams.heartbeat_secs == 0 {
            return bad("streams.heartbeat_secs", "must be at least 1");
        }
        if !self.plans.contains_key(OPERATOR_PLAN) {
            return bad("plans.platform", "is required (operator keys use it)");
        }
        let levels = &self.compliance.levels;
        for (name, plan) in &self.plans {
            let key = format!("plans.{name}");
            if plan.rate_limit.per_key == 0 || plan.rate_limit.per_tenant == 0 {
                return bad(&format!("{key}.rate_limit"), "limits must be at least 1");
            }
            if plan.max_concurrent_runs == 0 {
                return bad(&format!("{key}.max_concurrent_runs"), "must be at least 1");
            }
            if let Some(level) = plan.compliance_levels.iter().find(|l| !levels.contains(l)) {
                return bad(
                    &format!("{key}.compliance_levels"),
                    &format!("'{level}' is not in compliance.levels"),
                );
            }
        }
        for (id, region) in &self.regions {
            if let Some(level) = region.compliance.iter().find(|l| !levels.contains(l)) {
                return bad(
                    &format!("regions.{id}.compliance"),
                    &format!("'{level}' is not in compliance.levels"),
                );
            }
        }
        if !self.regions.contains_key(&self.node.region) {
            return bad("node.region", "must be one of the configured [regions.*]");
        }
        if self.storage.timeout_secs == 0 {
            return bad("storage.timeout_secs", "must be at least 1");
        }
        Ok(())
    }

    /// The plan called `name`; the operator's for an unknown name (which validation of
    /// tenant updates prevents).
    pub fn plan(&self, name: &str) -> &PlanConfig {
        self.plans
            .get(name)
            .or_else(|| self.plans.get(OPERATOR_PLAN))
            .expect("config validated")
    }

    /// The lowest-tier tenant plan for which `allows` holds.
    pub fn lowest_plan(&self, allows: impl Fn(&PlanConfig) -> bool) -> Option<&str> {
        self.plans
            .iter()
            .filter(|(name, plan)| name.as_str() != OPERATOR_PLAN && allows(plan))
            .min_by_key(|(_, plan)| plan.tier)
            .map(|(name, _)| name.as_str())
    }

    /// This node's id: `node.id`, else the host name.
    pub fn node_id(&self) -> String {
        if !self.node.id.is_empty() {
            return self.node.id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_string())
    }

    /// The plans a tenant may be given.
    pub fn tenant_plans(&self) -> impl Iterator<Item = &str> {
        self.plans
            .keys()
            .map(String::as_str)
            .filter(|p| *p != OPERATOR_PLAN)
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// One line per problem, each starting with the key as the docs spell it
    /// (`server.port`), whatever case the environment variable used.
    fn from_figment(errors: figment::Error) -> Self {
        let lines: Vec<String> = errors
            .into_iter()
            .map(|e| {
                let key = e.path.join(".").to_lowercase();
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| format!(" (from {})", m.name))
                    .unwrap_or_default();
                format!("{key}: {}{source}", e.kind)
            })
            .collect();
        ConfigError(lines.join("; "))
    }
}
