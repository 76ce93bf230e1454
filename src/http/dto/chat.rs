use dgidgi_actors as domain;
use serde::Serialize;
use utoipa::ToSchema;

use super::{RunError, Usage};

/// A chat session as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub tenant_id: String,
    pub project_id: String,
    pub agent_id: Option<String>,
    pub title: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    /// The provider replies use, then its fallbacks.
    pub providers: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<domain::chat::Session> for Session {
    fn from(s: domain::chat::Session) -> Self {
        Self {
            id: s.id,
            tenant_id: s.tenant_id,
            project_id: s.project_id,
            agent_id: s.agent_id,
            title: s.title,
            system_prompt: s.system_prompt,
            model: s.model,
            providers: s.providers,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A message of a session: the user's, or an assistant reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub session_id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// `complete`, or for a reply also `streaming`, `cancelled`, `failed`.
    pub status: String,
    /// For a user message: the id its reply has (or will have).
    pub reply_id: Option<String>,
    /// For a reply: the user message it answers.
    pub in_reply_to: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<RunError>,
    /// For a reply in a session with an agent: the run that writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<domain::chat::Message> for Message {
    fn from(m: domain::chat::Message) -> Self {
        Self {
            id: m.id,
            session_id: m.session_id,
            role: m.role,
            content: m.content,
            status: m.status,
            reply_id: m.reply_id,
            in_reply_to: m.in_reply_to,
            usage: m.usage.map(Into::into),
            error: m.error.map(Into::into),
            run_id: m.run_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}
