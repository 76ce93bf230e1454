//! The offline provider: deterministic, no network, no key. It lets the quick start and
//! demos run anywhere; its answers say plainly that no LLM produced them.

use async_trait::async_trait;
use dgidgi_actors::provider::{
    ChatChunk, ChatMessage, ChatRequest, ChunkStream, LlmProvider, ProviderError, Usage,
};
use futures_util::StreamExt;

pub const OFFLINE: &str = "offline";

/// `token_delay` paces its tokens (zero: all at once), so that benchmarks can measure the
/// runtime against a provider of known speed without any HTTP in between.
#[derive(Default)]
pub struct OfflineProvider {
    pub token_delay: std::time::Duration,
}

#[async_trait]
impl LlmProvider for OfflineProvider {
    fn default_model(&self) -> &str {
        "offline-echo-1"
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChunkStream, ProviderError> {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                ChatMessage::User { content } => Some(content.as_str()),
                _ => None,
            })
            .unwrap_or("");
        let answer = format!(
            "[offline provider: no LLM is configured, so this answer is a fixed echo] You asked: {last_user}"
        );
        let prompt_tokens: u64 = request.messages.iter().map(|m| words(m) as u64).sum();
        let mut chunks: Vec<Result<ChatChunk, ProviderError>> = answer
            .split_inclusive(' ')
            .map(|piece| Ok(ChatChunk::Delta(piece.to_string())))
            .collect();
        let completion_tokens = chunks.len() as u64;
        chunks.push(Ok(ChatChunk::Usage(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
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
