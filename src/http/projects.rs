//! Projects, the seed's five routes, scoped to the caller's tenant.

use actix_web::web::{Data, Path};
use actix_web::{delete, get, patch, post};
use serde::Deserialize;
use serde_json::Value;

use super::dto;
use super::envelope::Reply;
use super::extract::{nullable, scope, Acting, Json};
use super::{optional_text, text, ApiError, AppState};
use crate::store::{NewProject, ProjectPatch};

/// Largest `metadata` object, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    description: Option<String>,
    language: Option<String>,
    metadata: Option<Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    language: Option<Option<String>>,
    metadata: Option<Value>,
}

#[utoipa::path(
    tag = "projects",
    params(crate::http::openapi::TenantParam),
    request_body = CreateProject,
    responses((status = 201, body = crate::http::openapi::Envelope<dto::Project>), crate::http::openapi::Errors)
)]
#[post("/projects")]
pub async fn create_project(
    acting: Acting<scope::ProjectsWrite>,
    state: Data<AppState>,
    body: Json<CreateProject>,
) -> Result<Reply<dto::Project>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let body = body.0;
    let new = NewProject {
        name: text("name", &body.name, 1, 200)?,
        description: optional_text("description", body.description.as_deref(), 2000)?,
        language: optional_text("language", body.language.as_deref(), 50)?,
        metadata: metadata(body.metadata)?.unwrap_or_else(|| Value::Object(Default::default())),
    };
    Ok(Reply::created(
        state.store.create_project(&tenant_id, new).await?,
    ))
}

#[utoipa::path(
    tag = "projects",
    params(crate::http::openapi::PageParams),
    responses((status = 200, body = crate::http::openapi::Envelope<Vec<dto::Project>>), crate::http::openapi::Errors)
)]
#[get("/projects")]
pub async fn list_projects(
    acting: Acting<scope::ProjectsRead>,
    state: Data<AppState>,
) -> Result<Reply<Vec<dto::Project>>, ApiError> {
    let Acting {
        tenant_id, query, ..
    } = acting;
    let page = state
        .store
        .list_projects(&tenant_id, &query.page()?)
        .await?;
    Ok(Reply::page(page.items, page.next_cursor))
}

#[utoipa::path(
    tag = "projects",
    params(("id" = String, Path, description = "Project id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Project>), crate::http::openapi::Errors)
)]
#[get("/projects/{id}")]
pub async fn get_project(
    acting: Acting<scope::ProjectsRead>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<dto::Project>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let project = state.store.get_project(&tenant_id, &id).await?;
    Ok(Reply::ok(
        project.ok_or_else(|| ApiError::not_found("project", &id))?,
    ))
}

#[utoipa::path(
    tag = "projects",
    params(("id" = String, Path, description = "Project id"), crate::http::openapi::TenantParam),
    request_body = UpdateProject,
    responses((status = 200, body = crate::http::openapi::Envelope<dto::Project>), crate::http::openapi::Errors)
)]
#[patch("/projects/{id}")]
pub async fn update_project(
    acting: Acting<scope::ProjectsWrite>,
    state: Data<AppState>,
    id: Path<String>,
    body: Json<UpdateProject>,
) -> Result<Reply<dto::Project>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let body = body.0;
    let patch = ProjectPatch {
        name: body.name.map(|n| text("name", &n, 1, 200)).transpose()?,
        description: body
            .description
            .map(|d| optional_text("description", d.as_deref(), 2000))
            .transpose()?,
        language: body
            .language
            .map(|l| optional_text("language", l.as_deref(), 50))
            .transpose()?,
        metadata: metadata(body.metadata)?,
    };
    let project = state.store.update_project(&tenant_id, &id, patch).await?;
    Ok(Reply::ok(
        project.ok_or_else(|| ApiError::not_found("project", &id))?,
    ))
}

#[utoipa::path(
    tag = "projects",
    params(("id" = String, Path, description = "Project id"), crate::http::openapi::TenantParam),
    responses((status = 200, body = crate::http::openapi::Envelope<crate::http::openapi::Deleted>), crate::http::openapi::Errors)
)]
#[delete("/projects/{id}")]
pub async fn delete_project(
    acting: Acting<scope::ProjectsWrite>,
    state: Data<AppState>,
    id: Path<String>,
) -> Result<Reply<Value>, ApiError> {
    let Acting { tenant_id, .. } = acting;
    let project = state.store.delete_project(&tenant_id, &id).await?;
    let project = project.ok_or_else(|| ApiError::not_found("project", &id))?;
    Ok(Reply::ok(
        serde_json::json!({ "id": project.id, "deleted": true }),
    ))
}

/// `metadata` must be a JSON object of bounded size.
fn metadata(value: Option<Value>) -> Result<Option<Value>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_))
            if serde_json::to_vec(&v).map_or(0, |b| b.len()) <= MAX_METADATA_BYTES =>
        {
            Ok(Some(v))
        }
        Some(Value::Object(_)) => Err(ApiError::invalid(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes"),
        )),
        Some(_) => Err(ApiError::invalid("metadata", "must be a JSON object")),
    }
}
