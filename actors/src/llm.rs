//! What agent runs and chat replies share: writing a stream's events (persist, then
//! publish; tokens batched) and one streamed completion across providers, with retries of
//! stalled streams and fallbacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use serde_json::json;

use crate::events::{Event, EventHub, EventLog, Fence, StreamEvent};
use crate::provider::{self, ChatChunk, ChatRequest, LlmProvider, ProviderSet, ToolCall, Usage};
use crate::run::{self, RunSettings};
use crate::store::retrying;

pub use crate::time::now;

/// Writes a stream's events: assigns seqs, persists, then publishes. Tokens are batched.
pub struct EventWriter {
    stream: String,
    next_seq: i64,
    pending: Vec<StreamEvent>,
    last_flush: Instant,
    log: Arc<dyn EventLog>,
    hub: EventHub,
    flush_every: Duration,
    flush_batch: usize,
    store_retry: Duration,
    /// The text of the token events written since the last `take_streamed`.
    streamed: String,
    /// The claim a run's writes carry (none for a session's).
    fence: Option<Fence>,
}

impl EventWriter {
    /// A writer for `stream`, whose last stored event is `last_seq`.
    pub fn new(
        stream: &str,
        last_seq: i64,
        log: Arc<dyn EventLog>,
        hub: EventHub,
        settings: &RunSettings,
    ) -> Self {
        Self {
            stream: stream.into(),
            next_seq: last_seq + 1,
            pending: Vec::new(),
            last_flush: Instant::now(),
            log,
            hub,
            flush_every: settings.flush_every,
            flush_batch: settings.flush_batch,
            store_retry: settings.store_retry,
            streamed: String::new(),
            fence: None,
        }
    }

    /// The claim this writer's writes carry, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// The same writer, its appends carrying `fence`.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The seq of the last event written (or queued).
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Goes on after event `seq`, which another writer of the stream wrote (a chat reply's
    /// run, while this writer waited for it).
    pub fn skip_to(&mut self, seq: i64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// The next event, with its seq; the caller persists it.
    pub fn event(&mut self, event: &impl Event) -> StreamEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        StreamEvent {
            seq,
            kind: event.kind().into(),
            data: event.data(),
            created_at: now(),
        }
    }

    /// Queues a token event carrying `delta`; writes the batch when it is big or old enough.
    pub async fn token(&mut self, delta: &str, token: &impl Event) -> Result<(), run::Failure> {
        self.streamed.push_str(delta);
        let event = self.event(token);
        self.pending.push(event);
        if self.pending.len() >= self.flush_batch || self.last_flush.elapsed() >= self.flush_every {
            self.flush().await?;
        }
        Ok(())
    }

    /// Persists then publishes what is queued.
    pub async fn flush(&mut self) -> Result<(), run::Failure> {
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let (log, stream, pending) = (&self.log, &self.stream, &self.pending);
        let fence = self.fence.as_ref();
        retrying(self.store_retry, || {
            log.append_events(stream, pending, fence)
        })
        .await?;
        self.hub.publish(&self.stream, &self.pending);
        self.pending.clear();
        Ok(())
    }

    /// How long writes of this stream are retried through a database outage.
    pub fn store_retry(&self) -> Duration {
        self.store_retry
    }

    /// Writes one event at once (after what is queued).
    pub async fn emit(&mut self, event: &impl Event) -> Result<(), run::Failure> {
        self.queue(event);
        self.flush().await
    }

    /// Queues one event: it is written with the next batch (the next token flush, or the
    /// write that takes what is queued: [`EventWriter::take_pending`]).
    pub fn queue(&mut self, event: &impl Event) {
        let event = self.event(event);
        self.pending.push(event);
    }

    /// What is queued and not yet written, for a write that saves it with its own change
    /// (and then publishes it: [`EventWriter::publish_all`]).
    pub fn take_pending(&mut self) -> Vec<StreamEvent> {
        std::mem::take(&mut self.pending)
    }

    pub fn publish(&self, event: &StreamEvent) {
        self.publish_all(std::slice::from_ref(event));
    }

    pub fn publish_all(&self, events: &[StreamEvent]) {
        self.hub.publish(&self.stream, events);
    }

    /// Ends the live channel of the stream (after its terminal event).
    pub fn end(&self) {
        self.hub.end(&self.stream);
    }

    /// The text of the tokens written since the last call (a reply's partial answer).
    pub fn take_streamed(&mut self) -> String {
        std::mem::take(&mut self.streamed)
    }

    /// Whether tokens wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

pub struct Answer {
    pub provider: String,
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// One completion, streamed as `token(delta)` events: each provider in order, each retried
/// with backoff while its errors are retryable and nothing has been streamed yet.
pub async fn complete<E: Event>(
    set: &dyn ProviderSet,
    settings: &RunSettings,
    providers: &[String],
    request: ChatRequest,
    token: &(impl Fn(&str) -> E + Sync),
    log: &mut EventWriter,
) -> Result<Answer, run::Failure> {
    let mut failures = Vec::new();
    for name in providers {
        let Some(provider) = set.get(name) else {
            failures.push(provider::Error::new(
                "unknown_provider",
                format!("no provider named '{name}' is configured"),
                false,
            ));
            continue;
        };
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| provider.default_model().to_string());
        let mut attempt = 0;
        loop {
            let mut answer = Answer {
                provider: name.clone(),
                model: model.clone(),
                text: String::new(),
                tool_calls: Vec::new(),
                usage: Usage::default(),
            };
            let failure = match stream_answer(
                &*provider,
                request.clone(),
                &mut answer,
                token,
                log,
                settings,
            )
            .await
            {
                Ok(()) => {
                    count_tokens(&answer);
                    return Ok(answer);
                }
                Err((error, streamed)) if streamed => {
                    // Tokens of this answer are already out: a retry would repeat them.
                    return Err(provider_failure(name, error));
                }
                Err((error, _)) => error,
            };
            tracing::warn!(provider = %name, attempt, error = %failure, "provider call failed");
            if failure.retryable && attempt < settings.max_retries {
                tokio::time::sleep(settings.retry_base * 2u32.pow(attempt)).await;
                attempt += 1;
                continue;
            }
            failures.push(failure);
            break;
        }
    }
    let last = failures.pop().unwrap_or_else(|| {
        provider::Error::new("no_provider", "the agent names no provider", false)
    });
    let mut error = provider_failure(providers.last().map_or("", String::as_str), last);
    if !failures.is_empty() {
        error.details = Some(json!({ "earlier_failures": failures }));
    }
    Err(error)
}

/// LLM tokens in and out, by provider and model.
fn count_tokens(answer: &Answer) {
    let labels = [
        ("provider", answer.provider.clone()),
        ("model", answer.model.clone()),
    ];
    metrics::counter!("dgidgi_llm_tokens_in_total", &labels).increment(answer.usage.prompt_tokens);
    metrics::counter!("dgidgi_llm_tokens_out_total", &labels)
        .increment(answer.usage.completion_tokens);
}

fn provider_failure(provider: &str, error: provider::Error) -> run::Failure {
    run::Failure {
        code: format!("provider_{}", error.code),
        message: error.message.clone(),
        details: Some(json!({ "provider": provider, "status": error.status })),
    }
}

/// What waiting on a provider stream gave.
enum Next {
    Item(Option<Result<ChatChunk, provider::Error>>),
    /// Nothing ready at once (tokens are waiting to be written).
    Pause,
    /// Nothing for the whole start or idle timeout.
    Stalled,
}

/// Reads one streamed answer into `answer`. The error says whether any token went out.
async fn stream_answer<E: Event>(
    provider: &dyn LlmProvider,
    request: ChatRequest,
    answer: &mut Answer,
    token: &(impl Fn(&str) -> E + Sync),
    log: &mut EventWriter,
    settings: &RunSettings,
) -> Result<(), (provider::Error, bool)> {
    let stalled = |waited: Duration| {
        let message = format!("no data from the provider for {} ms", waited.as_millis());
        provider::Error::new("timeout", message, true)
    };
    let request_max_tool_arguments = request.max_tool_arguments;
    let mut stream =
        match tokio::time::timeout(settings.start_timeout, provider.stream_chat(request)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err((e, false)),
            Err(_) => return Err((stalled(settings.start_timeout), false)),
        };
    // Until the first chunk the provider may still be connecting (and its client retrying):
    // the start timeout applies; between chunks, the idle one.
    let mut waited = settings.start_timeout;
    let mut idle_until = tokio::time::Instant::now() + waited;
    loop {
        // Tokens that wait are written as soon as the provider pauses: a chunk that is
        // ready now joins the batch; otherwise the batch goes out before we wait. Bursts
        // are thus batched (up to flush_batch / flush_every) and paced streams are not delayed.
        let next = if !log.has_pending() {
            match tokio::time::timeout_at(idle_until, stream.next()).await {
                Ok(item) => Next::Item(item),
                Err(_) => Next::Stalled,
            }
        } else {
            match stream.next().now_or_never() {
                Some(item) => Next::Item(item),
                None => Next::Pause,
            }
        };
        let streamed = !answer.text.is_empty();
        match next {
            Next::Stalled => return Err((stalled(waited), streamed)),
            Next::Pause => {
                log.flush().await.map_err(|e| {
                    (
                        provider::Error::new("store_failure", e.message, false),
                        streamed,
                    )
                })?;
            }
            Next::Item(None) => return Ok(()),
            Next::Item(Some(Err(e))) => return Err((e, streamed)),
            Next::Item(Some(Ok(chunk))) => {
                waited = settings.idle_timeout;
                idle_until = tokio::time::Instant::now() + waited;
                match chunk {
                    ChatChunk::Delta(delta) if delta.is_empty() => {}
                    ChatChunk::Delta(delta)
                        if answer.text.len() + delta.len() > settings.max_step_output =>
                    {
                        let message = format!(
                            "the answer passed {} bytes (llm.max_step_output_bytes)",
                            settings.max_step_output
                        );
                        return Err((
                            provider::Error::new("output_too_large", message, false),
                            streamed,
                        ));
                    }
                    ChatChunk::ToolCall(call)
                        if call.arguments.len() > request_max_tool_arguments =>
                    {
                        let message = format!(
                            "a tool call's arguments passed {} bytes (llm.max_tool_arguments_bytes)",
                            request_max_tool_arguments
                        );
                        return Err((
                            provider::Error::new("tool_arguments_too_large", message, false),
                            streamed,
                        ));
                    }
                    ChatChunk::Delta(delta) => {
                        answer.text.push_str(&delta);
                        log.token(&delta, &token(&delta)).await.map_err(|e| {
                            (
                                provider::Error::new("store_failure", e.message, false),
                                true,
                            )
                        })?;
                    }
                    ChatChunk::ToolCall(call) => answer.tool_calls.push(call),
                    ChatChunk::Usage(usage) => answer.usage = usage,
                }
            }
        }
    }
}
