//! The offline provider: deterministic, no network, no key. It lets the quick start and
//! demos run anywhere; its answers say plainly that no LLM produced them.

use async_trait::async_trait;
use dgidgi_actors::provider::{
    self, ChatChunk, ChatMessage, ChatRequest, ChunkStream, LlmProvider, ToolCall, Usage,
};
use futures_util::StreamExt;

pub const OFFLINE: &str = "offline";

/// `token_delay` paces its tokens (zero: all at once), so that benchmarks can measure the
/// runtime against a provider of known speed without any HTTP in between, and demos can
/// show a cancel. With `tool_calls`, an agent's first step asks for `write_file` (the
/// agent must offer it), so tools and artifacts show without an LLM. A question or goal
/// containing `[fail]` fails, so that `agent.failed` can be shown too.
#[derive(Default)]
pub struct OfflineProvider {
    pub token_delay: std::time::Duration,
    pub tool_calls: bool,
}

/// The file the offline provider writes when it calls a tool.
pub const OFFLINE_NOTES: &str = "offline-notes.md";

#[async_trait]
impl LlmProvider for OfflineProvider {
    fn default_model(&self) -> &str {
        "offline-echo-1"
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChunkStream, provider::Error> {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                ChatMessage::User { content } => Some(content.as_str()),
                _ => None,
            })
            .unwrap_or("");
        if last_user.contains("[fail]") {
            return Err(provider::Error::new(
                "bad_request",
                "the offline provider fails what asks it to ([fail])",
                false,
            ));
        }
        let call_tool = self.tool_calls
            && request.tools.iter().any(|t| t.name == "write_file")
            && !request
                .messages
                .iter()
                .any(|m| matches!(m, ChatMessage::Tool { .. }));
        let answer = if call_tool {
            format!("[offline provider] Writing my notes to {OFFLINE_NOTES}. ")
        } else {
            format!(
                "[offline provider: no LLM is configured, so this answer is a fixed echo] You asked: {last_user}"
            )
        };
        let prompt_tokens: u64 = request.messages.iter().map(|m| words(m) as u64).sum();
        let mut chunks: Vec<Result<ChatChunk, provider::Error>> = answer
            .split_inclusive(' ')
            .map(|piece| Ok(ChatChunk::Delta(piece.to_string())))
            .collect();
        let completion_tokens = chunks.len() as u64;
        if call_tool {
            let notes = format!("# Notes\n\nThe goal: {last_user}\n");
            chunks.push(Ok(ChatChunk::ToolCall(ToolCall {
                id: "call_offline_1".into(),
                name: "write_file".into(),
                arguments: serde_json::json!({ "path": OFFLINE_NOTES, "content": notes })
                    .to_string(),
            })));
        }
        chunks.push(Ok(ChatChunk::Usage(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            cost_micros: 0,
        })));
        let delay = self.token_delay;
        if delay.is_zero() {
            return Ok(Box::pin(futures_util::stream::iter(chunks)));
        }
        // Token k leaves at start + (k + 1) x delay: a late wake-up does not push the rest.
        let start = tokio::time::Instant::now();
        let paced = futures_util::stream::iter(chunks.into_iter().enumerate()).then(
            move |(k, chunk)| async move {
                if matches!(chunk, Ok(ChatChunk::Delta(_))) {
                    tokio::time::sleep_until(start + delay * (k as u32 + 1)).await;
                }
                chunk
            },
        );
        Ok(Box::pin(paced))
    }
}

fn words(message: &ChatMessage) -> usize {
    let text = match message {
        ChatMessage::System { content }
        | ChatMessage::User { content }
        | ChatMessage::Tool { content, .. } => content,
        ChatMessage::Assistant { content, .. } => content,
    };
    text.split_whitespace().count()
}
