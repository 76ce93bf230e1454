//! Tenants: operators create and list them; a tenant key sees and configures its own.

use actix_web::{get, patch, post};
use std::collections::BTreeMap;

use actix_web::web::{Data, Path};
use dgidgi_actors::{Tenant, TenantSettings, TenantSettingsPatch, UpdateTenant};
use serde::{Deserialize, Serialize};

use super::dto;
use super::envelope::Reply;
use super::extract::{nullable, Json, ListQuery};
use super::{optional_text, require, text, ApiError, AppState};
use crate::auth::{generate_key, KeyType, Principal, TENANT_SCOPES};
use crate::ids::{now_rfc3339, IdKind};
use crate::store::NewApiKey;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    plan: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    tenant: dto::Tenant,
    /// The tenant's first key; its secret is shown here only.
    api_key: CreatedKey,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: dto::ApiKeyRecord,
    pub key: String,
}

#[utoipa::path(
    tag = "tenants",
    request_body = CreateTenant,
    responses((status = 201, body = crate::http::openapi::Envelope<CreatedTenant>, description = "Created, with its first API key (shown once); operators only"), crate::http::openapi::Errors)
)]
#[post("/tenants")]
pub async fn create_tenant(
    principal: Principal,
    state: Data<AppState>,
    body: Json<CreateTenant>,
) -> Result<Reply<CreatedTenant>, ApiError> {
    if !principal.is_operator() {
        return Err(ApiError::Forbidden(
            "Only platform operators can create tenants".into(),
        ));
    }
    let body = body.0;
    let name = text("name", &body.name, 1, 200)?;
    let plan = checked_plan(&state, body.plan.as_deref().unwrap_or("free"))?;
    let now = now_rfc3339();
    let on_plan = state.config.plan(&plan);
    let tenant = Tenant {
        id: IdKind::Tenant.new_id(),
        name,
        // As many runs at once as the plan allows (a tenant may lower it), and the plan's
        // monthly budgets, if it has any.
        settings: TenantSettings {
            max_concurrent_runs: on_plan.max_concurrent_runs,
            monthly_token_budget: on_plan.monthly_token_budget,
            monthly_cost_budget_micros: on_plan
                .monthly_cost_budget_usd
                .map(|usd| dollars("plans.monthly_cost_budget_usd", usd))
                .transpose()?,
            ..TenantSettings::default()
        },
        plan,
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let secret = generate_key(KeyType::Sdk);
    let first_key = NewApiKey {
        id: IdKind::ApiKey.new_id(),
        tenant_id: Some(tenant.id.clone()),
        name: "default".into(),
        key_type: KeyType::Sdk.as_str().into(),
        prefix: secret.prefix,
        hash: secret.hash,
        scopes: TENANT_SCOPES.iter().map(|s| s.to_string()).collect(),
        environment: "production".into(),
        expires_at: None,
        created_at: now,
    };
    let record = state.store.create_tenant(&tenant, &first_key).await?;
    Ok(Reply::created(CreatedTenant {
        tenant: tenant.into(),
        api_key: CreatedKey {
            record: record.into(),
            key: secret.secret,
        },
    })
    .carrying_secret())
}

#[utoipa::path(
    tag = "tenants",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Tenant>>), crate::http::openapi::Errors)
)]
#[get("/tenants")]
pub async fn list_tenants(
    principal: Principal,
    state: Data<AppState>,
    query: ListQuery,
) -> Result<Reply<Vec<dto::Tenant>>, ApiError> {
    require(&principal, "tenants:read")?;
    let page = state
        .store
        .list_tenants(principal.tenant_id.as_deref(), &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Tenant>), crate::http::openapi::Errors)
)]
#[get("/tenants/{id}")]
pub async fn get_tenant(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::Tenant>, ApiError> {
    require(&principal, "tenants:read")?;
    let tenant = visible_tenant(&principal, &state, &id).await?;
    Ok(Reply::ok(tenant))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    #[serde(default, deserialize_with = "nullable", alias = "displayName")]
    display_name: Option<Option<String>>,
    timezone: Option<String>,
    locale: Option<String>,
    #[serde(default, deserialize_with = "nullable", alias = "defaultProvider")]
    default_provider: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", alias = "defaultModel")]
    default_model: Option<Option<String>>,
    #[serde(alias = "maxConcurrentRuns")]
    max_concurrent_runs: Option<u32>,
    #[serde(alias = "dataRetentionDays")]
    data_retention_days: Option<u32>,
    #[serde(default)]
    features: BTreeMap<String, Option<bool>>,
    /// The most LLM tokens the tenant's runs may use per calendar month (UTC); null: no limit.
    #[serde(default, deserialize_with = "nullable", alias = "monthlyTokenBudget")]
    monthly_token_budget: Option<Option<u64>>,
    /// The most the tenant's runs may cost per calendar month (UTC), in US dollars, by the
    /// configured prices; null: no limit.
    #[serde(default, deserialize_with = "nullable", alias = "monthlyCostBudgetUsd")]
    monthly_cost_budget_usd: Option<Option<f64>>,
    /// Operators only.
    plan: Option<String>,
}

#[utoipa::path(
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = SettingsBody,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Tenant>), crate::http::openapi::Errors)
)]
#[patch("/tenants/{id}/settings")]
pub async fn update_tenant_settings(
    principal: Principal,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<SettingsBody>,
) -> Result<Reply<dto::Tenant>, ApiError> {
    require(&principal, "tenants:write")?;
    if !principal.sees_tenant(&id) || !IdKind::Tenant.is_valid(&id) {
        return Err(ApiError::not_found("tenant", &id));
    }
    let body = body.0;
    let plan = match body.plan {
        Some(_) if !principal.is_operator() => {
            return Err(ApiError::Forbidden(
                "Only platform operators can change a tenant's plan".into(),
            ))
        }
        Some(plan) => Some(checked_plan(&state, &plan)?),
        None => None,
    };
    let settings = TenantSettingsPatch {
        display_name: body
            .display_name
            .map(|v| optional_text("display_name", v.as_deref(), 200))
            .transpose()?,
        timezone: body.timezone.map(|v| timezone(&v)).transpose()?,
        locale: body.locale.map(|v| locale(&v)).transpose()?,
        default_provider: body
            .default_provider
            .map(|v| {
                v.map(|p| token("default_provider", &p, 64, "_-."))
                    .transpose()
            })
            .transpose()?,
        default_model: body
            .default_model
            .map(|v| optional_text("default_model", v.as_deref(), 200))
            .transpose()?,
        max_concurrent_runs: body
            .max_concurrent_runs
            .map(|n| range("max_concurrent_runs", n, 1, 100_000))
            .transpose()?,
        data_retention_days: body
            .data_retention_days
            .map(|n| range("data_retention_days", n, 1, 3650))
            .transpose()?,
        features: body
            .features
            .into_iter()
            .map(|(flag, on)| Ok((token("features", &flag, 64, "_.-")?, on)))
            .collect::<Result<_, ApiError>>()?,
        monthly_token_budget: body.monthly_token_budget,
        monthly_cost_budget_micros: body
            .monthly_cost_budget_usd
            .map(|v| {
                v.map(|usd| dollars("monthly_cost_budget_usd", usd))
                    .transpose()
            })
            .transpose()?,
    };
    let plan_changed = plan.is_some();
    let tenant = state
        .tenants
        .update(&id, UpdateTenant { plan, settings })
        .await
        .map_err(|e| not_found_as(e, &id))?;
    if plan_changed {
        // Keys carry their tenant's plan (its rate limits): read them again.
        state
            .forget_keys(crate::store::KeysChanged::Tenant(tenant.id.clone()))
            .await;
    }
    Ok(Reply::ok(tenant))
}

/// The tenant `id` if the caller may see it; otherwise a 404, as if it did not exist.
async fn visible_tenant(
    principal: &Principal,
    state: &AppState,
    id: &str,
) -> Result<Tenant, ApiError> {
    if !principal.sees_tenant(id) || !IdKind::Tenant.is_valid(id) {
        return Err(ApiError::not_found("tenant", id));
    }
    state.tenants.get(id).await.map_err(|e| not_found_as(e, id))
}

fn not_found_as(e: dgidgi_actors::tenant::Error, id: &str) -> ApiError {
    match e {
        dgidgi_actors::tenant::Error::NotFound => ApiError::not_found("tenant", id),
        other => other.into(),
    }
}

fn checked_plan(state: &AppState, plan: &str) -> Result<String, ApiError> {
    if state.config.tenant_plans().any(|p| p == plan) {
        Ok(plan.to_string())
    } else {
        let plans: Vec<_> = state.config.tenant_plans().collect();
        Err(ApiError::invalid(
            "plan",
            format!("must be one of {}", plans.join(", ")),
        ))
    }
}

/// A short identifier: ASCII letters and digits plus `extra`, 1 to `max` characters.
fn token(field: &str, value: &str, max: usize, extra: &str) -> Result<String, ApiError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be 1 to {max} letters, digits or '{extra}'"),
        ))
    }
}

/// An IANA time zone name (`Europe/Paris`, `UTC`), from the tz database chrono-tz ships.
fn timezone(value: &str) -> Result<String, ApiError> {
    value
        .parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| {
            ApiError::invalid(
                "timezone",
                "must be an IANA time zone such as Europe/Paris or UTC",
            )
        })
}

/// A well-formed BCP 47 language tag (`en-US`, `zh-Hant-TW`) whose subtags are registered.
fn locale(value: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid("locale", "must be a BCP 47 language tag such as en-US");
    if value.len() > 35 {
        return Err(invalid());
    }
    let tag = language_tags::LanguageTag::parse(value).map_err(|_| invalid())?;
    tag.validate().map_err(|_| invalid())?;
    Ok(tag.to_string())
}

fn range(field: &str, n: u32, min: u32, max: u32) -> Result<u32, ApiError> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be from {min} to {max}"),
        ))
    }
}

/// `usd` US dollars in millionths of a dollar, if it is an amount a budget can have.
pub(super) fn dollars(field: &str, usd: f64) -> Result<u64, ApiError> {
    if usd.is_finite() && (0.0..=1e9).contains(&usd) {
        Ok((usd * 1e6).round() as u64)
    } else {
        Err(ApiError::invalid(
            field,
            "must be from 0 to 1000000000 (US dollars)",
        ))
    }
}
