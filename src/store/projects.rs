//! Projects: a tenant's workspaces. Every change records its domain event.

use serde::Serialize;

use super::outbox::outbox_row;
use super::read::Record;
use super::writer::Stmt;
use super::{json_column, to_json, Error, Page, Paged, Result, Store};
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

fn project_from_row(row: &Record) -> Result<Project> {
    Ok(Project {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        language: row.get("language")?,
        metadata: json_column(row, "metadata")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
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
        let unit = vec![
            project_row(
                "INSERT INTO projects (id, tenant_id, name, description, language, metadata, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &project,
            ),
            outbox_row(tenant_id, DomainEvent::ProjectCreated, &project),
        ];
        self.write(unit).await?;
        Ok(project)
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

    /// Applies `patch` to the project and records `project.updated` with the result. The
    /// patch applies to the project as read; a write between the read and the update makes
    /// the update find no row as read, and it is read and applied again.
    pub async fn update_project(
        &self,
        tenant_id: &str,
        id: &str,
        patch: ProjectPatch,
    ) -> Result<Option<Project>> {
        loop {
            let Some(read) = self.get_project(tenant_id, id).await? else {
                return Ok(None);
            };
            let seen = read.updated_at.clone();
            let project = patch.clone().apply(read, now_rfc3339());
            let update = project_row(
                "UPDATE projects SET name = $3, description = $4, language = $5, metadata = $6, \
                 updated_at = $8 WHERE id = $1 AND tenant_id = $2 AND updated_at = $9",
                &project,
            )
            .bind(&seen)
            .or_gone();
            let unit = vec![
                update,
                outbox_row(tenant_id, DomainEvent::ProjectUpdated, &project),
            ];
            match self.write(unit).await {
                Ok(_) => return Ok(Some(project)),
                Err(Error::Gone) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the project and records `project.deleted` with what it was.
    pub async fn delete_project(&self, tenant_id: &str, id: &str) -> Result<Option<Project>> {
        loop {
            let Some(project) = self.get_project(tenant_id, id).await? else {
                return Ok(None);
            };
            let delete = Stmt::new(
                "DELETE FROM projects WHERE id = $1 AND tenant_id = $2 AND updated_at = $3",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(&project.updated_at)
            .or_gone();
            let unit = vec![
                delete,
                outbox_row(tenant_id, DomainEvent::ProjectDeleted, &project),
            ];
            match self.write(unit).await {
                Ok(_) => return Ok(Some(project)),
                Err(Error::Gone) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl ProjectPatch {
    /// `project` with this patch applied, updated at `now`.
    fn apply(self, mut project: Project, now: String) -> Project {
        if let Some(name) = self.name {
            project.name = name;
        }
        if let Some(description) = self.description {
            project.description = description;
        }
        if let Some(language) = self.language {
            project.language = language;
        }
        if let Some(metadata) = self.metadata {
            project.metadata = metadata;
        }
        project.updated_at = now;
        project
    }
}

/// `sql` with a project's columns bound in the order of `COLUMNS`.
fn project_row(sql: &'static str, p: &Project) -> Stmt {
    Stmt::new(sql)
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.name)
        .bind(&p.description)
        .bind(&p.language)
        .bind(to_json(&p.metadata))
        .bind(&p.created_at)
        .bind(&p.updated_at)
}
