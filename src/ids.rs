//! Prefixed, time-ordered ids (`proj_` + UUIDv7) and RFC 3339 timestamps.

use uuid::Uuid;

/// The kinds of id the API hands out; the prefix tells a reader what an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Tenant,
    User,
    ApiKey,
    Project,
    Agent,
    Run,
    Session,
    Message,
    Webhook,
    Attempt,
    Event,
    Request,
    McpServer,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Tenant => "ten_",
            IdKind::User => "usr_",
            IdKind::ApiKey => "key_",
            IdKind::Project => "proj_",
            IdKind::Agent => "agt_",
            IdKind::Run => "run_",
            IdKind::Session => "ses_",
            IdKind::Message => "msg_",
            IdKind::Webhook => "whk_",
            IdKind::Attempt => "att_",
            IdKind::Event => "evt_",
            IdKind::Request => "req_",
            IdKind::McpServer => "mcp_",
        }
    }

    /// A new id of this kind. UUIDv7 ids sort by creation time, which keyset pagination uses.
    pub fn new_id(self) -> String {
        let mut id = String::with_capacity(self.prefix().len() + 32);
        id.push_str(self.prefix());
        id.push_str(
            Uuid::now_v7()
                .simple()
                .encode_lower(&mut Uuid::encode_buffer()),
        );
        id
    }

    /// Whether `id` has this kind's shape (prefix + 32 lowercase hex digits).
    pub fn is_valid(self, id: &str) -> bool {
        id.strip_prefix(self.prefix()).is_some_and(|rest| {
            rest.len() == 32
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }
}

/// Now, in the one stored form (`dgidgi_actors::time`: RFC 3339 UTC, milliseconds, `Z`).
pub fn now_rfc3339() -> String {
    dgidgi_actors::time::now()
}
