use dgidgi_actors as domain;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::all;

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

/// Token counts of one completion (or a sum of them), and what they cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// In US dollars, by the configured price of each step's model (0 when none is set).
    pub cost_usd: f64,
}

impl From<domain::provider::Usage> for Usage {
    fn from(u: domain::provider::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cost_usd: super::usd(u.cost_micros),
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

/// A tool call that waits for a human's answer, and the answer once given.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingToolCall {
    pub tool_call_id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
    /// The answer recorded so far (other calls of the step may still wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<ToolDecision>,
}

/// A human's answer to one call.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolDecision {
    pub approve: bool,
    /// Approved with these arguments (JSON text) instead of the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<domain::run::PendingCall> for PendingToolCall {
    fn from(c: domain::run::PendingCall) -> Self {
        Self {
            tool_call_id: c.tool_call_id,
            name: c.name,
            arguments: c.arguments,
            decision: c.decision.map(|d| ToolDecision {
                approve: d.approve,
                arguments: d.arguments,
                reason: d.reason,
            }),
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
    /// While `requires_action`: the tool calls that wait for a human's answer
    /// (`POST .../approve`), and when the wait ends (then the run fails with
    /// `approval_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_tool_calls: Option<Vec<PendingToolCall>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<String>,
}

impl From<domain::run::Run> for Run {
    fn from(r: domain::run::Run) -> Self {
        let waits = r.status == domain::run::RunStatus::RequiresAction;
        let pause = r.pause.filter(|_| waits);
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
            approval_expires_at: pause.as_ref().map(|p| p.until.clone()),
            pending_tool_calls: pause.map(|p| all(p.calls)),
        }
    }
}
