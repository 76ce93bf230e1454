//! Tenants: the domain (plan, settings) and the `TenantActor` that owns each tenant's live
//! state, reached through the cheap-clone [`Tenants`] handle.
//!
//! - this file: tenants, their settings and the errors;
//! - `actor`: the `TenantActor` (settings, plan, run admission) and the handle.

mod actor;

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::registry;
use crate::store::StoreFailure;

pub use actor::{Admission, AdmitRun, PlanCaps, ReleaseRun, TenantActor, Tenants};

/// A tenant: an organisation whose data no other tenant ever sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// The plan tier; it selects rate limits and feature gates.
    pub plan: String,
    pub settings: TenantSettings,
    pub created_at: String,
    pub updated_at: String,
}

/// What a tenant may change about itself with `PATCH /tenants/:id/settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The most LLM tokens the tenant's runs may use in a calendar month (UTC); none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_token_budget: Option<u64>,
    /// The most the tenant's runs may cost in a calendar month (UTC), in millionths of a
    /// US dollar, by the configured prices; none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost_budget_micros: Option<u64>,
}

impl TenantSettings {
    /// The tenant's monthly budget.
    pub fn monthly_budget(&self) -> crate::run::Budget {
        crate::run::Budget {
            tokens: self.monthly_token_budget,
            cost_micros: self.monthly_cost_budget_micros,
        }
    }
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            display_name: None,
            timezone: "UTC".into(),
            locale: "en-US".into(),
            default_provider: None,
            default_model: None,
            max_concurrent_runs: 4,
            data_retention_days: 90,
            features: BTreeMap::new(),
            monthly_token_budget: None,
            monthly_cost_budget_micros: None,
        }
    }
}

/// A partial update of [`TenantSettings`]: `None` leaves a field as it is; for the optional
/// fields `Some(None)` clears it. `features` entries are merged, a `None` value removes one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantSettingsPatch {
    pub display_name: Option<Option<String>>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub default_provider: Option<Option<String>>,
    pub default_model: Option<Option<String>>,
    pub max_concurrent_runs: Option<u32>,
    pub data_retention_days: Option<u32>,
    pub features: BTreeMap<String, Option<bool>>,
    pub monthly_token_budget: Option<Option<u64>>,
    pub monthly_cost_budget_micros: Option<Option<u64>>,
}

impl TenantSettings {
    /// The settings with `patch` applied.
    pub fn patched(&self, patch: TenantSettingsPatch) -> Self {
        let mut next = self.clone();
        if let Some(v) = patch.display_name {
            next.display_name = v;
        }
        if let Some(v) = patch.timezone {
            next.timezone = v;
        }
        if let Some(v) = patch.locale {
            next.locale = v;
        }
        if let Some(v) = patch.default_provider {
            next.default_provider = v;
        }
        if let Some(v) = patch.default_model {
            next.default_model = v;
        }
        if let Some(v) = patch.max_concurrent_runs {
            next.max_concurrent_runs = v;
        }
        if let Some(v) = patch.data_retention_days {
            next.data_retention_days = v;
        }
        if let Some(v) = patch.monthly_token_budget {
            next.monthly_token_budget = v;
        }
        if let Some(v) = patch.monthly_cost_budget_micros {
            next.monthly_cost_budget_micros = v;
        }
        for (flag, value) in patch.features {
            match value {
                Some(on) => next.features.insert(flag, on),
                None => next.features.remove(&flag),
            };
        }
        next
    }
}

/// Why a tenant message failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("tenant not found")]
    NotFound,
    /// A change the tenant's plan does not allow (more concurrent runs than it includes).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The store failed (an outage among them: `StoreFailure::unavailable`).
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// The actor could not take the message (stopped, still loading, mailbox full).
    #[error("{0}")]
    Unavailable(String),
}

impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// Read the tenant's live state.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Tenant, Error>")]
pub struct GetTenant;

/// Change the tenant's plan and/or settings; persisted before it is answered.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Tenant, Error>")]
pub struct UpdateTenant {
    pub plan: Option<String>,
    pub settings: TenantSettingsPatch,
}

#[cfg(test)]
mod tests;
