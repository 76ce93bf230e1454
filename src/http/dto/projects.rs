use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store;

#[derive(Debug, Serialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub description: Option<String>,
    pub language: Option<String>,
    pub metadata: Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<store::Project> for Project {
    fn from(p: store::Project) -> Self {
        Self {
            id: p.id,
            tenant_id: p.tenant_id,
            name: p.name,
            description: p.description,
            language: p.language,
            metadata: p.metadata,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
