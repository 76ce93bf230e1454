//! Run throughput and per-token latency against the release `dgidgi` binary, over loopback.
//!
//! 1. Runs completed per second: agents on the zero-delay offline provider, executed with
//!    `wait` from many connections; each run streams ~20 tokens through the event log.
//! 2. The latency the runtime adds per token: an OpenAI-compatible server in this process
//!    sends a token every few milliseconds and notes when; an SSE subscriber notes when each
//!    token arrives; the difference is the runtime's share (async-openai parsing, batching,
//!    the write to SQLite, the fan-out, SSE).
//!
//! `cargo bench --bench runs` (env: RUNS_SECS, RUNS_CONCURRENCY, TOKENS, TOKEN_GAP_MS, FLUSH_MS)

use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use dgidgi_testkit::{FakeLlm, Script};
use support::{env_or, percentile, post_json, read_sse, start_server, token_index};

fn main() {
    let secs: u64 = env_or("RUNS_SECS", 10);
    let concurrency: usize = env_or("RUNS_CONCURRENCY", 16);
    let tokens: usize = env_or("TOKENS", 200);
    let gap: u64 = env_or("TOKEN_GAP_MS", 5);
    let flush: String = env_or("FLUSH_MS", "20".to_string());
    actix_web::rt::System::new().block_on(async move {
        let llm = FakeLlm::answering(Script::Numbered { count: tokens, gap: Duration::from_millis(gap) });
        let llm_url = llm.base_url.clone();

        let server = start_server(
            1,
            &[
                ("DGIDGI__PROVIDERS__BENCH__KIND", "openai"),
                ("DGIDGI__PROVIDERS__BENCH__BASE_URL", &llm_url),
                ("DGIDGI__PROVIDERS__BENCH__MODEL", "bench"),
                ("DGIDGI__LLM__FLUSH_MS", &flush),
            ],
        );
        let base = format!("http://127.0.0.1:{}/api/v1", server.port);
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
        let tenant = post_json(&client, &format!("{base}/tenants"), &server.operator_key, json!({ "name": "bench", "plan": "enterprise" })).await;
        let key = tenant["data"]["api_key"]["key"].as_str().unwrap().to_string();
        let tenant_id = tenant["data"]["id"].as_str().unwrap();
        // As many runs at once as the plan allows (enterprise: 500).
        let res = client
            .patch(format!("{base}/tenants/{tenant_id}/settings"))
            .bearer_auth(&key)
            .json(&json!({ "max_concurrent_runs": 500 }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        let project = post_json(&client, &format!("{base}/projects"), &key, json!({ "name": "bench" })).await;
        let project = project["data"]["id"].as_str().unwrap().to_string();
        let offline = post_json(&client, &format!("{base}/agents"), &key, json!({ "name": "zero-delay", "provider": "offline" })).await;
        let offline = offline["data"]["id"].as_str().unwrap().to_string();
        let paced = post_json(&client, &format!("{base}/agents"), &key, json!({ "name": "paced", "provider": "bench" })).await;
        let paced = paced["data"]["id"].as_str().unwrap().to_string();

        // 1. Runs per second.
        let execute = format!("{base}/agents/{offline}/execute");
        let body = json!({ "goal": "Summarise the quarterly report in one line", "projectId": project, "wait": true });
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, execute, key, body) = (client.clone(), execute.clone(), key.clone(), body.clone());
                actix_web::rt::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failed = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let run: Value = client.post(&execute).bearer_auth(&key).json(&body).send().await.unwrap().json().await.unwrap();
                        if run["data"]["status"] == "completed" {
                            latencies.push(t.elapsed().as_micros() as u32);
                        } else {
                            failed += 1;
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        let (mut all, mut failed) = (Vec::new(), 0);
        for worker in workers {
            let (latencies, f) = worker.await.unwrap();
            all.extend(latencies);
            failed += f;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        println!("Runs on the zero-delay offline provider, executed with wait=true");
        println!("  connections: {concurrency}, duration: {elapsed:.1} s, token batch flush: {flush} ms");
        println!("  runs: {} completed, {failed} not completed", all.len());
        println!("  throughput: {:.0} runs/s", all.len() as f64 / elapsed);
        println!(
            "  run latency ms (execute to answer): p50 {:.2}, p99 {:.2}",
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        );

        // 2. Per-token latency, over a few runs.
        let mut delays = Vec::new();
        for _ in 0..5 {
            let run = post_json(&client, &format!("{base}/agents/{paced}/execute"), &key, json!({ "goal": "count", "projectId": project })).await;
            let run_id = run["data"]["id"].as_str().unwrap();
            let mut res = client.get(format!("{base}/agents/{paced}/runs/{run_id}/stream")).bearer_auth(&key).send().await.unwrap();
            let mut received: Vec<Option<Instant>> = vec![None; tokens];
            read_sse(&mut res, |now, _, data| {
                if let Some(i) = token_index(data) {
                    received[i].get_or_insert(now);
                }
                false
            })
            .await;
            let sent = llm.sent();
            for (s, r) in sent.iter().zip(&received) {
                if let (Some(s), Some(r)) = (s, r) {
                    delays.push(r.duration_since(*s).as_micros() as u32);
                }
            }
        }
        delays.sort_unstable();
        println!("Latency the runtime adds per token (provider sends -> SSE subscriber receives)");
        println!("  {} tokens, one every {gap} ms, token batch flush: {flush} ms", delays.len());
        println!(
            "  ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
            percentile(&delays, 0.5),
            percentile(&delays, 0.9),
            percentile(&delays, 0.99),
            percentile(&delays, 1.0)
        );
    });
}
