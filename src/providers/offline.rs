//! The offline provider: deterministic, no network, no key. It lets the quick start and
//! demos run anywhere; its answers say plainly that no LLM produced them.

use async_trait::async_trait;
use dgidgi_actors::provider::{
    ChatChunk, ChatMessage, ChatRequest, ChunkStream, LlmProvider, ProviderError, Usage,
};

pub const OFFLINE: &str = "offline";

pub struct OfflineProvider;

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
        Ok(Box::pin(futures_util::stream::iter(chunks)))
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
