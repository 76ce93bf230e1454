//! LLM use and cost of a tenant's runs: by day, agent, provider and model.

use actix_web::get;
use actix_web::web::{Data, Query};
use serde::Deserialize;

use super::dto;
use super::envelope::Reply;
use super::extract::{scope, Acting};
use super::{ApiError, AppState};

/// `?from=&to=` (days, `YYYY-MM-DD`, both included; by default this month so far),
/// `?agent_id=` (one agent's runs), and `?tenant_id=` (an operator's choice of tenant).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    #[serde(alias = "agentId")]
    agent_id: Option<String>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
}

/// `day`, checked to be a `YYYY-MM-DD` date.
fn day(field: &str, day: &str) -> Result<String, ApiError> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| ApiError::invalid(field, "must be a date, YYYY-MM-DD"))
}

#[utoipa::path(
    tag = "usage",
    params(UsageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::UsageReport>, description = "The tenant's LLM use from `from` to `to`: totals, and one row per day, agent, provider and model (steps of agent runs, chat replies in sessions with an agent among them)"), crate::http::openapi::Errors)
)]
#[get("/usage")]
pub async fn get_usage(
    acting: Acting<scope::AgentsRead>,
    state: Data<AppState>,
    params: Query<UsageParams>,
) -> Result<Reply<dto::UsageReport>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let today = chrono::Utc::now().date_naive();
    let from = match &params.from {
        Some(from) => day("from", from)?,
        None => today.format("%Y-%m-01").to_string(),
    };
    let to = match &params.to {
        Some(to) => day("to", to)?,
        None => today.format("%Y-%m-%d").to_string(),
    };
    if from > to {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    let rows = state
        .store
        .usage_report(&tenant_id, &from, &to, params.agent_id.as_deref())
        .await?;
    Ok(Reply::ok(dto::UsageReport::new(tenant_id, from, to, rows)))
}
