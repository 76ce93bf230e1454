//! A tenant's placement: regional preferences and storage configuration, each kept as one
//! JSON document (the shapes live in `crate::regions` and `crate::storage`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::Row;

use super::{Error, Result, Store};
use crate::ids::now_rfc3339;

/// Which document of the tenant's placement row.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    Preferences,
    Storage,
}

impl Placement {
    fn column(self) -> &'static str {
        match self {
            Placement::Preferences => "preferences",
            Placement::Storage => "storage",
        }
    }
}

impl Store {
    /// The tenant's `which` document, or `None` when it never set one.
    pub async fn placement<T: DeserializeOwned>(
        &self,
        tenant_id: &str,
        which: Placement,
    ) -> Result<Option<T>> {
        let column = which.column();
        let sql = format!("SELECT {column} FROM tenant_placement WHERE tenant_id = $1");
        let row = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(text) = row
            .map(|r| r.try_get::<Option<String>, _>(column))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("tenant_placement.{column}: {e}")))
    }

    /// Every tenant's `which` document, by tenant.
    pub async fn placements<T: DeserializeOwned>(
        &self,
        which: Placement,
    ) -> Result<Vec<(String, T)>> {
        let column = which.column();
        let sql =
            format!("SELECT tenant_id, {column} FROM tenant_placement WHERE {column} IS NOT NULL");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(column)?;
                let doc = serde_json::from_str(&text)
                    .map_err(|e| Error::Corrupt(format!("tenant_placement.{column}: {e}")))?;
                Ok((r.try_get("tenant_id")?, doc))
            })
            .collect()
    }

    /// Replaces the tenant's `which` document.
    pub async fn save_placement<T: Serialize>(
        &self,
        tenant_id: &str,
        which: Placement,
        value: &T,
    ) -> Result<()> {
        let column = which.column();
        let sql = format!(
            "INSERT INTO tenant_placement (tenant_id, {column}, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at"
        );
        let save = super::writer::Stmt::new(sql)
            .bind(tenant_id)
            .bind(super::to_json(value))
            .bind(now_rfc3339());
        self.write_one(save).await?;
        Ok(())
    }
}
