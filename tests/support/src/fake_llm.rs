//! An OpenAI-compatible chat server on 127.0.0.1 port 0, reached through the runtime's
//! real async-openai client: each request takes the next scripted answer (streamed text,
//! tool calls, an error status, a stall, a malformed or cut stream, or numbered tokens at a
//! steady pace) and is recorded, so callers can see what the runtime sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::{Bytes, Data, Json};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Clone)]
pub enum Script {
    /// Streams these pieces of text, then finishes.
    Text(Vec<&'static str>),
    /// Streams these pieces with a pause before each, then finishes.
    Slow(Vec<&'static str>, Duration),
    /// Streams `count` tokens `t0 `, `t1 `... one every `gap`, then finishes; the time each
    /// was sent is kept ([`FakeLlm::sent`]), for latency measurements.
    Numbered { count: usize, gap: Duration },
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
    /// Answers with the content of the request's last tool message (a model that reports
    /// what its tool said), or "no tool result".
    EchoToolResult,
}

/// When each token of the latest [`Script::Numbered`] answer was sent, by index.
pub type Sent = Arc<Mutex<Vec<Option<Instant>>>>;

struct State {
    script: Mutex<VecDeque<Script>>,
    /// The answer when nothing is scripted.
    default: Script,
    requests: Mutex<Vec<Value>>,
    sent: Sent,
}

pub struct FakeLlm {
    /// The OpenAI base URL (`http://127.0.0.1:PORT/v1`).
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

fn text(piece: &str) -> Bytes {
    chunk(json!({ "role": "assistant", "content": piece }), None)
}

fn texts(pieces: &[&'static str]) -> Vec<Bytes> {
    pieces.iter().map(|p| text(p)).collect()
}

fn sse(
    body: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(body)
}

/// `frames`, each after `pause`.
fn paced(
    frames: Vec<Bytes>,
    pause: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    futures_util::stream::iter(frames).then(move |frame| async move {
        actix_web::rt::time::sleep(pause).await;
        Ok(frame)
    })
}

/// A finished answer: `frames`, the finish reason, the usage and `[DONE]`.
fn finished(mut frames: Vec<Bytes>, reason: &str) -> Vec<Bytes> {
    frames.push(chunk(json!({}), Some(reason)));
    frames.push(usage());
    frames
}

/// The content of the last `tool` message of a request.
fn last_tool_result(request: Option<&Value>) -> String {
    request
        .and_then(|r| r["messages"].as_array())
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "tool"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("no tool result")
        .to_string()
}

async fn completions(state: Data<State>, body: Json<Value>) -> HttpResponse {
    state.requests.lock().unwrap().push(body.0);
    let script = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default.clone());
    match script {
        Script::EchoToolResult => {
            let said = last_tool_result(state.requests.lock().unwrap().last());
            sse(futures_util::stream::iter(
                finished(vec![text(&said)], "stop").into_iter().map(Ok),
            ))
        }
        Script::Text(pieces) => sse(futures_util::stream::iter(
            finished(texts(&pieces), "stop").into_iter().map(Ok),
        )),
        Script::Slow(pieces, pause) => sse(paced(finished(texts(&pieces), "stop"), pause)),
        Script::Numbered { count, gap } => {
            let sent = state.sent.clone();
            *sent.lock().unwrap() = vec![None; count];
            let mut frames: Vec<Bytes> = (0..count).map(|i| text(&format!("t{i} "))).collect();
            frames = finished(frames, "stop");
            sse(
                futures_util::stream::iter(frames.into_iter().enumerate()).then(
                    move |(i, frame)| {
                        let sent = sent.clone();
                        async move {
                            actix_web::rt::time::sleep(gap).await;
                            if let Some(at) = sent.lock().unwrap().get_mut(i) {
                                *at = Some(Instant::now());
                            }
                            Ok(frame)
                        }
                    },
                ),
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
            sse(
                paced(texts(&pieces), pause).chain(futures_util::stream::once(async move {
                    actix_web::rt::time::sleep(pause).await;
                    Err(actix_web::error::ErrorInternalServerError("cut"))
                })),
            )
        }
    }
}

impl FakeLlm {
    /// Starts the server on the current actix system; unscripted requests get `ok`.
    pub async fn start() -> Self {
        Self::answering(Script::Text(vec!["ok"]))
    }

    /// Starts the server on the current actix system; unscripted requests get `default`.
    pub fn answering(default: Script) -> Self {
        let state = Data::new(State {
            script: Mutex::default(),
            default,
            requests: Mutex::default(),
            sent: Sent::default(),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(web::JsonConfig::default().limit(16 << 20))
                .route("/v1/chat/completions", web::post().to(completions))
        })
        .on_connect(|conn, _| {
            // Each token leaves at once (latency measurements read the send times).
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("a loopback port");
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

    /// Queues `script` as the answer to a coming request.
    pub fn push(&self, script: Script) {
        self.state.script.lock().unwrap().push_back(script);
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The send times of the latest numbered answer's tokens.
    pub fn sent(&self) -> Vec<Option<Instant>> {
        self.state.sent.lock().unwrap().clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
