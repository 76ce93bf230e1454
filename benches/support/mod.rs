//! What the load drivers share: starting the release `dgidgi` binary on a fresh database,
//! JSON calls, percentiles. The fake OpenAI server, fresh PostgreSQL databases and the SSE
//! reader are `dgidgi-testkit`'s, the same the integration tests use.

// Each bench uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use dgidgi_testkit::{sse, FreshDatabase};
use serde_json::Value;

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

/// Starts `dgidgi serve` with `env` on top of large rate limits, on a fresh database (it
/// prints the operator key).
pub fn start_server(workers: usize, env: &[(&str, &str)]) -> Server {
    start_node(workers, env, true)
}

/// Starts `dgidgi serve` with `env` on top of large rate limits; `first`: on a fresh
/// database, whose operator key it reads (another node of a cluster prints none).
pub fn start_node(workers: usize, env: &[(&str, &str)], first: bool) -> Server {
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
        // Thousands of streams of one key at once (S3): no per-key or per-tenant cap.
        .env("DGIDGI__STREAMS__MAX_PER_KEY", huge)
        .env("DGIDGI__STREAMS__MAX_PER_TENANT", huge)
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
    // LOAD_LOG=<file> keeps the server's log (appended), else it is dropped.
    let log = std::env::var("LOAD_LOG").ok();
    std::thread::spawn(move || {
        match log.and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        }) {
            Some(mut file) => std::io::copy(&mut stderr, &mut file),
            None => std::io::copy(&mut stderr, &mut std::io::sink()),
        }
    });
    let mut stdout = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while first && !stdout.contains("chy_op_") {
        out.read_line(&mut stdout).unwrap();
    }
    let operator_key = stdout
        .lines()
        .find(|l| l.starts_with("chy_op_"))
        .unwrap_or_default()
        .to_string();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
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

/// Reads SSE frames from `res`, calling `each(now, event, data)`, until it returns true.
pub async fn read_sse(
    res: &mut reqwest::Response,
    mut each: impl FnMut(Instant, &str, &Value) -> bool,
) {
    sse::read_until(res, |now, frame| each(now, &frame.event, &frame.data)).await;
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
pub async fn fresh_postgres() -> Option<FreshDatabase> {
    let base = std::env::var("LOAD_POSTGRES").ok()?;
    let db = FreshDatabase::create(&format!("{base}/postgres"), "bench")
        .await
        .expect("LOAD_POSTGRES is reachable");
    Some(db)
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
