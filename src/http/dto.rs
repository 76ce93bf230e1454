//! The API's wire shapes: what a response carries, described for the OpenAPI document.
//!
//! The domain types live in `actors/` and `src/store/` and know nothing of the document;
//! each type here is built from one of them (`From`), and handlers reply with these. So
//! the document and the bytes on the wire come from the same type, and a change of a
//! domain type shows up here as a compile error rather than as a silent change of the API.

use std::collections::BTreeMap;

use dgidgi_actors as domain;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{storage, store};

/// Converts a list of domain values into their wire shapes.
pub fn all<T, W: From<T>>(items: Vec<T>) -> Vec<W> {
    items.into_iter().map(W::from).collect()
}

/// A tenant: an organisation whose data no other tenant ever sees.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// The plan tier; it selects rate limits and feature gates.
    pub plan: String,
    pub settings: TenantSettings,
    pub created_at: String,
    pub updated_at: String,
}

impl From<domain::Tenant> for Tenant {
    fn from(t: domain::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            plan: t.plan,
            settings: t.settings.into(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// What a tenant may change about itself with `PATCH /tenants/:id/settings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSettings {
    /// A name for display, when it differs from the tenant's legal name.
    pub display_name: Option<String>,
    /// IANA time zone used when the tenant's UI shows times (`UTC`, `Europe/Paris`).
    pub timezone: String,
    /// BCP 47 language tag for generated text (`en-US`).
    pub locale: String,
    /// The provider agents use when they name none.
    pub default_provider: Option<String>,
    /// The model agents use when they name none.
    pub default_model: Option<String>,
    /// How many agent runs may run at once; the rest wait queued.
    pub max_concurrent_runs: u32,
    /// How long run and chat event logs are kept.
    pub data_retention_days: u32,
    /// Feature flags switched on or off for this tenant, on top of its plan's gates.
    pub features: BTreeMap<String, bool>,
}

impl From<domain::TenantSettings> for TenantSettings {
    fn from(s: domain::TenantSettings) -> Self {
        Self {
            display_name: s.display_name,
            timezone: s.timezone,
            locale: s.locale,
            default_provider: s.default_provider,
            default_model: s.default_model,
            max_concurrent_runs: s.max_concurrent_runs,
            data_retention_days: s.data_retention_days,
            features: s.features,
        }
    }
}

/// How far an agent may go on its own.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    /// One step, no tools.
    Low,
    /// Eight steps.
    Medium,
    /// Thirty-two steps.
    High,
}

impl From<domain::agent::Autonomy> for Autonomy {
    fn from(a: domain::agent::Autonomy) -> Self {
        use domain::agent::Autonomy as A;
        match a {
            A::Low => Self::Low,
            A::Medium => Self::Medium,
            A::High => Self::High,
        }
    }
}

/// How an agent behaves; camelCase both ways, as the SDK sends it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub autonomy_level: Autonomy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

impl From<domain::agent::AgentConfig> for AgentConfig {
    fn from(c: domain::agent::AgentConfig) -> Self {
        Self {
            autonomy_level: c.autonomy_level.into(),
            max_steps: c.max_steps,
            temperature: c.temperature,
            timeout_seconds: c.timeout_seconds,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub tenant_id: String,
    pub project_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    /// The provider by name; `None` uses the tenant's or the server's default.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Providers tried in order when the first one fails.
    pub fallbacks: Vec<String>,
    pub tools: Vec<String>,
    pub config: AgentConfig,
    pub created_at: String,
    pub updated_at: String,
}

impl From<domain::agent::Agent> for Agent {
    fn from(a: domain::agent::Agent) -> Self {
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            project_id: a.project_id,
            name: a.name,
            description: a.description,
            system_prompt: a.system_prompt,
            provider: a.provider,
            model: a.model,
            fallbacks: a.fallbacks,
            tools: a.tools,
            config: a.config.into(),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    RequiresAction,
    Completed,
    Failed,
    Cancelled,
}

impl From<domain::run::RunStatus> for RunStatus {
    fn from(s: domain::run::RunStatus) -> Self {
        use domain::run::RunStatus as S;
        match s {
            S::Queued => Self::Queued,
            S::Running => Self::Running,
            S::RequiresAction => Self::RequiresAction,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// Token counts of one completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<domain::provider::Usage> for Usage {
    fn from(u: domain::provider::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// A tool the model asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
}

impl From<domain::provider::ToolCall> for ToolCall {
    fn from(c: domain::provider::ToolCall) -> Self {
        Self {
            id: c.id,
            name: c.name,
            arguments: c.arguments,
        }
    }
}

/// A tool's answer to one call.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolResult {
    pub tool_call_id: String,
    pub name: String,
    pub output: String,
    pub is_error: bool,
}

impl From<domain::run::ToolResult> for ToolResult {
    fn from(r: domain::run::ToolResult) -> Self {
        Self {
            tool_call_id: r.tool_call_id,
            name: r.name,
            output: r.output,
            is_error: r.is_error,
        }
    }
}

/// One finished step.
#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    pub index: u32,
    pub provider: String,
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_results: Vec<ToolResult>,
    pub usage: Usage,
    pub started_at: String,
    pub finished_at: String,
}

impl From<domain::run::Step> for Step {
    fn from(s: domain::run::Step) -> Self {
        Self {
            index: s.index,
            provider: s.provider,
            model: s.model,
            text: s.text,
            tool_calls: all(s.tool_calls),
            tool_results: all(s.tool_results),
            usage: s.usage.into(),
            started_at: s.started_at,
            finished_at: s.finished_at,
        }
    }
}

/// Why a run failed: a stable code and a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl From<domain::run::Failure> for RunError {
    fn from(e: domain::run::Failure) -> Self {
        Self {
            code: e.code,
            message: e.message,
            details: e.details,
        }
    }
}

/// A file a run wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    pub path: String,
    pub bytes: u64,
}

impl From<domain::tools::Artifact> for Artifact {
    fn from(a: domain::tools::Artifact) -> Self {
        Self {
            path: a.path,
            bytes: a.bytes,
        }
    }
}

/// An agent run as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub project_id: String,
    pub goal: String,
    pub input: Value,
    pub status: RunStatus,
    pub steps: Vec<Step>,
    pub output: Option<String>,
    pub usage: Usage,
    pub error: Option<RunError>,
    pub artifacts: Vec<Artifact>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    /// For a run that writes a chat reply: its session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// For a run that writes a chat reply: the reply message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl From<domain::run::Run> for Run {
    fn from(r: domain::run::Run) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            agent_id: r.agent_id,
            project_id: r.project_id,
            goal: r.goal,
            input: r.input,
            status: r.status.into(),
            steps: all(r.steps),
            output: r.output,
            usage: r.usage.into(),
            error: r.error.map(Into::into),
            artifacts: all(r.artifacts),
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
            session_id: r.session_id,
            message_id: r.message_id,
        }
    }
}

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

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
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

impl From<store::Endpoint> for Endpoint {
    fn from(e: store::Endpoint) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            events: e.events,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            secret_hint: e.secret_hint,
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub attempted_at: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
}

impl From<store::Attempt> for Attempt {
    fn from(a: store::Attempt) -> Self {
        Self {
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
            next_retry_at: a.next_retry_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Option<String>,
    pub payload: Value,
    pub created_at: String,
}

impl From<store::Delivery> for Delivery {
    fn from(d: store::Delivery) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: all(d.attempts),
            next_attempt_at: d.next_attempt_at,
            payload: d.payload,
            created_at: d.created_at,
        }
    }
}

/// A tenant's regional preferences (the seed's schema).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    pub primary_region: String,
    pub secondary_region: Option<String>,
    pub data_residency_required: bool,
    pub data_residency_region: Option<String>,
    pub compliance_level: String,
}

impl From<crate::regions::Preferences> for Preferences {
    fn from(p: crate::regions::Preferences) -> Self {
        Self {
            primary_region: p.primary_region,
            secondary_region: p.secondary_region,
            data_residency_required: p.data_residency_required,
            data_residency_region: p.data_residency_region,
            compliance_level: p.compliance_level,
        }
    }
}

/// The answer to "may this tenant use this feature?".
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureCheck {
    pub feature_key: String,
    pub allowed: bool,
    pub plan: String,
    /// The lowest plan that includes the feature (`None`: no plan does).
    pub required_plan: Option<String>,
    pub limits: Value,
}

impl From<crate::regions::FeatureCheck> for FeatureCheck {
    fn from(c: crate::regions::FeatureCheck) -> Self {
        Self {
            feature_key: c.feature_key,
            allowed: c.allowed,
            plan: c.plan,
            required_plan: c.required_plan,
            limits: c.limits,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    Platform,
    Byos,
}

impl From<storage::StorageMode> for StorageMode {
    fn from(m: storage::StorageMode) -> Self {
        match m {
            storage::StorageMode::Platform => Self::Platform,
            storage::StorageMode::Byos => Self::Byos,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ByosProvider {
    S3,
    R2,
    Gcs,
    Azure,
}

impl From<storage::ByosProvider> for ByosProvider {
    fn from(p: storage::ByosProvider) -> Self {
        match p {
            storage::ByosProvider::S3 => Self::S3,
            storage::ByosProvider::R2 => Self::R2,
            storage::ByosProvider::Gcs => Self::Gcs,
            storage::ByosProvider::Azure => Self::Azure,
        }
    }
}

/// Why a check failed: a stable code (`bad_credentials`, `access_denied`, `no_such_bucket`,
/// `region_mismatch`, `unreachable`, `forbidden_address`, `read_mismatch`,
/// `credentials_unreadable`, `storage_error`) and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl From<storage::Failure> for Failure {
    fn from(f: storage::Failure) -> Self {
        Self {
            code: f.code,
            message: f.message,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: &'static str,
    /// `passed`, `failed`, or `skipped` (after an earlier failure).
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl From<storage::Check> for Check {
    fn from(c: storage::Check) -> Self {
        Self {
            name: c.name,
            status: c.status,
            latency_ms: c.latency_ms,
            error: c.error.map(Into::into),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub valid: bool,
    pub checks: Vec<Check>,
    /// The first failure, when there is one.
    pub reason: Option<Failure>,
}

impl From<storage::Validation> for Validation {
    fn from(v: storage::Validation) -> Self {
        Self {
            valid: v.valid,
            checks: all(v.checks),
            reason: v.reason.map(Into::into),
        }
    }
}
