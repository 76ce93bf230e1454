//! The load driver: starts the release `dgidgi` binary itself (fresh SQLite file, or a fresh
//! PostgreSQL database with LOAD_POSTGRES, port 0, loopback only), drives it over real HTTP
//! and SSE, and prints one JSON line per scenario. Every loop is bounded in count and time.
//! The LLM is the built-in offline provider with a per-token delay, so the figures measure
//! the runtime, not an HTTP fake.
//!
//! ```sh
//! cargo bench --bench load -- all            # or s1 s2 s3 s4 s5 s6, several at once
//! LOAD_POSTGRES=postgres://postgres@127.0.0.1:5432 cargo bench --bench load -- all
//! LOAD_POSTGRES=... LOAD_NODES=3 cargo bench --bench load -- s1 s3 failover
//! ```
//!
//! S1 run throughput · S2 streaming overhead · S3 concurrent streaming runs · S4 chat
//! fan-out · S5 session actors at rest · S6 authenticated read against /healthz ·
//! failover: kill -9 of a run's node to the next token at a subscriber on another node.
//! Knobs (env): LOAD_SECS (S1, S6), S2_RUNS, S3_N (comma list), S4_SESSIONS,
//! S4_SUBSCRIBERS, S5_N, LOAD_NODES (PostgreSQL: nodes sharing the database; requests
//! and subscriptions are spread over them, a run's stream read on another node than the
//! one it was started on), FAILOVER_RUNS, LOAD_LOG (a file the servers' logs are appended
//! to).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

mod support;
use support::{env_or, percentile, post_json, read_sse, rss_mib, start_node, Server};

const PROVIDER_NOTE: &str = "built-in offline provider inside the server (no HTTP to an LLM)";

/// The servers of one scenario (one, or `LOAD_NODES` sharing one PostgreSQL database),
/// with a tenant on an unlimited plan and a project.
struct Bench {
    nodes: Vec<Server>,
    /// Each node's API base.
    bases: Vec<String>,
    /// The first node's (set-up goes there).
    base: String,
    /// Spreads requests over the nodes.
    next: std::sync::atomic::AtomicUsize,
    env: Vec<(String, String)>,
    client: reqwest::Client,
    key: String,
    project: String,
    _db: Option<dgidgi_testkit::FreshDatabase>,
}

impl Bench {
    async fn start(token_delay_ms: u64, extra: &[(&str, &str)]) -> Self {
        let db = support::fresh_postgres().await;
        let delay = token_delay_ms.to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("DGIDGI__PROVIDERS__OFFLINE__KIND", "offline"),
            ("DGIDGI__PROVIDERS__OFFLINE__TOKEN_DELAY_MS", &delay),
            ("DGIDGI__PLANS__ENTERPRISE__MAX_CONCURRENT_RUNS", "100000"),
            ("DGIDGI__RUNS__MAX_WAIT_SECS", "600"),
            // S3 submits its thousands of runs at once: none is refused for waiting.
            ("DGIDGI__RUNS__MAX_QUEUED_PER_TENANT", "1000000"),
        ];
        if let Some(db) = &db {
            env.push(("DGIDGI__DATABASE__URL", db.url.as_str()));
        }
        env.extend_from_slice(extra);
        let workers = env_or("LOAD_WORKERS", 2usize);
        let count = if db.is_some() {
            env_or("LOAD_NODES", 1usize).max(1)
        } else {
            1
        };
        let mut nodes = vec![start_node(workers, &env, true)];
        for _ in 1..count {
            nodes.push(start_node(workers, &env, false));
        }
        let bases: Vec<String> = nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}/api/v1", n.port))
            .collect();
        let (server, base) = (&nodes[0], bases[0].clone());
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(20_000)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let tenant = post_json(
            &client,
            &format!("{base}/tenants"),
            &server.operator_key,
            json!({ "name": "load", "plan": "enterprise" }),
        )
        .await;
        let key = tenant["data"]["api_key"]["key"]
            .as_str()
            .unwrap()
            .to_string();
        let tenant_id = tenant["data"]["id"].as_str().unwrap();
        let res = client
            .patch(format!("{base}/tenants/{tenant_id}/settings"))
            .bearer_auth(&key)
            .json(&json!({ "max_concurrent_runs": 100000 }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        let project = post_json(
            &client,
            &format!("{base}/projects"),
            &key,
            json!({ "name": "load" }),
        )
        .await;
        let project = project["data"]["id"].as_str().unwrap().to_string();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            nodes,
            bases,
            base,
            next: Default::default(),
            env,
            client,
            key,
            project,
            _db: db,
        }
    }

    async fn agent(&self) -> String {
        let agent = post_json(
            &self.client,
            &format!("{}/agents", self.base),
            &self.key,
            json!({ "name": "bench", "provider": "offline", "config": { "autonomyLevel": "low" } }),
        )
        .await;
        agent["data"]["id"].as_str().unwrap().to_string()
    }

    /// The base of the next node in turn.
    fn node(&self) -> &str {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.bases[n % self.bases.len()]
    }

    async fn execute(&self, agent: &str, goal: &str, wait: bool) -> Value {
        self.execute_on(self.node(), agent, goal, wait).await
    }

    async fn execute_on(&self, base: &str, agent: &str, goal: &str, wait: bool) -> Value {
        let res = self
            .client
            .post(format!("{base}/agents/{agent}/execute"))
            .bearer_auth(&self.key)
            .json(&json!({ "goal": goal, "projectId": self.project, "wait": wait }))
            .send()
            .await;
        match res {
            Ok(res) => res.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// The resident memory of every node together, in MiB.
    fn rss(&self) -> f64 {
        self.nodes.iter().map(|n| rss_mib(n.child.id())).sum()
    }

    /// Node `n` killed (-9) and started again on the same database.
    fn restart(&mut self, n: usize) {
        let _ = self.nodes[n].child.kill();
        let _ = self.nodes[n].child.wait();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.nodes[n] = start_node(env_or("LOAD_WORKERS", 2usize), &env, false);
        self.bases[n] = format!("http://127.0.0.1:{}/api/v1", self.nodes[n].port);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Percentiles of milliseconds.
fn stats(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let v = values[((values.len() as f64 - 1.0) * p).round() as usize];
        (v * 1000.0).round() / 1000.0
    };
    json!({ "n": values.len(), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0) })
}

fn backend() -> String {
    if std::env::var_os("LOAD_POSTGRES").is_some() {
        format!("postgres, {} node(s)", env_or("LOAD_NODES", 1usize).max(1))
    } else {
        "sqlite".into()
    }
}

/// S1: runs per second at concurrency 64, each executed with `wait`, tokens at once.
async fn s1() -> Value {
    let bench = Bench::start(0, &[]).await;
    let agent = bench.agent().await;
    let secs: u64 = env_or("LOAD_SECS", 10);
    // About 20 tokens: the offline answer echoes the goal.
    let goal = "Summarise the quarterly report in one line";
    for _ in 0..50 {
        bench.execute(&agent, goal, true).await;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let latencies = stream::iter(0..64)
        .map(|_| async {
            let mut mine = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let run = bench.execute(&agent, goal, true).await;
                if run["data"]["status"] == "completed" {
                    mine.push(ms(t.elapsed()));
                } else {
                    failed += 1;
                }
            }
            (mine, failed)
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let failed: u64 = latencies.iter().map(|(_, f)| f).sum();
    let all: Vec<f64> = latencies.into_iter().flat_map(|(l, _)| l).collect();
    let tokens =
        bench.execute(&agent, goal, true).await["data"]["usage"]["completion_tokens"].clone();
    json!({
        "scenario": "S1 run throughput", "backend": backend(), "provider": PROVIDER_NOTE,
        "concurrency": 64, "tokens_per_run": tokens, "completed": all.len(), "failed": failed,
        "runs_per_s": (all.len() as f64 / elapsed).round(), "latency_ms": stats(all),
        "server_rss_mib": bench.rss().round(), "target": ">= 3000 runs/s",
    })
}

/// Token arrival times of a run's stream, from the moment the execute request was sent.
/// With several nodes the run is started on one and its stream read on the next.
async fn stream_run(bench: &Bench, agent: &str, goal: &str) -> Option<(Duration, Vec<Duration>)> {
    let sent = Instant::now();
    let run = bench.execute(agent, goal, false).await;
    let run_id = run["data"]["id"].as_str()?.to_string();
    let mut res = bench
        .client
        .get(format!(
            "{}/agents/{agent}/runs/{run_id}/stream",
            bench.node()
        ))
        .bearer_auth(&bench.key)
        .send()
        .await
        .ok()?;
    let mut arrivals = Vec::new();
    let mut completed = false;
    read_sse(&mut res, |at, kind, _| {
        match kind {
            "token" => arrivals.push(at - sent),
            "run.completed" => completed = true,
            _ => {}
        }
        matches!(kind, "run.completed" | "run.failed" | "run.cancelled")
    })
    .await;
    completed.then_some((sent.elapsed(), arrivals))
}

/// S2: one run at a time streamed over SSE, 50 tokens at 20 ms: first-token overhead and
/// the delay added to each token over the provider's 20 ms.
async fn s2() -> Value {
    let gap = 20u64;
    let bench = Bench::start(gap, &[]).await;
    let agent = bench.agent().await;
    // The offline answer is 15 words plus the goal: 35 words make 50 tokens.
    let goal = (0..35)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let runs: usize = env_or("S2_RUNS", 30);
    stream_run(&bench, &agent, &goal).await;
    let (mut first, mut added, mut tokens) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let Some((_, arrivals)) = stream_run(&bench, &agent, &goal).await else {
            continue;
        };
        tokens = arrivals.len();
        first.push(ms(arrivals[0]) - gap as f64);
        for pair in arrivals.windows(2) {
            added.push((ms(pair[1] - pair[0]) - gap as f64).max(0.0));
        }
    }
    json!({
        "scenario": "S2 streaming overhead", "backend": backend(), "provider": PROVIDER_NOTE,
        "provider_ms_per_token": gap, "tokens_per_run": tokens, "runs": first.len(),
        "first_token_overhead_ms": stats(first), "added_per_token_ms": stats(added),
        "target": "first-token overhead p99 <= 5 ms; added per token p99 <= 1 ms",
    })
}

/// Samples the server's RSS every 100 ms until `done`; returns the peak.
fn watch_rss(pid: u32, done: Arc<AtomicU64>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut peak: f64 = 0.0;
        while done.load(Ordering::Relaxed) == 0 {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    })
}

/// S3: N runs streaming at once, 50 ms per token: success, token lag, server RSS.
async fn s3() -> Value {
    let sizes: Vec<usize> = std::env::var("S3_N")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let gap = 50u64;
    let mut results = Vec::new();
    for n in sizes {
        let bench = Bench::start(gap, &[]).await;
        let agent = bench.agent().await;
        let goal = "count to five please";
        let done = Arc::new(AtomicU64::new(0));
        let peak = watch_rss(bench.nodes[0].child.id(), done.clone());
        let started = Instant::now();
        // Every run must have finished two minutes after the first started.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let outcomes = stream::iter(0..n)
            .map(|_| {
                let (bench, agent) = (&bench, &agent);
                async move {
                    tokio::time::timeout_at(deadline, stream_run(bench, agent, goal))
                        .await
                        .ok()
                        .flatten()
                }
            })
            .buffer_unordered(n)
            .collect::<Vec<_>>()
            .await;
        done.store(1, Ordering::Relaxed);
        let ok: Vec<_> = outcomes.into_iter().flatten().collect();
        // Lag: how late token k arrived against the provider's schedule from the moment the
        // execute request was sent ((k + 1) x 50 ms).
        let mut lags = Vec::new();
        for (_, arrivals) in &ok {
            for (k, at) in arrivals.iter().enumerate() {
                lags.push((ms(*at) - (k as f64 + 1.0) * gap as f64).max(0.0));
            }
        }
        let result = json!({
            "n": n, "succeeded": ok.len(), "success_rate": ok.len() as f64 / n as f64,
            "token_lag_ms": stats(lags), "server_peak_rss_mib": peak.join().unwrap().round(),
            "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        });
        // One line per size, so that a size that overwhelms the server still leaves the others.
        println!(
            "{}",
            json!({
                "scenario": "S3 concurrent streaming runs", "backend": backend(), "provider": PROVIDER_NOTE,
                "provider_ms_per_token": gap, "result": result,
                "target": "10,000 at 100% success, p99 lag <= 50 ms, RSS <= 1 GiB",
            })
        );
        results.push(result);
    }
    json!({ "scenario": "S3 done", "sizes": results.len() })
}

/// S4: chat fan-out, sessions x subscribers, replies at 50 tokens/s.
async fn s4() -> Value {
    let gap = 20u64;
    let sessions: usize = env_or("S4_SESSIONS", 100);
    let subscribers: usize = env_or("S4_SUBSCRIBERS", 100);
    let bench = Bench::start(gap, &[]).await;
    let mut ids = Vec::new();
    for _ in 0..sessions {
        let s = post_json(
            &bench.client,
            &format!("{}/chat/sessions", bench.base),
            &bench.key,
            json!({ "projectId": bench.project, "systemPrompt": "Be brief" }),
        )
        .await;
        ids.push(s["data"]["id"].as_str().unwrap().to_string());
    }
    let done = Arc::new(AtomicU64::new(0));
    let peak = watch_rss(bench.nodes[0].child.id(), done.clone());
    // Every subscriber is connected before any message is posted.
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let posted_at: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let mut tasks = Vec::new();
    for id in &ids {
        for _ in 0..subscribers {
            let (bench_url, key, id) = (bench.base.clone(), bench.key.clone(), id.clone());
            let (client, opened, posted_at) =
                (bench.client.clone(), opened.clone(), posted_at.clone());
            tasks.push(tokio::spawn(async move {
                let mut res = client
                    .get(format!("{bench_url}/chat/sessions/{id}/stream"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .ok()?;
                opened.add_permits(1);
                let mut lags = Vec::new();
                let mut k = 0usize;
                let mut completed = false;
                let read = read_sse(&mut res, |at, kind, _| {
                    if kind == "token" {
                        if let Some(posted) = posted_at.lock().unwrap().get(&id) {
                            lags.push((ms(at - *posted) - (k as f64 + 1.0) * gap as f64).max(0.0));
                        }
                        k += 1;
                    }
                    completed |= kind == "reply.completed";
                    completed
                });
                tokio::time::timeout(Duration::from_secs(120), read)
                    .await
                    .ok()?;
                Some((lags, k))
            }));
        }
    }
    let total = sessions * subscribers;
    let _ = tokio::time::timeout(Duration::from_secs(120), opened.acquire_many(total as u32)).await;
    let started = Instant::now();
    for id in &ids {
        posted_at.lock().unwrap().insert(id.clone(), Instant::now());
        let res = bench
            .client
            .post(format!("{}/chat/sessions/{id}/messages", bench.base))
            .bearer_auth(&bench.key)
            .json(&json!({ "content": "tell me a short story about a lighthouse keeper" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    let mut lags = Vec::new();
    let (mut complete, mut deliveries) = (0, 0usize);
    for task in tasks {
        if let Ok(Some((l, k))) = task.await {
            complete += 1;
            deliveries += k;
            lags.extend(l);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(1, Ordering::Relaxed);
    json!({
        "scenario": "S4 chat fan-out", "backend": backend(), "provider": PROVIDER_NOTE,
        "sessions": sessions, "subscribers_per_session": subscribers, "provider_ms_per_token": gap,
        "subscribers_complete": complete, "token_deliveries": deliveries,
        "deliveries_per_s": (deliveries as f64 / elapsed).round(), "token_lag_ms": stats(lags),
        "server_peak_rss_mib": peak.join().unwrap().round(), "target": "p99 lag <= 50 ms",
    })
}

async fn live_sessions(bench: &Bench) -> f64 {
    let text = bench
        .client
        .get(format!("http://127.0.0.1:{}/metrics", bench.nodes[0].port))
        .bearer_auth(&bench.nodes[0].operator_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("dgidgi_actors_live{kind=\"session\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// S5: many chat sessions created, each touched once (a cancel activates its actor),
/// memory per live session actor, then memory once they passivated.
async fn s5() -> Value {
    let n: usize = env_or("S5_N", 100_000);
    let idle = 60u64;
    let idle_s = idle.to_string();
    let bench = Bench::start(0, &[("DGIDGI__CHAT__IDLE_SECS", idle_s.as_str())]).await;
    let created = stream::iter(0..n)
        .map(|_| async {
            let s = post_json(
                &bench.client,
                &format!("{}/chat/sessions", bench.base),
                &bench.key,
                json!({ "projectId": bench.project }),
            )
            .await;
            s["data"]["id"].as_str().map(str::to_string)
        })
        .buffer_unordered(64)
        .filter_map(|id| async { id })
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = bench.rss();
    let touch_started = Instant::now();
    let bench_ref = &bench;
    stream::iter(&created)
        .map(|id| async move {
            let bench = bench_ref;
            // A cancel with nothing to cancel activates the session's actor and writes nothing.
            let _ = bench
                .client
                .post(format!("{}/chat/sessions/{id}/cancel", bench.base))
                .bearer_auth(&bench.key)
                .json(&json!({}))
                .send()
                .await;
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let touched_in = touch_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = live_sessions(&bench).await;
    let during = bench.rss();
    // Passivation: wait for the idle time and the checks after it.
    let deadline = Instant::now() + Duration::from_secs(idle * 3);
    while live_sessions(&bench).await > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let after_live = live_sessions(&bench).await;
    let after = bench.rss();
    json!({
        "scenario": "S5 session actors at rest", "backend": backend(),
        "sessions": created.len(), "touched_in_s": (touched_in * 10.0).round() / 10.0,
        "live_actors_measured": live, "rss_before_mib": before.round(), "rss_live_mib": during.round(),
        "kib_per_live_session_actor": if live > 0.0 { ((during - before) * 1024.0 / live * 100.0).round() / 100.0 } else { 0.0 },
        "live_actors_after_passivation": after_live, "rss_after_passivation_mib": after.round(),
        "target": "<= 4 KiB per live session actor",
    })
}

/// S6: authenticated `GET /projects/:id` against `/healthz`, same driver, same run.
async fn s6() -> Value {
    let bench = Bench::start(0, &[]).await;
    let secs: u64 = env_or("LOAD_SECS", 10);
    let project = format!("{}/projects/{}", bench.base, bench.project);
    let health = format!("http://127.0.0.1:{}/healthz", bench.nodes[0].port);
    let mut out = HashMap::new();
    for (name, url, auth) in [
        ("healthz", &health, false),
        ("get_project", &project, true),
        ("healthz_again", &health, false),
    ] {
        let deadline = Instant::now() + Duration::from_secs(secs / 2);
        let counts = stream::iter(0..32)
            .map(|_| async {
                let (mut n, mut lat) = (0u64, Vec::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut req = bench.client.get(url.as_str());
                    if auth {
                        req = req.bearer_auth(&bench.key);
                    }
                    if let Ok(res) = req.send().await {
                        if res.status().is_success() && res.bytes().await.is_ok() {
                            n += 1;
                            lat.push((t.elapsed().as_micros() as u32).max(1));
                        }
                    }
                }
                (n, lat)
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let n: u64 = counts.iter().map(|(n, _)| n).sum();
        let mut lat: Vec<u32> = counts.into_iter().flat_map(|(_, l)| l).collect();
        lat.sort_unstable();
        out.insert(name, (n as f64 / (secs / 2) as f64, percentile(&lat, 0.99)));
    }
    let healthz = (out["healthz"].0 + out["healthz_again"].0) / 2.0;
    let read = out["get_project"].0;
    json!({
        "scenario": "S6 authenticated read vs /healthz", "backend": backend(), "connections": 32,
        "healthz_rps": healthz.round(), "get_project_rps": read.round(),
        "ratio": (read / healthz * 1000.0).round() / 1000.0,
        "healthz_p99_ms": out["healthz"].1, "get_project_p99_ms": out["get_project"].1,
        "target": "authenticated read >= 50% of /healthz",
    })
}

/// Failover: a run streaming at 50 ms per token on one node, followed from another; its
/// node is killed (-9) and the time until the next token reaches the subscriber (another
/// node resumes the run once the lease expires) is measured, FAILOVER_RUNS times, the
/// killed node started again after each. PostgreSQL with at least two nodes.
async fn failover() -> Value {
    if std::env::var_os("LOAD_POSTGRES").is_none() || env_or("LOAD_NODES", 1usize) < 2 {
        return json!({ "scenario": "failover", "skipped": "needs LOAD_POSTGRES and LOAD_NODES >= 2" });
    }
    let (heartbeat, lease) = ("1", "3");
    let cluster = [
        ("DGIDGI__CLUSTER__HEARTBEAT_SECS", heartbeat),
        ("DGIDGI__CLUSTER__LEASE_SECS", lease),
    ];
    let mut bench = Bench::start(50, &cluster).await;
    let agent = bench.agent().await;
    // About 120 tokens: six seconds of streaming.
    let goal = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let runs: usize = env_or("FAILOVER_RUNS", 10);
    let mut gaps = Vec::new();
    for i in 0..runs {
        let owner = i % bench.bases.len();
        let watcher = (owner + 1) % bench.bases.len();
        let run = bench
            .execute_on(&bench.bases[owner].clone(), &agent, &goal, false)
            .await;
        let Some(run_id) = run["data"]["id"].as_str().map(str::to_string) else {
            continue;
        };
        let mut res = bench
            .client
            .get(format!(
                "{}/agents/{agent}/runs/{run_id}/stream",
                bench.bases[watcher]
            ))
            .bearer_auth(&bench.key)
            .send()
            .await
            .unwrap();
        let mut tokens = 0;
        read_sse(&mut res, |_, kind, _| {
            tokens += usize::from(kind == "token");
            tokens >= 5
        })
        .await;
        bench.nodes[owner].child.kill().ok();
        let killed = Instant::now();
        let mut next = None;
        let read = read_sse(&mut res, |at, kind, _| {
            if kind == "token" {
                next = Some(at - killed);
            }
            next.is_some()
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
        if let Some(gap) = next {
            gaps.push(ms(gap));
        }
        drop(res);
        bench.restart(owner);
    }
    json!({
        "scenario": "failover", "backend": backend(), "runs": runs, "resumed": gaps.len(),
        "heartbeat_secs": heartbeat, "lease_secs": lease,
        "kill_to_next_token_ms": stats(gaps),
        "target": "within lease_secs plus one heartbeat",
    })
}

fn main() {
    support::raise_open_files();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = ["s1", "s2", "s3", "s4", "s5", "s6", "failover"];
    let chosen: Vec<&str> = if args.is_empty() || args.iter().any(|a| a == "all") {
        all.to_vec()
    } else {
        all.iter()
            .copied()
            .filter(|s| args.iter().any(|a| a.eq_ignore_ascii_case(s)))
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("LOAD_DRIVER_THREADS", 1))
        .enable_all()
        .build()
        .unwrap();
    for scenario in chosen {
        let line = rt.block_on(async {
            match scenario {
                "s1" => s1().await,
                "s2" => s2().await,
                "s3" => s3().await,
                "s4" => s4().await,
                "s5" => s5().await,
                "s6" => s6().await,
                _ => failover().await,
            }
        });
        println!("{line}");
    }
}
