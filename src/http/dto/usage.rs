use serde::Serialize;
use utoipa::ToSchema;

use super::usd;
use crate::store::UsageRow;

/// LLM use in one day, by one agent, of one provider's model.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageLine {
    pub day: String,
    pub agent_id: String,
    pub provider: String,
    pub model: String,
    /// Runs with at least one step here.
    pub runs: i64,
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// In US dollars, by the configured prices.
    pub cost_usd: f64,
}

/// The sum of a report's lines.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct UsageTotal {
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
}

/// A tenant's LLM use over days `from` to `to` (both included, UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub tenant_id: String,
    pub from: String,
    pub to: String,
    pub total: UsageTotal,
    /// By day, agent, provider and model, in that order.
    pub lines: Vec<UsageLine>,
}

impl UsageReport {
    pub fn new(tenant_id: String, from: String, to: String, rows: Vec<UsageRow>) -> Self {
        let mut micros: i64 = 0;
        let mut total = UsageTotal::default();
        let lines = rows
            .into_iter()
            .map(|r| {
                total.steps += r.steps;
                total.prompt_tokens += r.prompt_tokens;
                total.completion_tokens += r.completion_tokens;
                total.total_tokens += r.total_tokens;
                micros += r.cost_micros;
                UsageLine {
                    day: r.day,
                    agent_id: r.agent_id,
                    provider: r.provider,
                    model: r.model,
                    runs: r.runs,
                    steps: r.steps,
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.completion_tokens,
                    total_tokens: r.total_tokens,
                    cost_usd: usd(r.cost_micros.max(0) as u64),
                }
            })
            .collect();
        total.cost_usd = usd(micros.max(0) as u64);
        Self {
            tenant_id,
            from,
            to,
            total,
            lines,
        }
    }
}
