//! Users of a tenant. An email is unique within its tenant.

use serde::Serialize;

use super::outbox::outbox_row;
use super::read::Record;
use super::writer::Stmt;
use super::{Page, Paged, Result, Store};
use crate::ids::{now_rfc3339, IdKind};
use dgidgi_actors::events::DomainEvent;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: String,
}

const COLUMNS: &str = "id, tenant_id, email, name, role, created_at, updated_at";

fn user_from_row(row: &Record) -> Result<User> {
    Ok(User {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        email: row.get("email")?,
        name: row.get("name")?,
        role: row.get("role")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

impl Store {
    /// Creates a user and records `user.created`; a used email is a conflict.
    pub async fn create_user(&self, tenant_id: &str, new: NewUser) -> Result<User> {
        let now = now_rfc3339();
        let user = User {
            id: IdKind::User.new_id(),
            tenant_id: tenant_id.to_string(),
            email: new.email,
            name: new.name,
            role: new.role,
            created_at: now.clone(),
            updated_at: now,
        };
        let unit = vec![
            Stmt::new(
                "INSERT INTO users (id, tenant_id, email, name, role, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&user.id)
            .bind(&user.tenant_id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(&user.role)
            .bind(&user.created_at)
            .bind(&user.updated_at),
            outbox_row(tenant_id, DomainEvent::UserCreated, &user),
        ];
        self.write(unit)
            .await
            .map_err(|e| e.conflict_as("a user with this email already exists in the tenant"))?;
        Ok(user)
    }

    pub async fn list_users(&self, tenant_id: &str, page: &Page) -> Result<Paged<User>> {
        let select = format!("SELECT {COLUMNS} FROM users");
        self.page_where(
            &select,
            "tenant_id = $1",
            &[tenant_id],
            page,
            user_from_row,
            |u| &u.id,
        )
        .await
    }
}
