//! Chat through the release `dgidgi` binary, over loopback:
//!
//! 1. Time to first token and the latency the runtime adds per token, with a provider (in
//!    this process) that sends a token every 20 ms: the subscriber's arrival time minus the
//!    provider's send time.
//! 2. Concurrent subscribers on one node: N SSE connections on one session, the server's
//!    resident memory before and after, and how long until every one of them has a whole
//!    reply.
//!
//! `ulimit -n 20000; cargo bench --bench chat` (env: CHAT_TOKENS, CHAT_GAP_MS, SUBSCRIBERS)

use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use dgidgi_testkit::{FakeLlm, Script};
use support::{env_or, percentile, post_json, read_sse, rss_mib, start_server, token_index};

fn main() {
    let tokens: usize = env_or("CHAT_TOKENS", 100);
    let gap: u64 = env_or("CHAT_GAP_MS", 20);
    let subscribers: usize = env_or("SUBSCRIBERS", 2000);
    actix_web::rt::System::new().block_on(async move {
        let llm = FakeLlm::answering(Script::Numbered { count: tokens, gap: Duration::from_millis(gap) });
        let llm_url = llm.base_url.clone();
        let server = start_server(
            2,
            &[
                ("DGIDGI__PROVIDERS__BENCH__KIND", "openai"),
                ("DGIDGI__PROVIDERS__BENCH__BASE_URL", &llm_url),
                ("DGIDGI__PROVIDERS__BENCH__MODEL", "bench"),
                ("DGIDGI__LLM__DEFAULT_PROVIDER", "bench"),
            ],
        );
        let base = format!("http://127.0.0.1:{}/api/v1", server.port);
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        let tenant = post_json(&client, &format!("{base}/tenants"), &server.operator_key, json!({ "name": "bench" })).await;
        let key = tenant["data"]["api_key"]["key"].as_str().unwrap().to_string();
        let project = post_json(&client, &format!("{base}/projects"), &key, json!({ "name": "bench" })).await;
        let project = project["data"]["id"].as_str().unwrap().to_string();
        let new_session = || async {
            let s = post_json(&client, &format!("{base}/chat/sessions"), &key, json!({ "projectId": project })).await;
            s["data"]["id"].as_str().unwrap().to_string()
        };

        // 1. Time to first token and per-token latency, 5 replies.
        let (mut first_tokens, mut first_added, mut delays) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            let session = new_session().await;
            let mut stream = client.get(format!("{base}/chat/sessions/{session}/stream")).bearer_auth(&key).send().await.unwrap();
            let posted = Instant::now();
            post_json(&client, &format!("{base}/chat/sessions/{session}/messages"), &key, json!({ "content": "go" })).await;
            let mut received = vec![None; tokens];
            read_sse(&mut stream, |now, kind, data| {
                if let Some(i) = token_index(data) {
                    received[i].get_or_insert(now);
                }
                kind == "reply.completed"
            })
            .await;
            let sent = llm.sent();
            first_tokens.push(received[0].unwrap().duration_since(posted).as_micros() as u32);
            first_added.push(received[0].unwrap().duration_since(sent[0].unwrap()).as_micros() as u32);
            for (s, r) in sent.iter().zip(&received) {
                if let (Some(s), Some(r)) = (s, r) {
                    delays.push(r.duration_since(*s).as_micros() as u32);
                }
            }
        }
        first_tokens.sort_unstable();
        first_added.sort_unstable();
        delays.sort_unstable();
        println!("Chat reply, provider at {gap} ms per token, {tokens} tokens, 5 replies");
        println!(
            "  time to first token ms (POST to subscriber, provider's own {gap} ms included): p50 {:.2}, max {:.2}",
            percentile(&first_tokens, 0.5),
            percentile(&first_tokens, 1.0)
        );
        println!("  first token, runtime's share ms: p50 {:.2}, max {:.2}", percentile(&first_added, 0.5), percentile(&first_added, 1.0));
        println!(
            "  added per token ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
            percentile(&delays, 0.5),
            percentile(&delays, 0.9),
            percentile(&delays, 0.99),
            percentile(&delays, 1.0)
        );

        // 2. Many subscribers on one session.
        let session = new_session().await;
        let idle_rss = rss_mib(server.child.id());
        let url = format!("{base}/chat/sessions/{session}/stream");
        let mut streams = Vec::with_capacity(subscribers);
        let opening = Instant::now();
        for chunk in (0..subscribers).collect::<Vec<_>>().chunks(100) {
            let opened = futures_util::future::join_all(chunk.iter().map(|_| {
                let fresh = reqwest::Client::new();
                let (url, key) = (url.clone(), key.clone());
                async move { fresh.get(url).bearer_auth(key).send().await.unwrap() }
            }))
            .await;
            streams.extend(opened);
        }
        let open_secs = opening.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let connected_rss = rss_mib(server.child.id());
        let posted = Instant::now();
        post_json(&client, &format!("{base}/chat/sessions/{session}/messages"), &key, json!({ "content": "to all" })).await;
        let readers: Vec<_> = streams
            .into_iter()
            .map(|mut stream| {
                actix_web::rt::spawn(async move {
                    let mut count = 0usize;
                    read_sse(&mut stream, |_, kind, _| {
                        count += usize::from(kind == "token");
                        kind == "reply.completed"
                    })
                    .await;
                    (count, posted.elapsed())
                })
            })
            .collect();
        let mut last = Duration::ZERO;
        let mut complete = 0;
        let mut peak_rss = connected_rss;
        for reader in readers {
            let (count, at) = reader.await.unwrap();
            complete += usize::from(count == tokens);
            last = last.max(at);
            peak_rss = peak_rss.max(rss_mib(server.child.id()));
        }
        println!("{subscribers} SSE subscribers on one session (one server process, 2 workers)");
        println!("  opened in {open_secs:.1} s; {complete} of {subscribers} received all {tokens} tokens");
        println!(
            "  server memory MiB: {idle_rss:.1} before, {connected_rss:.1} connected ({:.1} KiB per subscriber), {peak_rss:.1} peak while streaming",
            (connected_rss - idle_rss) * 1024.0 / subscribers as f64
        );
        println!(
            "  last subscriber had the whole reply {:.2} s after the POST (the provider alone takes {:.2} s)",
            last.as_secs_f64(),
            (tokens as u64 * gap) as f64 / 1000.0
        );
    });
}
