use serde::Serialize;
use utoipa::ToSchema;

use crate::store;

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<store::User> for User {
    fn from(u: store::User) -> Self {
        Self {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email,
            name: u.name,
            role: u.role,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
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

impl From<store::ApiKeyRecord> for ApiKeyRecord {
    fn from(k: store::ApiKeyRecord) -> Self {
        Self {
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            key_type: k.key_type,
            prefix: k.prefix,
            scopes: k.scopes,
            environment: k.environment,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            created_at: k.created_at,
        }
    }
}
