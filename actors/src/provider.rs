//! The LLM provider interface: one streaming chat completion. Implementations live in the
//! `dgidgi` crate (async-openai against any OpenAI-compatible endpoint, and the offline
//! provider).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

/// A message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        content: String,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: String,
        content: String,
    },
}

/// A tool the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub temperature: Option<f32>,
    /// The most bytes of arguments one tool call may have: a provider stops gathering a
    /// call past it and fails the stream with `tool_arguments_too_large`.
    pub max_tool_arguments: usize,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// What a streaming completion yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// A piece of the answer's text.
    Delta(String),
    /// A complete tool call (providers assemble the streamed pieces).
    ToolCall(ToolCall),
    Usage(Usage),
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// Why a provider failed, with a stable code for the run's `error.code`.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// `rate_limited`, `server_error`, `timeout`, `insufficient_quota`, `bad_request`,
    /// `unauthorized`, `malformed_response`, `stream_broken`, `unknown_provider`.
    pub code: String,
    pub message: String,
    /// Whether the same request may succeed if the runtime tries it again (a stalled or
    /// broken stream; HTTP-level retries are the provider client's own).
    #[serde(skip)]
    pub retryable: bool,
    /// The HTTP status the provider answered, when it answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl Error {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable,
            status: None,
        }
    }
}

#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// The model used when the request names none.
    fn default_model(&self) -> &str;
    /// Starts a streaming completion. Errors before the first chunk come from here; errors
    /// in the middle of the answer come from the stream.
    async fn stream_chat(&self, request: ChatRequest) -> Result<ChunkStream, Error>;
}

/// The configured providers, by name.
pub trait ProviderSet: Send + Sync + 'static {
    fn get(&self, name: &str) -> Option<Arc<dyn LlmProvider>>;
    /// The provider used when neither the agent nor the tenant names one.
    fn default_name(&self) -> &str;
    /// Every provider's name, sorted.
    fn names(&self) -> Vec<String>;
}
