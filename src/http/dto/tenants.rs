use std::collections::BTreeMap;

use dgidgi_actors as domain;
use serde::Serialize;
use utoipa::ToSchema;

/// A tenant: an organisation whose data no other tenant ever sees.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// The plan tier; it selects rate limits and feature gates.
    pub plan: String,
    pub settings: TenantSettings,
    pub created_at: String,
    pub updated_at: String,
}

impl From<domain::Tenant> for Tenant {
    fn from(t: domain::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            plan: t.plan,
            settings: t.settings.into(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// What a tenant may change about itself with `PATCH /tenants/:id/settings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSettings {
    /// A name for display, when it differs from the tenant's legal name.
    pub display_name: Option<String>,
    /// IANA time zone used when the tenant's UI shows times (`UTC`, `Europe/Paris`).
    pub timezone: String,
    /// BCP 47 language tag for generated text (`en-US`).
    pub locale: String,
    /// The provider agents use when they name none.
    pub default_provider: Option<String>,
    /// The model agents use when they name none.
    pub default_model: Option<String>,
    /// How many agent runs may run at once; the rest wait queued.
    pub max_concurrent_runs: u32,
    /// How long run and chat event logs are kept.
    pub data_retention_days: u32,
    /// Feature flags switched on or off for this tenant, on top of its plan's gates.
    pub features: BTreeMap<String, bool>,
    /// The most LLM tokens the tenant's runs may use per calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_token_budget: Option<u64>,
    /// The most the tenant's runs may cost per calendar month (UTC), in US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_cost_budget_usd: Option<f64>,
}

impl From<domain::TenantSettings> for TenantSettings {
    fn from(s: domain::TenantSettings) -> Self {
        Self {
            display_name: s.display_name,
            timezone: s.timezone,
            locale: s.locale,
            default_provider: s.default_provider,
            default_model: s.default_model,
            max_concurrent_runs: s.max_concurrent_runs,
            data_retention_days: s.data_retention_days,
            features: s.features,
            monthly_token_budget: s.monthly_token_budget,
            monthly_cost_budget_usd: s.monthly_cost_budget_micros.map(super::usd),
        }
    }
}
