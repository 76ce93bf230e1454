//! Any OpenAI-compatible chat endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp
//! server, OpenRouter...) through async-openai, streaming.

use std::collections::{BTreeMap, VecDeque};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionStreamResponse;
use async_openai::Client;
use async_trait::async_trait;
use dgidgi_actors::provider::{
    self, ChatChunk, ChatMessage, ChatRequest, ChunkStream, LlmProvider, ToolCall, Usage,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

pub struct OpenAiProvider {
    client: Client<OpenAIConfig>,
    model: String,
}

impl OpenAiProvider {
    pub fn new(base_url: &str, api_key: &str, model: &str) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        Self {
            client: Client::with_config(config),
            model: model.to_string(),
        }
    }
}

/// The request body of a streaming chat completion.
fn body(request: &ChatRequest, model: &str) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| match m {
            ChatMessage::System { content } => json!({ "role": "system", "content": content }),
            ChatMessage::User { content } => json!({ "role": "user", "content": content }),
            ChatMessage::Assistant { content, tool_calls } if tool_calls.is_empty() => {
                json!({ "role": "assistant", "content": content })
            }
            ChatMessage::Assistant { content, tool_calls } => json!({
                "role": "assistant",
                "content": if content.is_empty() { Value::Null } else { json!(content) },
                "tool_calls": tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments }
                })).collect::<Vec<_>>(),
            }),
            ChatMessage::Tool { tool_call_id, content } => {
                json!({ "role": "tool", "tool_call_id": tool_call_id, "content": content })
            }
        })
        .collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({ "type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters } })
            })
            .collect();
    }
    if let Some(n) = request.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// Our error for one of async-openai's. Its client already retried 429s (not
/// `insufficient_quota`), 5xx answers and failed connections with exponential backoff
/// honouring `Retry-After`, so those come here final; only a stream that broke or stalled
/// may be worth another try.
fn classify(error: OpenAIError) -> provider::Error {
    match error {
        OpenAIError::ApiError(response) => {
            let status = response.status_code.as_u16();
            let api = response.api_error;
            let quota =
                [api.code.as_deref(), api.r#type.as_deref()].contains(&Some("insufficient_quota"));
            let code = match status {
                429 if quota => "insufficient_quota",
                429 => "rate_limited",
                401 | 403 => "unauthorized",
                408 => "timeout",
                s if s >= 500 => "server_error",
                _ => "bad_request",
            };
            provider::Error {
                status: Some(status),
                ..provider::Error::new(code, api.message, false)
            }
        }
        OpenAIError::Reqwest(e) if e.is_timeout() => {
            provider::Error::new("timeout", e.to_string(), true)
        }
        OpenAIError::Reqwest(e) if e.is_body() || e.is_decode() => {
            provider::Error::new("stream_broken", e.to_string(), true)
        }
        OpenAIError::Reqwest(e) => provider::Error::new("unreachable", e.to_string(), false),
        OpenAIError::JSONDeserialize(e, content) => provider::Error::new(
            "malformed_response",
            format!("{e}: {}", content.chars().take(200).collect::<String>()),
            false,
        ),
        OpenAIError::StreamError(e) => provider::Error::new("stream_broken", e.to_string(), true),
        other => provider::Error::new("bad_request", other.to_string(), false),
    }
}

/// Tool-call pieces, gathered by index until the stream ends.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

struct Assembly {
    inner: async_openai::types::stream::StreamResponse<CreateChatCompletionStreamResponse>,
    calls: BTreeMap<u32, PartialCall>,
    ready: VecDeque<Result<ChatChunk, provider::Error>>,
    finished: bool,
    done: bool,
    /// The most bytes of arguments one call may gather (the request's limit).
    max_arguments: usize,
}

impl Assembly {
    /// Turns one streamed chunk into ours; tool calls wait for the end of the stream.
    fn take(&mut self, chunk: CreateChatCompletionStreamResponse) {
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content {
                self.ready.push_back(Ok(ChatChunk::Delta(text)));
            }
            for call in choice.delta.tool_calls.unwrap_or_default() {
                let partial = self.calls.entry(call.index).or_default();
                if let Some(id) = call.id {
                    partial.id = id;
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name {
                        partial.name.push_str(&name);
                    }
                    if let Some(arguments) = function.arguments {
                        if partial.arguments.len() + arguments.len() > self.max_arguments {
                            // Not gathered further: the step fails rather than hold it all.
                            self.ready.push_back(Err(provider::Error::new(
                                "tool_arguments_too_large",
                                format!(
                                    "a tool call's arguments passed {} bytes",
                                    self.max_arguments
                                ),
                                false,
                            )));
                            return;
                        }
                        partial.arguments.push_str(&arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
        if let Some(usage) = chunk.usage {
            self.ready.push_back(Ok(ChatChunk::Usage(Usage {
                prompt_tokens: u64::from(usage.prompt_tokens),
                completion_tokens: u64::from(usage.completion_tokens),
                total_tokens: u64::from(usage.total_tokens),
                cost_micros: 0,
            })));
        }
    }

    /// At the end of the stream: the assembled tool calls, or an error if it was cut short.
    fn end(&mut self) {
        self.done = true;
        if !self.finished {
            self.ready.push_back(Err(provider::Error::new(
                "stream_broken",
                "the stream ended without a finish reason",
                true,
            )));
            return;
        }
        for (index, call) in std::mem::take(&mut self.calls) {
            let id = if call.id.is_empty() {
                format!("call_{index}")
            } else {
                call.id
            };
            self.ready.push_back(Ok(ChatChunk::ToolCall(ToolCall {
                id,
                name: call.name,
                arguments: call.arguments,
            })));
        }
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn default_model(&self) -> &str {
        &self.model
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChunkStream, provider::Error> {
        let model = request.model.clone().unwrap_or_else(|| self.model.clone());
        let inner = self
            .client
            .chat()
            .create_stream_byot::<Value, CreateChatCompletionStreamResponse>(body(&request, &model))
            .await
            .map_err(classify)?;
        let assembly = Assembly {
            inner,
            calls: BTreeMap::new(),
            ready: VecDeque::new(),
            finished: false,
            done: false,
            max_arguments: request.max_tool_arguments,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            assembly,
            |mut state| async move {
                loop {
                    if let Some(next) = state.ready.pop_front() {
                        if next.is_err() {
                            state.done = true;
                            state.ready.clear();
                        }
                        return Some((next, state));
                    }
                    if state.done {
                        return None;
                    }
                    match state.inner.next().await {
                        Some(Ok(chunk)) => state.take(chunk),
                        Some(Err(e)) => {
                            state.done = true;
                            return Some((Err(classify(e)), state));
                        }
                        None => state.end(),
                    }
                }
            },
        )))
    }
}
