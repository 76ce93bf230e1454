//! Users of a tenant.

use actix_web::web::Data;
use actix_web::{get, post};
use serde::Deserialize;

use super::dto;
use super::envelope::Reply;
use super::extract::{scope, Acting, Json};
use super::{acting_tenant, require, text, ApiError, AppState};
use crate::auth::Principal;
use crate::store::NewUser;

const ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    name: String,
    role: Option<String>,
    #[serde(alias = "tenantId")]
    tenant_id: Option<String>,
}

#[utoipa::path(
    tag = "users",
    request_body = CreateUser,
    responses((status = 201, body = crate::http::openapi::Envelope<dto::User>), crate::http::openapi::Errors)
)]
#[post("/users")]
pub async fn create_user(
    principal: Principal,
    state: Data<AppState>,
    body: Json<CreateUser>,
) -> Result<Reply<dto::User>, ApiError> {
    require(&principal, "users:write")?;
    let body = body.0;
    let tenant_id = acting_tenant(&state, &principal, body.tenant_id.as_deref()).await?;
    let email = email(&body.email)?;
    let name = text("name", &body.name, 1, 200)?;
    let role = body.role.unwrap_or_else(|| "member".into());
    if !ROLES.contains(&role.as_str()) {
        return Err(ApiError::invalid(
            "role",
            format!("must be one of {}", ROLES.join(", ")),
        ));
    }
    let user = state
        .store
        .create_user(&tenant_id, NewUser { email, name, role })
        .await?;
    Ok(Reply::created(user))
}

#[utoipa::path(
    tag = "users",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::User>>), crate::http::openapi::Errors)
)]
#[get("/users")]
pub async fn list_users(
    acting: Acting<scope::UsersRead>,
    state: Data<AppState>,
) -> Result<Reply<Vec<dto::User>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    let page = state.store.list_users(&tenant_id, &query.page()?).await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

/// A plausible address, lower-cased: one `@`, a local part, a dotted domain, no spaces.
fn email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|part| !part.is_empty())
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid("email", "must be an email address"))
    }
}
