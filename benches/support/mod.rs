//! What the load drivers share: starting the release `dgidgi` binary on a fresh database,
//! JSON calls, percentiles.

// Each bench uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::{Bytes, Data};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub operator_key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dgidgi serve` with `env` on top of large rate limits.
pub fn start_server(workers: usize, env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("LOAD_DB")
        .unwrap_or_else(|_| format!("sqlite://{}/load.db", dir.path().display()));
    let huge = "1000000000";
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgidgi"))
        .arg("serve")
        .env("DGIDGI__DATABASE__URL", db)
        .env("DGIDGI__SERVER__PORT", "0")
        .env("DGIDGI__SERVER__WORKERS", workers.to_string())
        .env("DGIDGI__PLANS__FREE__RATE_LIMIT__PER_KEY", huge)
        .env("DGIDGI__PLANS__FREE__RATE_LIMIT__PER_TENANT", huge)
        .env("DGIDGI__PLANS__ENTERPRISE__RATE_LIMIT__PER_KEY", huge)
        .env("DGIDGI__PLANS__ENTERPRISE__RATE_LIMIT__PER_TENANT", huge)
        .env("RUST_LOG", "warn,dgidgi=info")
        // PostgreSQL takes its secrets from configuration only (SQLite uses its key file).
        .env(
            "DGIDGI__AUTH__JWT_SECRET",
            "bench-jwt-secret-bench-jwt-secret-0000",
        )
        .env(
            "DGIDGI__SECRETS__KEY",
            "YmVuY2gtc2VhbGluZy1rZXktMzItYnl0ZXMtbG9uZyE=",
        )
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dgidgi binary starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "dgidgi exited before serving"
        );
        if let Some(at) = line.find("port=") {
            break line[at + 5..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let mut stdout = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !stdout.contains("chy_op_") {
        out.read_line(&mut stdout).unwrap();
    }
    let operator_key = stdout
        .lines()
        .find(|l| l.starts_with("chy_op_"))
        .unwrap()
        .to_string();
    Server {
        child,
        port,
        operator_key,
        _dir: dir,
    }
}

pub async fn post_json(client: &reqwest::Client, url: &str, key: &str, body: Value) -> Value {
    let res = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// When the fake provider sent each token, by index.
pub type Sent = Arc<Mutex<Vec<Option<Instant>>>>;

async fn completions(sent: Data<Sent>, tokens: Data<(usize, u64)>) -> HttpResponse {
    let (count, gap) = **tokens;
    let sent = sent.get_ref().clone();
    sent.lock().unwrap().clear();
    sent.lock().unwrap().resize(count, None);
    let frames = futures_util::stream::iter(0..=count).then(move |i| {
        let sent = sent.clone();
        async move {
            actix_web::rt::time::sleep(Duration::from_millis(gap)).await;
            let body = if i < count {
                sent.lock().unwrap()[i] = Some(Instant::now());
                json!({ "id": "b", "object": "chat.completion.chunk", "created": 1, "model": "bench",
                        "choices": [{ "index": 0, "delta": { "content": format!("t{i} ") }, "finish_reason": null }] })
            } else {
                json!({ "id": "b", "object": "chat.completion.chunk", "created": 1, "model": "bench",
                        "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] })
            };
            let done = if i == count { "data: [DONE]\n\n" } else { "" };
            Ok::<_, actix_web::Error>(Bytes::from(format!("data: {body}\n\n{done}")))
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(frames)
}

/// Starts (on the current actix system) an OpenAI-compatible server that streams `tokens`
/// tokens (`t0 `, `t1 `...) one every `gap_ms`; returns its base URL and the send times.
pub fn paced_provider(tokens: usize, gap_ms: u64) -> (String, Sent) {
    let sent: Sent = Arc::new(Mutex::new(Vec::new()));
    let (shared, settings) = (sent.clone(), (tokens, gap_ms));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(Data::new(shared.clone()))
            .app_data(Data::new(settings))
            .route("/v1/chat/completions", web::post().to(completions))
    })
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let url = format!("http://{}/v1", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    (url, sent)
}

/// Reads SSE frames from `res`, calling `each(now, event, data)`, until it returns true.
pub async fn read_sse(
    res: &mut reqwest::Response,
    mut each: impl FnMut(Instant, &str, &Value) -> bool,
) {
    let mut buffer = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let kind = frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            if each(now, kind, &data) {
                return;
            }
        }
    }
}

/// The token index in a `t<i> ` delta.
pub fn token_index(data: &Value) -> Option<usize> {
    data["delta"]
        .as_str()?
        .trim()
        .strip_prefix('t')?
        .parse()
        .ok()
}

/// The resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A database of its own on the PostgreSQL server named by `LOAD_POSTGRES`
/// (`postgres://user@host:port`), dropped afterwards; `None` without it (SQLite).
pub struct FreshPostgres {
    pub url: String,
    base: String,
    name: String,
}

impl FreshPostgres {
    pub async fn from_env() -> Option<Self> {
        use sqlx::Connection;
        let base = std::env::var("LOAD_POSTGRES").ok()?;
        let name = format!("dgidgi_bench_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .expect("LOAD_POSTGRES is reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        Some(Self {
            url: format!("{base}/{name}"),
            base,
            name,
        })
    }
}

impl Drop for FreshPostgres {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&format!("{base}/postgres")).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

#[repr(C)]
struct RLimit {
    current: u64,
    max: u64,
}

extern "C" {
    fn getrlimit(resource: i32, limit: *mut RLimit) -> i32;
    fn setrlimit(resource: i32, limit: *const RLimit) -> i32;
}

/// Raises this process's open-file limit to its hard limit (the server started from it
/// inherits it): thousands of streams need thousands of sockets on each side.
pub fn raise_open_files() {
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = RLimit { current: 0, max: 0 };
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut limit) == 0 {
            limit.current = limit.max;
            setrlimit(RLIMIT_NOFILE, &limit);
        }
    }
}
