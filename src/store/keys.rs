//! API keys: only the SHA-256 hash of a key is stored; the key itself is shown once.

use serde::Serialize;
use sqlx::Row;

use super::read::Record;
use super::writer::Stmt;
use super::{json_column, to_json, Error, Page, Paged, Result, Store, OWNED_BY};

/// A key about to be stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    /// `None` for a platform-operator key.
    pub tenant_id: Option<String>,
    pub name: String,
    pub key_type: String,
    /// The first characters of the key, kept so a person can tell keys apart.
    pub prefix: String,
    pub hash: String,
    pub scopes: Vec<String>,
    pub environment: String,
    pub expires_at: Option<String>,
    pub created_at: String,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub environment: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_at: String,
}

/// A key with its tenant's current plan, as authentication needs it.
#[derive(Debug, Clone)]
pub struct KeyWithPlan {
    pub key: ApiKeyRecord,
    pub plan: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, name, key_type, prefix, scopes, environment, expires_at, \
                       last_used_at, revoked_at, created_at";
/// The same columns for a query that joins `api_keys k` with `tenants t`.
const K_COLUMNS: &str =
    "k.id, k.tenant_id, k.name, k.key_type, k.prefix, k.scopes, k.environment, \
                         k.expires_at, k.last_used_at, k.revoked_at, k.created_at";

fn key_from_row(row: &Record) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        name: row.get("name")?,
        key_type: row.get("key_type")?,
        prefix: row.get("prefix")?,
        scopes: json_column(row, "scopes")?,
        environment: row.get("environment")?,
        expires_at: row.get("expires_at")?,
        last_used_at: row.get("last_used_at")?,
        revoked_at: row.get("revoked_at")?,
        created_at: row.get("created_at")?,
    })
}

/// The statement that stores a new key.
pub(super) fn key_row(key: &NewApiKey) -> Stmt {
    Stmt::new(
        "INSERT INTO api_keys (id, tenant_id, name, key_type, prefix, hash, scopes, environment, \
         expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&key.id)
    .bind(&key.tenant_id)
    .bind(&key.name)
    .bind(&key.key_type)
    .bind(&key.prefix)
    .bind(&key.hash)
    .bind(to_json(&key.scopes))
    .bind(&key.environment)
    .bind(&key.expires_at)
    .bind(&key.created_at)
}

impl Store {
    pub async fn create_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord> {
        self.write_one(key_row(key))
            .await
            .map_err(|e| e.conflict_as("api key already exists"))?;
        self.stored_key(&key.id).await
    }

    /// Key `id` as stored, read after a write that made or changed it.
    pub(super) async fn stored_key(&self, id: &str) -> Result<ApiKeyRecord> {
        self.key_by_id(id)
            .await?
            .map(|k| k.key)
            .ok_or_else(|| Error::Corrupt(format!("key {id} vanished after its write")))
    }

    /// The key whose hash is `hash`, with its tenant's plan.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyWithPlan>> {
        self.key_where("k.hash = $1", hash).await
    }

    /// The key `id`, with its tenant's plan (JWTs name their key by id).
    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyWithPlan>> {
        self.key_where("k.id = $1", id).await
    }

    async fn key_where(&self, condition: &str, value: &str) -> Result<Option<KeyWithPlan>> {
        let sql = format!(
            "SELECT {K_COLUMNS}, t.plan FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id WHERE {condition}"
        );
        let read = self.read(&sql, vec![value.into()], |row| {
            Ok(KeyWithPlan {
                key: key_from_row(row)?,
                plan: row.get("plan")?,
            })
        });
        Ok(read.await?.pop())
    }

    /// The keys of one tenant, or the platform-operator keys when `tenant_id` is `None`.
    pub async fn list_keys(
        &self,
        tenant_id: Option<&str>,
        page: &Page,
    ) -> Result<Paged<ApiKeyRecord>> {
        let select = format!("SELECT {COLUMNS} FROM api_keys");
        let owner = tenant_id.unwrap_or("");
        self.page_where(&select, OWNED_BY, &[owner], page, key_from_row, |k| &k.id)
            .await
    }

    /// Revokes key `id` (if it belongs to `tenant_id`, when one is given). Revoking twice
    /// keeps the first time. `None` when there is no such key.
    pub async fn revoke_key(
        &self,
        id: &str,
        tenant_id: Option<&str>,
        now: &str,
    ) -> Result<Option<ApiKeyRecord>> {
        let revoke = Stmt::new(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) \
             WHERE id = $1 AND ($2 = '' OR tenant_id = $2)",
        )
        .bind(id)
        .bind(tenant_id.unwrap_or(""))
        .bind(now);
        if self.write_one(revoke).await?.changed == 0 {
            return Ok(None);
        }
        self.stored_key(id).await.map(Some)
    }

    pub async fn touch_key(&self, id: &str, now: &str) -> Result<()> {
        let touch = Stmt::new("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now);
        self.write_one(touch).await?;
        Ok(())
    }

    /// How many unrevoked platform-operator keys exist (the first `serve` creates one if none).
    pub async fn count_operator_keys(&self) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE tenant_id IS NULL AND revoked_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
