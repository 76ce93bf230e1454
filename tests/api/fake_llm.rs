//! An OpenAI-compatible chat server for tests, on 127.0.0.1 port 0: each request takes the
//! next scripted reply (streamed text, tool calls, an error status, a stall, a malformed or
//! cut stream) and is recorded, so tests can see what the runtime sent.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::web::{Bytes, Data, Json};
use actix_web::{web, App, HttpResponse, HttpServer};
use figment::providers::Serialized;
use figment::Figment;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};

/// One scripted answer.
#[derive(Clone)]
pub enum Script {
    /// Streams these pieces of text, then finishes.
    Text(Vec<&'static str>),
    /// Streams these pieces with a pause before each, then finishes.
    Slow(Vec<&'static str>, Duration),
    /// Asks for these tool calls (name, arguments).
    Tools(Vec<(&'static str, Value)>),
    /// Answers this status with this body.
    Status(u16, Value),
    /// Streams these pieces, then sends nothing more and never ends.
    Stall(Vec<&'static str>),
    /// Sends a chunk that is not JSON.
    Malformed,
    /// Streams these pieces, then drops the connection.
    Cut(Vec<&'static str>),
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<Value>>,
}

pub struct FakeLlm {
    pub base_url: String,
    state: Data<State>,
    handle: actix_web::dev::ServerHandle,
}

fn chunk(delta: Value, finish: Option<&str>) -> Bytes {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
    });
    Bytes::from(format!("data: {body}\n\n"))
}

fn usage() -> Bytes {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
        "choices": [], "usage": { "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 }
    });
    Bytes::from(format!("data: {body}\n\ndata: [DONE]\n\n"))
}

fn texts(pieces: &[&'static str]) -> Vec<Bytes> {
    pieces
        .iter()
        .map(|p| chunk(json!({ "role": "assistant", "content": p }), None))
        .collect()
}

fn sse(
    body: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(body)
}

async fn completions(state: Data<State>, body: Json<Value>) -> HttpResponse {
    state.requests.lock().unwrap().push(body.0);
    let script = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Script::Text(vec!["ok"]));
    let finished = |mut frames: Vec<Bytes>, reason: &str| {
        frames.push(chunk(json!({}), Some(reason)));
        frames.push(usage());
        frames
    };
    match script {
        Script::Text(pieces) => sse(futures_util::stream::iter(
            finished(texts(&pieces), "stop").into_iter().map(Ok),
        )),
        Script::Slow(pieces, pause) => {
            let frames = finished(texts(&pieces), "stop");
            sse(
                futures_util::stream::iter(frames).then(move |frame| async move {
                    actix_web::rt::time::sleep(pause).await;
                    Ok(frame)
                }),
            )
        }
        Script::Tools(calls) => {
            let frames: Vec<Bytes> = calls
                .iter()
                .enumerate()
                .flat_map(|(i, (name, args))| {
                    let text = args.to_string();
                    let (head, tail) = text.split_at(text.len() / 2);
                    // Arguments arrive in two pieces, as real servers stream them.
                    vec![
                        chunk(json!({ "tool_calls": [{ "index": i, "id": format!("call_{i}"), "type": "function",
                            "function": { "name": name, "arguments": head } }] }), None),
                        chunk(json!({ "tool_calls": [{ "index": i, "function": { "arguments": tail } }] }), None),
                    ]
                })
                .collect();
            sse(futures_util::stream::iter(
                finished(frames, "tool_calls").into_iter().map(Ok),
            ))
        }
        Script::Status(status, body) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
        }
        Script::Stall(pieces) => sse(futures_util::stream::iter(
            texts(&pieces).into_iter().map(Ok),
        )
        .chain(futures_util::stream::pending())),
        Script::Malformed => sse(futures_util::stream::iter(vec![Ok(Bytes::from(
            "data: {not json\n\n",
        ))])),
        Script::Cut(pieces) => {
            // Paced, so the head and the first pieces are on the wire before the cut.
            let pause = Duration::from_millis(30);
            let frames = futures_util::stream::iter(texts(&pieces)).then(move |frame| async move {
                actix_web::rt::time::sleep(pause).await;
                Ok(frame)
            });
            sse(frames.chain(futures_util::stream::once(async move {
                actix_web::rt::time::sleep(pause).await;
                Err(actix_web::error::ErrorInternalServerError("cut"))
            })))
        }
    }
}

impl FakeLlm {
    pub async fn start() -> Self {
        let state = Data::new(State::default());
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/v1/chat/completions", web::post().to(completions))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let base_url = format!("http://{}/v1", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base_url,
            state,
            handle,
        }
    }

    pub fn push(&self, script: Script) {
        self.state.script.lock().unwrap().push_back(script);
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// The application with two OpenAI-compatible providers, `fake` (the default) and
/// `backup`, both served by one [`FakeLlm`].
pub struct LlmApp {
    pub app: TestApp,
    pub llm: FakeLlm,
}

impl std::ops::Deref for LlmApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// The provider settings that point at `llm`, for an in-process app or (as env) a process.
pub fn provider_settings(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![
        ("providers.fake.kind", "openai".into()),
        ("providers.fake.base_url", llm.base_url.clone()),
        ("providers.fake.model", "fake-model".into()),
        ("providers.backup.kind", "openai".into()),
        ("providers.backup.base_url", llm.base_url.clone()),
        ("providers.backup.model", "backup-model".into()),
        ("llm.default_provider", "fake".into()),
        ("llm.retry_base_ms", "5".into()),
        ("llm.idle_timeout_ms", "400".into()),
    ]
}

impl LlmApp {
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |f| f).await
    }

    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(Figment) -> Figment,
    ) -> Option<Self> {
        let llm = FakeLlm::start().await;
        let settings = provider_settings(&llm);
        let app = TestApp::spawn(backend, move |mut f| {
            for (key, value) in settings {
                f = match value.parse::<u64>() {
                    Ok(n) => f.merge(Serialized::default(key, n)),
                    Err(_) => f.merge(Serialized::default(key, value)),
                };
            }
            configure(f)
        })
        .await?;
        Some(Self { app, llm })
    }

    pub async fn stop(self) {
        self.app.stop().await;
        self.llm.stop().await;
    }
}
