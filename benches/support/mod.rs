//! What the load drivers share: starting the release `dgidgi` binary on a fresh database,
//! JSON calls, percentiles.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Server {
    child: Child,
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
        .env("DGIDGI__RATE_LIMIT__PLANS__FREE__PER_KEY", huge)
        .env("DGIDGI__RATE_LIMIT__PLANS__FREE__PER_TENANT", huge)
        .env("RUST_LOG", "warn,dgidgi=info")
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
