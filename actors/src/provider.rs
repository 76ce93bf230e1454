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
    pub name: String,
    pub description: String,
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
    /// The most tokens the answer may have (sent as `max_tokens`): set when a budget
    /// reserves the step's worst case, so that the worst case is a bound.
    pub max_tokens: Option<u32>,
}

impl ChatRequest {
    /// A rough count of the prompt's tokens (a token is about four bytes of English text),
    /// rounded up: what a budget reserves for the prompt before the provider says.
    pub fn prompt_estimate(&self) -> u64 {
        let bytes: usize = serde_json::to_string(&self.messages).map_or(0, |m| m.len())
            + self
                .tools
                .iter()
                .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
                .sum::<usize>();
        (bytes as u64).div_ceil(4)
    }
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// What the tokens cost, in millionths of a US dollar, by the configured price of the
    /// provider's model (0 when it has none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cost_micros: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cost_micros += other.cost_micros;
    }
}

/// What a model costs: US dollars per million tokens, prompt and answer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    /// The cost of `prompt` and `completion` tokens in millionths of a US dollar (a price
    /// per million tokens is that many millionths per token), rounded up.
    pub fn micros(&self, prompt: u64, completion: u64) -> u64 {
        (prompt as f64 * self.input_per_million + completion as f64 * self.output_per_million)
            .ceil()
            .max(0.0) as u64
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
    /// The configured price of `model` at `provider` (`None`: the provider's default
    /// model), if any.
    fn price(&self, provider: &str, model: Option<&str>) -> Option<Price> {
        let _ = (provider, model);
        None
    }
}

/// `usage` with its cost at `price` (none: free as far as anyone said).
pub fn priced(mut usage: Usage, price: Option<Price>) -> Usage {
    usage.cost_micros = price.map_or(0, |p| {
        p.micros(usage.prompt_tokens, usage.completion_tokens)
    });
    usage
}
