//! LLM providers: the only module that imports async-openai. `[providers.<name>]` in the
//! configuration names OpenAI-compatible endpoints; `offline` is always there.

mod offline;
mod openai;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dgidgi_actors::provider::{LlmProvider, Price, ProviderSet};

use crate::config::{Config, ConfigError};
pub use offline::{OfflineProvider, OFFLINE};
pub use openai::OpenAiProvider;

/// The providers of this process, by name.
pub struct Providers {
    by_name: HashMap<String, Arc<dyn LlmProvider>>,
    default: String,
    /// By provider, then model.
    prices: HashMap<String, HashMap<String, Price>>,
}

impl Providers {
    /// Builds every configured provider. A provider whose key variable is named but unset
    /// is still built (keyless endpoints such as a local vLLM exist), with a warning.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut by_name: HashMap<String, Arc<dyn LlmProvider>> = HashMap::new();
        by_name.insert(OFFLINE.into(), Arc::new(OfflineProvider::default()));
        let mut keyed = Vec::new();
        for (name, provider) in &config.providers {
            let key = |field: &str| format!("providers.{name}.{field}");
            match provider.kind.as_str() {
                "openai" => {
                    let base_url = provider
                        .base_url
                        .clone()
                        .unwrap_or_else(|| "https://api.openai.com/v1".into());
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        return Err(ConfigError(format!(
                            "{}: must be an http(s) URL",
                            key("base_url")
                        )));
                    }
                    let api_key = match &provider.api_key_env {
                        Some(var) => match std::env::var(var) {
                            Ok(value) if !value.is_empty() => {
                                keyed.push(name.clone());
                                value
                            }
                            _ => {
                                tracing::warn!(provider = %name, variable = %var, "the API key variable is not set; calling without a key");
                                String::new()
                            }
                        },
                        None => String::new(),
                    };
                    let model = provider.model.clone().ok_or_else(|| {
                        ConfigError(format!("{}: a default model is required", key("model")))
                    })?;
                    by_name.insert(
                        name.clone(),
                        Arc::new(OpenAiProvider::new(&base_url, &api_key, &model)),
                    );
                }
                "offline" => {
                    let token_delay =
                        std::time::Duration::from_millis(provider.token_delay_ms.unwrap_or(0));
                    let tool_calls = provider.tool_calls.unwrap_or(false);
                    by_name.insert(
                        name.clone(),
                        Arc::new(OfflineProvider {
                            token_delay,
                            tool_calls,
                        }),
                    );
                }
                other => {
                    return Err(ConfigError(format!(
                        "{}: unknown kind '{other}' (openai or offline)",
                        key("kind")
                    )))
                }
            }
        }
        let default = match config.llm.default_provider.as_str() {
            "" => keyed
                .into_iter()
                .min()
                .unwrap_or_else(|| OFFLINE.to_string()),
            named if by_name.contains_key(named) => named.to_string(),
            named => {
                return Err(ConfigError(format!(
                    "llm.default_provider: no provider named '{named}'"
                )))
            }
        };
        let mut prices: HashMap<String, HashMap<String, Price>> = HashMap::new();
        for (name, provider) in &config.providers {
            for (i, price) in provider.prices.iter().enumerate() {
                let valid = |v: f64| v.is_finite() && v >= 0.0;
                if !valid(price.input_per_million) || !valid(price.output_per_million) {
                    return Err(ConfigError(format!(
                        "providers.{name}.prices[{i}]: prices must be finite and not negative"
                    )));
                }
                prices.entry(name.clone()).or_default().insert(
                    price.model.clone(),
                    Price {
                        input_per_million: price.input_per_million,
                        output_per_million: price.output_per_million,
                    },
                );
            }
        }
        tracing::info!(default = %default, providers = by_name.len(), "LLM providers ready");
        Ok(Self {
            by_name,
            default,
            prices,
        })
    }

    /// Adds (or replaces) provider `name`; tests use it to bring their own.
    pub fn with(mut self, name: &str, provider: Arc<dyn LlmProvider>) -> Self {
        self.by_name.insert(name.to_string(), provider);
        self
    }
}

impl ProviderSet for Providers {
    fn get(&self, name: &str) -> Option<Arc<dyn LlmProvider>> {
        self.by_name.get(name).cloned()
    }

    fn default_name(&self) -> &str {
        &self.default
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    fn price(&self, provider: &str, model: Option<&str>) -> Option<Price> {
        let prices = self.prices.get(provider)?;
        let model = match model {
            Some(model) => model.to_string(),
            None => self.by_name.get(provider)?.default_model().to_string(),
        };
        prices.get(&model).copied()
    }
}

/// The retry, stall and limit settings of `[llm]` and `[runs]`.
pub fn run_settings(config: &Config) -> dgidgi_actors::run::RunSettings {
    dgidgi_actors::run::RunSettings {
        max_retries: config.llm.max_retries,
        retry_base: Duration::from_millis(config.llm.retry_base_ms),
        idle_timeout: Duration::from_millis(config.llm.idle_timeout_ms),
        start_timeout: Duration::from_millis(config.llm.request_timeout_ms),
        flush_every: Duration::from_millis(config.llm.flush_ms),
        flush_batch: config.llm.flush_batch,
        store_retry: Duration::from_secs(config.runs.store_retry_secs),
        max_step_output: config.llm.max_step_output_bytes,
        max_tool_arguments: config.llm.max_tool_arguments_bytes,
        default_timeout_secs: config.runs.default_timeout_secs,
        max_queued_per_tenant: config.runs.max_queued_per_tenant,
        max_tokens_per_step: config.llm.max_tokens_per_step,
    }
}
