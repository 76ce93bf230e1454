//! A load driver against the real server: starts the release `dgidgi` binary on a fresh
//! SQLite file (port 0, loopback only), creates a tenant and a project through the API,
//! then sends authenticated `GET /api/v1/projects/:id` from many connections for a fixed
//! time and reports throughput and latency percentiles.
//!
//! `cargo bench --bench load` (env: LOAD_SECS, LOAD_CONCURRENCY, LOAD_WORKERS, LOAD_DB=postgres-url)

use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use support::{env_or, percentile, post_json, start_server};

fn main() {
    let secs: u64 = env_or("LOAD_SECS", 10);
    let concurrency: usize = env_or("LOAD_CONCURRENCY", 32);
    let workers: usize = env_or("LOAD_WORKERS", 1);
    let server = start_server(workers, &[]);
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
