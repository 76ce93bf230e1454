//! Webhook deliveries per second from the release `dgidgi` binary to a receiver in this
//! process, over loopback: N projects are created (N `project.created` events), and the
//! clock runs until the receiver has every delivery.
//!
//! `cargo bench --bench webhooks` (env: EVENTS, POLL_MS)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Data;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

mod support;
use support::{env_or, post_json, start_server};

async fn receive(count: Data<Arc<AtomicUsize>>) -> HttpResponse {
    count.fetch_add(1, Ordering::Relaxed);
    HttpResponse::NoContent().finish()
}

fn main() {
    let events: usize = env_or("EVENTS", 2000);
    let poll: String = env_or("POLL_MS", "250".to_string());
    actix_web::rt::System::new().block_on(async move {
        let count = Arc::new(AtomicUsize::new(0));
        let shared = count.clone();
        let receiver = HttpServer::new(move || App::new().app_data(Data::new(shared.clone())).default_service(web::to(receive)))
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap();
        let url = format!("http://{}/hooks", receiver.addrs()[0]);
        actix_web::rt::spawn(receiver.run());
        let server = start_server(
            2,
            &[("DGIDGI__OUTBOUND__ALLOW_PRIVATE_TARGETS", "true"), ("DGIDGI__WEBHOOKS__POLL_MS", &poll)],
        );
        let base = format!("http://127.0.0.1:{}/api/v1", server.port);
        let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
        let tenant = post_json(&client, &format!("{base}/tenants"), &server.operator_key, json!({ "name": "bench" })).await;
        let key = tenant["data"]["api_key"]["key"].as_str().unwrap().to_string();
        post_json(&client, &format!("{base}/webhooks"), &key, json!({ "url": url, "events": ["project.created"] })).await;

        let started = Instant::now();
        let per_task = events / 16;
        let creators: Vec<_> = (0..16)
            .map(|t| {
                let (client, base, key) = (client.clone(), base.clone(), key.clone());
                actix_web::rt::spawn(async move {
                    for i in 0..per_task {
                        post_json(&client, &format!("{base}/projects"), &key, json!({ "name": format!("p{t}-{i}") })).await;
                    }
                })
            })
            .collect();
        for c in creators {
            c.await.unwrap();
        }
        let created = started.elapsed();
        let total = per_task * 16;
        while count.load(Ordering::Relaxed) < total {
            assert!(started.elapsed() < Duration::from_secs(120), "deliveries stalled at {}", count.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!("Webhook deliveries to a local receiver (one endpoint, {total} project.created events)");
        println!("  events created in {:.2} s ({:.0}/s, 16 connections)", created.as_secs_f64(), total as f64 / created.as_secs_f64());
        println!("  all delivered {elapsed:.2} s after the first event: {:.0} deliveries/s (poll every {poll} ms)", total as f64 / elapsed);
    });
}
