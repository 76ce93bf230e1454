//! Tenants: create (with the tenant's first API key), read, list, save settings.

use async_trait::async_trait;
use dgidgi_actors::{StoreFailure, Tenant, TenantSettings, TenantStore};

use super::keys::{key_row, ApiKeyRecord, NewApiKey};
use super::outbox::outbox_row;
use super::read::Record;
use super::writer::Stmt;
use super::{for_actors, json_column, to_json, Page, Paged, Result, Store};
use crate::ids::now_rfc3339;
use dgidgi_actors::events::DomainEvent;

const COLUMNS: &str = "id, name, plan, settings, created_at, updated_at";

fn tenant_from_row(row: &Record) -> Result<Tenant> {
    Ok(Tenant {
        id: row.get("id")?,
        name: row.get("name")?,
        plan: row.get("plan")?,
        settings: json_column(row, "settings")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

impl Store {
    /// Creates a tenant and its first API key, and records `tenant.created`, atomically.
    pub async fn create_tenant(
        &self,
        tenant: &Tenant,
        first_key: &NewApiKey,
    ) -> Result<ApiKeyRecord> {
        let unit = vec![
            Stmt::new(
                "INSERT INTO tenants (id, name, plan, settings, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(&tenant.plan)
            .bind(to_json(&tenant.settings))
            .bind(&tenant.created_at)
            .bind(&tenant.updated_at),
            key_row(first_key),
            outbox_row(&tenant.id, DomainEvent::TenantCreated, tenant),
        ];
        self.write(unit)
            .await
            .map_err(|e| e.conflict_as("tenant already exists"))?;
        self.stored_key(&first_key.id).await
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| tenant_from_row(&(&row).into()))
            .transpose()
    }

    /// All tenants (`only` = None, for operators) or just one (a tenant's own key).
    pub async fn list_tenants(&self, only: Option<&str>, page: &Page) -> Result<Paged<Tenant>> {
        let select = format!("SELECT {COLUMNS} FROM tenants");
        let filter = "($1 = '' OR id = $1)";
        self.page_where(
            &select,
            filter,
            &[only.unwrap_or("")],
            page,
            tenant_from_row,
            |t| &t.id,
        )
        .await
    }

    pub async fn update_tenant(
        &self,
        id: &str,
        plan: &str,
        settings: &TenantSettings,
    ) -> Result<Option<Tenant>> {
        let update =
            Stmt::new("UPDATE tenants SET plan = $2, settings = $3, updated_at = $4 WHERE id = $1")
                .bind(id)
                .bind(plan)
                .bind(to_json(settings))
                .bind(now_rfc3339());
        if self.write_one(update).await?.changed == 0 {
            return Ok(None);
        }
        self.get_tenant(id).await
    }
}

#[async_trait]
impl TenantStore for Store {
    async fn load_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreFailure> {
        for_actors(self.get_tenant(id).await)
    }

    async fn save_tenant(
        &self,
        id: &str,
        plan: &str,
        settings: &TenantSettings,
    ) -> Result<Option<Tenant>, StoreFailure> {
        self.update_tenant(id, plan, settings)
            .await
            .map_err(StoreFailure::from)
    }
}
