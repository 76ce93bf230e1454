//! Projects: a tenant's workspaces. Every change records its domain event.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::outbox::record_event;
use super::{json_column, to_json, write_tx, Page, Paged, Result, Store};
use crate::ids::{now_rfc3339, IdKind};
use dgidgi_actors::events::DomainEvent;

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub description: Option<String>,
    pub language: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub description: Option<String>,
    pub language: Option<String>,
    pub metadata: serde_json::Value,
}

/// A partial update: `None` keeps a field; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub language: Option<Option<String>>,
    pub metadata: Option<serde_json::Value>,
}

const COLUMNS: &str =
    "id, tenant_id, name, description, language, metadata, created_at, updated_at";

fn project_from_row(row: &AnyRow) -> Result<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        language: row.try_get("language")?,
        metadata: json_column(row, "metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn create_project(&self, tenant_id: &str, new: NewProject) -> Result<Project> {
        let now = now_rfc3339();
        let project = Project {
            id: IdKind::Project.new_id(),
            tenant_id: tenant_id.to_string(),
            name: new.name,
            description: new.description,
            language: new.language,
            metadata: new.metadata,
            created_at: now.clone(),
            updated_at: now,
        };
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO projects (id, tenant_id, name, description, language, metadata, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&project.id)
            .bind(&project.tenant_id)
            .bind(&project.name)
            .bind(&project.description)
            .bind(&project.language)
            .bind(to_json(&project.metadata))
            .bind(&project.created_at)
            .bind(&project.updated_at)
            .execute(&mut *tx)
            .await?;
            record_event(&mut tx, tenant_id, DomainEvent::ProjectCreated, &project).await?;
            Ok(project)
        })
    }

    pub async fn get_project(&self, tenant_id: &str, id: &str) -> Result<Option<Project>> {
        self.tenant_row(
            &format!("SELECT {COLUMNS} FROM projects"),
            tenant_id,
            id,
            project_from_row,
        )
        .await
    }

    pub async fn list_projects(&self, tenant_id: &str, page: &Page) -> Result<Paged<Project>> {
        let select = format!("SELECT {COLUMNS} FROM projects");
        self.page_where(
            &select,
            "tenant_id = $1",
            &[tenant_id],
            page,
            project_from_row,
            |p| &p.id,
        )
        .await
    }

    pub async fn update_project(
        &self,
        tenant_id: &str,
        id: &str,
        patch: ProjectPatch,
    ) -> Result<Option<Project>> {
        let sql = format!(
            "UPDATE projects SET name = COALESCE($3, name), \
             description = CASE WHEN $4 THEN $5 ELSE description END, \
             language = CASE WHEN $6 THEN $7 ELSE language END, \
             metadata = COALESCE($8, metadata), updated_at = $9 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        );
        write_tx!(self, |tx| {
            let row = sqlx::query(&sql)
                .bind(tenant_id)
                .bind(id)
                .bind(patch.name)
                .bind(patch.description.is_some())
                .bind(patch.description.flatten())
                .bind(patch.language.is_some())
                .bind(patch.language.flatten())
                .bind(patch.metadata.as_ref().map(to_json))
                .bind(now_rfc3339())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let project = project_from_row(&row)?;
            record_event(&mut tx, tenant_id, DomainEvent::ProjectUpdated, &project).await?;
            Ok(Some(project))
        })
    }

    pub async fn delete_project(&self, tenant_id: &str, id: &str) -> Result<Option<Project>> {
        let sql =
            format!("DELETE FROM projects WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}");
        write_tx!(self, |tx| {
            let row = sqlx::query(&sql)
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let project = project_from_row(&row)?;
            record_event(&mut tx, tenant_id, DomainEvent::ProjectDeleted, &project).await?;
            Ok(Some(project))
        })
    }
}
