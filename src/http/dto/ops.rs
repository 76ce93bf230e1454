use dgidgi_actors as domain;
use serde::Serialize;
use utoipa::ToSchema;

/// A point-in-time copy of an [`ActorMeta`].
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ActorInfo {
    pub kind: &'static str,
    pub id: String,
    pub tenant_id: Option<String>,
    pub state: String,
    pub started_at: String,
    pub age_secs: u64,
    pub mailbox_depth: i64,
    pub messages_handled: u64,
    pub restarts: u32,
    pub last_error: Option<String>,
}

impl From<domain::ActorInfo> for ActorInfo {
    fn from(a: domain::ActorInfo) -> Self {
        Self {
            kind: a.kind,
            id: a.id,
            tenant_id: a.tenant_id,
            state: a.state,
            started_at: a.started_at,
            age_secs: a.age_secs,
            mailbox_depth: a.mailbox_depth,
            messages_handled: a.messages_handled,
            restarts: a.restarts,
            last_error: a.last_error,
        }
    }
}
