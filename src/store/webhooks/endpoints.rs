//! Webhook endpoints: registered, read, changed, their secrets rotated and resealed.

use serde::Serialize;
use sqlx::Row;

use crate::ids::{now_rfc3339, IdKind};
use crate::store::read::Record;
use crate::store::writer::Stmt;
use crate::store::{json_column, to_json, Page, Paged, Result, Store, OWNED_BY};

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: String,
    /// `None`: platform-wide (every tenant's events).
    pub tenant_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_hint: String,
    pub consecutive_failures: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// An endpoint to store, its secret already sealed.
pub struct NewEndpoint {
    pub tenant_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub sealed_secret: String,
    pub secret_hint: String,
}

const ENDPOINT_COLUMNS: &str =
    "id, tenant_id, url, events, description, secret_hint, enabled, disabled_reason, \
                                consecutive_failures, created_at, updated_at";

fn endpoint_from_row(row: &Record) -> Result<Endpoint> {
    Ok(Endpoint {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        url: row.get("url")?,
        events: json_column(row, "events")?,
        description: row.get("description")?,
        enabled: row.get::<i64>("enabled")? == 1,
        disabled_reason: row.get("disabled_reason")?,
        secret_hint: row.get("secret_hint")?,
        consecutive_failures: row.get("consecutive_failures")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

impl Store {
    pub async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint> {
        let now = now_rfc3339();
        let endpoint = Endpoint {
            id: IdKind::Webhook.new_id(),
            tenant_id: new.tenant_id,
            url: new.url,
            events: new.events,
            description: new.description,
            enabled: true,
            disabled_reason: None,
            secret_hint: new.secret_hint,
            consecutive_failures: 0,
            created_at: now.clone(),
            updated_at: now,
        };
        let insert = Stmt::new(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, secret, secret_hint, enabled, \
             consecutive_failures, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, $8, $9)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.tenant_id)
        .bind(&endpoint.url)
        .bind(to_json(&endpoint.events))
        .bind(&endpoint.description)
        .bind(&new.sealed_secret)
        .bind(&endpoint.secret_hint)
        .bind(&endpoint.created_at)
        .bind(&endpoint.updated_at);
        self.write_one(insert).await?;
        Ok(endpoint)
    }

    /// Endpoint `id`, if `owner` may see it (`None`: an operator, who sees all).
    pub async fn get_endpoint(&self, id: &str, owner: Option<&str>) -> Result<Option<Endpoint>> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND ($2 = '' OR tenant_id = $2)");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(owner.unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| endpoint_from_row(&r.into()))
            .transpose()
    }

    /// A tenant's endpoints, or the platform-wide ones (`tenant_id` `None`).
    pub async fn list_endpoints(
        &self,
        tenant_id: Option<&str>,
        page: &Page,
    ) -> Result<Paged<Endpoint>> {
        let select = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints");
        let owner = tenant_id.unwrap_or("");
        self.page_where(&select, OWNED_BY, &[owner], page, endpoint_from_row, |e| {
            &e.id
        })
        .await
    }

    /// Stores an endpoint's changed url, events, description and enabled flag
    /// (enabling again clears the failure count and reason).
    /// Saves the endpoint's settings; `owner` (the caller's tenant, `None` for an operator)
    /// must own it, like every write of a tenant's row.
    pub async fn save_endpoint(&self, endpoint: &Endpoint, owner: Option<&str>) -> Result<()> {
        let save = Stmt::new(
            "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5, \
             disabled_reason = CASE WHEN $5 = 1 THEN NULL ELSE disabled_reason END, \
             consecutive_failures = CASE WHEN $5 = 1 AND enabled = 0 THEN 0 ELSE consecutive_failures END, \
             failing_since = CASE WHEN $5 = 1 AND enabled = 0 THEN NULL ELSE failing_since END, \
             updated_at = $6 WHERE id = $1 AND ($7 = '' OR tenant_id = $7)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.url)
        .bind(to_json(&endpoint.events))
        .bind(&endpoint.description)
        .bind(i64::from(endpoint.enabled))
        .bind(now_rfc3339())
        .bind(owner.unwrap_or(""));
        self.write_one(save).await?;
        Ok(())
    }

    /// Deletes the endpoint (`owner` as for [`Store::save_endpoint`]) and fails what it had pending.
    pub async fn delete_endpoint(&self, id: &str, owner: Option<&str>) -> Result<()> {
        // What it had pending fails first, while the endpoint shows it is the owner's.
        let unit = vec![
            Stmt::new(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL \
                 WHERE endpoint_id = $1 AND status = 'pending' AND EXISTS (SELECT 1 FROM \
                 webhook_endpoints WHERE id = $1 AND ($2 = '' OR tenant_id = $2))",
            ),
            Stmt::new(
                "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2 = '' OR tenant_id = $2)",
            ),
        ];
        let unit = unit
            .into_iter()
            .map(|s| s.bind(id).bind(owner.unwrap_or("")))
            .collect();
        self.write(unit).await?;
        Ok(())
    }

    /// Every endpoint's sealed secrets: (id, secret, previous secret).
    pub async fn webhook_secrets(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query("SELECT id, secret, previous_secret FROM webhook_endpoints")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("secret")?,
                    r.try_get("previous_secret")?,
                ))
            })
            .collect()
    }

    /// Replaces an endpoint's sealed secrets (after they were sealed again).
    pub async fn set_webhook_secrets(
        &self,
        id: &str,
        secret: &str,
        previous: Option<&str>,
    ) -> Result<()> {
        let set = Stmt::new(
            "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(secret)
        .bind(previous);
        self.write_one(set).await?;
        Ok(())
    }

    /// A new secret; the previous one keeps signing until `previous_until`.
    pub async fn rotate_secret(
        &self,
        id: &str,
        owner: Option<&str>,
        sealed: &str,
        hint: &str,
        previous_until: &str,
    ) -> Result<()> {
        let rotate = Stmt::new(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $4, secret = $2, \
             secret_hint = $3, updated_at = $5 WHERE id = $1 AND ($6 = '' OR tenant_id = $6)",
        )
        .bind(id)
        .bind(sealed)
        .bind(hint)
        .bind(previous_until)
        .bind(now_rfc3339())
        .bind(owner.unwrap_or(""));
        self.write_one(rotate).await?;
        Ok(())
    }
}
