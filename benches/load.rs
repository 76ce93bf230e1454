//! A load driver against the real server: starts the release `dgidgi` binary on a fresh
//! SQLite file (port 0, loopback only), creates a tenant and a project through the API,
//! then sends authenticated `GET /api/v1/projects/:id` from many connections for a fixed
//! time and reports throughput and latency percentiles.
//!
//! `cargo bench --bench load` (env: LOAD_SECS, LOAD_CONCURRENCY, LOAD_WORKERS, LOAD_DB=postgres-url)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    port: u16,
    operator_key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(workers: usize) -> Server {
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

async fn post_json(client: &reqwest::Client, url: &str, key: &str, body: Value) -> Value {
    let res = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let secs: u64 = env_or("LOAD_SECS", 10);
    let concurrency: usize = env_or("LOAD_CONCURRENCY", 32);
    let workers: usize = env_or("LOAD_WORKERS", 1);
    let server = start_server(workers);
    let base = format!("http://127.0.0.1:{}", server.port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let tenant = post_json(
            &client,
            &format!("{base}/api/v1/tenants"),
            &server.operator_key,
            json!({ "name": "load" }),
        )
        .await;
        let key = tenant["data"]["api_key"]["key"]
            .as_str()
            .unwrap()
            .to_string();
        let project = post_json(
            &client,
            &format!("{base}/api/v1/projects"),
            &key,
            json!({ "name": "load target" }),
        )
        .await;
        let url = format!(
            "{base}/api/v1/projects/{}",
            project["data"]["id"].as_str().unwrap()
        );

        // Warm up connections and caches.
        for _ in 0..200 {
            client
                .get(&url)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                tokio::spawn(async move {
                    let mut latencies_us = Vec::with_capacity(1 << 16);
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match client.get(&url).bearer_auth(&key).send().await {
                            Ok(res) if res.status() == 200 => {
                                res.bytes().await.unwrap();
                                latencies_us.push(t.elapsed().as_micros() as u32);
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies_us, errors)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (latencies, e) = task.await.unwrap();
            all.extend(latencies);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        println!("GET /api/v1/projects/:id, authenticated with an API key");
        println!(
            "  server workers: {workers}, connections: {concurrency}, duration: {elapsed:.1} s"
        );
        println!("  requests: {} ok, {errors} failed", all.len());
        println!("  throughput: {:.0} req/s", all.len() as f64 / elapsed);
        println!(
            "  latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            percentile(&all, 0.99),
            percentile(&all, 1.0)
        );
    });
}
