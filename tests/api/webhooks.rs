//! Webhooks delivered to a real receiver on loopback that verifies signatures with the
//! reference `standardwebhooks` library, as a customer's would.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::web::{Bytes, Data};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use figment::providers::Serialized;
use figment::Figment;
use serde_json::{json, Value};

use crate::helpers::{backend_tests, holds_for, until, Backend, TestApp};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

#[derive(Default)]
struct ReceiverState {
    /// (status, delay in ms) for the next requests; 200 at once when empty.
    script: Mutex<VecDeque<(u16, u64)>>,
    got: Mutex<Vec<Received>>,
}

pub struct Receiver {
    pub url: String,
    state: Data<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(state: Data<ReceiverState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    state.got.lock().unwrap().push(Received {
        path: req.path().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (status, delay) = state.script.lock().unwrap().pop_front().unwrap_or((200, 0));
    if delay > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if (300..400).contains(&status) {
        res.insert_header(("location", "/elsewhere"));
    }
    res.finish()
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Data::new(ReceiverState::default());
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}/hooks", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { url, state, handle }
    }

    /// Forgets the scripted answers: from now on every request gets 200.
    pub fn heal(&self) {
        self.state.script.lock().unwrap().clear();
    }

    pub fn answer(&self, status: u16, delay_ms: u64) {
        self.state
            .script
            .lock()
            .unwrap()
            .push_back((status, delay_ms));
    }

    pub fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits (at most ~10 s) until `done` holds for what arrived.
    pub async fn wait_for(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.got();
            if done(&got) {
                return got;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let got = self.got();
        panic!(
            "the receiver did not get what was expected; it got {} requests",
            got.len()
        );
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Verifies a request as a customer would, with the reference library.
pub fn verify(secret: &str, got: &Received) -> bool {
    let hook = if secret.starts_with("whsec_") {
        standardwebhooks::Webhook::new(secret).unwrap()
    } else {
        standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec()).unwrap()
    };
    hook.verify(got.body.as_bytes(), &got.headers).is_ok()
}

/// Loopback receivers are allowed here; retries come fast.
pub fn fast(f: Figment) -> Figment {
    f.merge(Serialized::default("outbound.allow_private_targets", true))
        .merge(Serialized::default("webhooks.poll_ms", 50))
        .merge(Serialized::default(
            "webhooks.retry_schedule_secs",
            vec![0, 0, 0],
        ))
        .merge(Serialized::default("webhooks.timeout_secs", 1))
}

pub async fn hooks_app(backend: Backend) -> Option<TestApp> {
    TestApp::spawn(backend, fast).await
}

backend_tests!(@with crate::webhooks::hooks_app;
    a_tenant_event_arrives_signed_with_the_resource_as_the_api_returns_it,
    a_receiver_that_fails_twice_gets_three_attempts_of_one_delivery,
    tenants_get_only_their_events_and_a_platform_endpoint_gets_all,
);

async fn endpoint(
    app: &TestApp,
    key: &str,
    url: &str,
    events: Value,
    secret: Option<&str>,
) -> (String, String) {
    let mut body = json!({ "url": url, "events": events, "description": "orders" });
    if let Some(s) = secret {
        body["secret"] = json!(s);
    }
    let res = app.post("/api/v1/webhooks", key, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    (
        res.data()["id"].as_str().unwrap().to_string(),
        res.data()["secret"].as_str().unwrap().to_string(),
    )
}

/// The endpoint's newest delivery once its status is `status` (or as it is after 2 s).
async fn first_delivery_when(app: &TestApp, key: &str, endpoint: &str, status: &str) -> Value {
    let path = format!("/api/v1/webhooks/{endpoint}/deliveries");
    let found = until(Duration::from_secs(2), || async {
        let delivery = app.get(&path, key).await.data()[0].clone();
        (delivery["status"] == status).then_some(delivery)
    })
    .await;
    match found {
        Some(delivery) => delivery,
        None => app.get(&path, key).await.data()[0].clone(),
    }
}

/// The endpoint as shown once it is disabled (or as it is after 4 s).
async fn once_disabled(app: &TestApp, key: &str, endpoint: &str) -> Value {
    let path = format!("/api/v1/webhooks/{endpoint}");
    let found = until(Duration::from_secs(4), || async {
        let shown = app.get(&path, key).await.data().clone();
        (shown["enabled"] == false).then_some(shown)
    })
    .await;
    match found {
        Some(shown) => shown,
        None => app.get(&path, key).await.data().clone(),
    }
}

async fn a_tenant_event_arrives_signed_with_the_resource_as_the_api_returns_it(app: &TestApp) {
    let receiver = Receiver::start().await;
    let tenant = app.tenant("Acme", "free").await;
    let (id, secret) = endpoint(
        app,
        &tenant.key,
        &receiver.url,
        json!(["project.created", "user.created"]),
        None,
    )
    .await;
    assert!(
        secret.starts_with("whsec_"),
        "a secret is generated and shown once"
    );
    let shown = app
        .get(&format!("/api/v1/webhooks/{id}"), &tenant.key)
        .await;
    assert!(shown.data().get("secret").is_none() && !shown.body.to_string().contains(&secret));
    assert!(shown.data()["secret_hint"]
        .as_str()
        .unwrap()
        .starts_with("whsec_…"));

    let project = app.project(&tenant.key, "Shop").await;
    let got = receiver.wait_for(|g| !g.is_empty()).await;
    let request = &got[0];
    assert!(
        verify(&secret, request),
        "the signature verifies with the reference library"
    );
    assert!(request.headers["webhook-id"]
        .to_str()
        .unwrap()
        .starts_with("msg_"));
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["type"], "project.created");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let api = app
        .get(&format!("/api/v1/projects/{project}"), &tenant.key)
        .await;
    assert_eq!(
        &body["data"],
        api.data(),
        "data is the resource as the API returns it"
    );

    // The receiver has it; the attempt is recorded right after the answer.
    let delivery = &first_delivery_when(app, &tenant.key, &id, "delivered").await;
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert!(delivery["attempts"][0]["latency_ms"].is_number());
    receiver.stop().await;
}

async fn a_receiver_that_fails_twice_gets_three_attempts_of_one_delivery(app: &TestApp) {
    let receiver = Receiver::start().await;
    receiver.answer(500, 0);
    receiver.answer(500, 0);
    let tenant = app.tenant("Acme", "free").await;
    let (id, secret) = endpoint(
        app,
        &tenant.key,
        &receiver.url,
        json!(["project.created"]),
        Some("your_webhook_secret"),
    )
    .await;
    app.project(&tenant.key, "Shop").await;
    let got = receiver.wait_for(|g| g.len() >= 3).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "the same webhook-id on every attempt: {ids:?}"
    );
    assert!(
        got.iter().all(|r| verify(&secret, r)),
        "a plain secret signs with its UTF-8 bytes"
    );
    let delivered = first_delivery_when(app, &tenant.key, &id, "delivered").await;
    let codes: Vec<i64> = delivered["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(receiver.got().len(), 3, "acknowledged once, sent no more");
    receiver.stop().await;
}

async fn tenants_get_only_their_events_and_a_platform_endpoint_gets_all(app: &TestApp) {
    let (for_a, for_b, platform) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let a = app.tenant("A", "free").await;
    let b = app.tenant("B", "free").await;
    let all = json!([
        "project.created",
        "project.updated",
        "project.deleted",
        "user.created",
        "tenant.created",
        "agent.started",
        "agent.completed",
        "agent.failed"
    ]);
    endpoint(app, &a.key, &for_a.url, all.clone(), None).await;
    endpoint(app, &b.key, &for_b.url, all.clone(), None).await;
    endpoint(app, &app.operator_key, &platform.url, all, None).await;
    let project = app.project(&a.key, "only A's").await;
    app.patch(
        &format!("/api/v1/projects/{project}"),
        &a.key,
        json!({ "name": "renamed" }),
    )
    .await;
    app.delete(&format!("/api/v1/projects/{project}"), &a.key)
        .await;
    app.post(
        "/api/v1/users",
        &b.key,
        json!({ "email": "b@b.example", "name": "B" }),
    )
    .await;
    let c = app.tenant("C", "free").await;
    let kinds = |got: &[Received]| -> Vec<String> {
        got.iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let got_a = for_a.wait_for(|g| g.len() >= 3).await;
    assert_eq!(
        kinds(&got_a),
        ["project.created", "project.updated", "project.deleted"]
    );
    let got_b = for_b.wait_for(|g| !g.is_empty()).await;
    assert_eq!(kinds(&got_b), ["user.created"]);
    let got_all = platform.wait_for(|g| g.len() >= 5).await;
    let mut seen = kinds(&got_all);
    seen.sort();
    assert_eq!(
        seen,
        [
            "project.created",
            "project.deleted",
            "project.updated",
            "tenant.created",
            "user.created"
        ]
    );
    assert!(
        got_all.iter().any(|r| r.body.contains(&c.id)),
        "tenant.created of the new tenant"
    );
    // Nothing more arrives over six delivery polls (webhooks.poll_ms = 50).
    let settled = holds_for(Duration::from_millis(300), || async {
        for_a.got().len() == 3 && for_b.got().len() == 1
    })
    .await;
    assert!(
        settled,
        "nothing of B's reached A, nothing of A's reached B"
    );
    // Endpoints are tenant-scoped like everything else.
    let listed = app.get("/api/v1/webhooks", &b.key).await;
    assert_eq!(listed.data().as_array().unwrap().len(), 1);
    let a_endpoint = app.get("/api/v1/webhooks", &a.key).await.data()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{a_endpoint}"), &b.key)
            .await
            .status,
        404
    );
    assert_eq!(
        app.delete(&format!("/api/v1/webhooks/{a_endpoint}"), &b.key)
            .await
            .status,
        404
    );
    for r in [&for_a, &for_b, &platform] {
        r.stop().await;
    }
}

async fn sqlite(configure: impl FnOnce(Figment) -> Figment) -> TestApp {
    TestApp::spawn(Backend::Sqlite, |f| configure(fast(f)))
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_410_disables_the_endpoint() {
    let app = sqlite(|f| f).await;
    let receiver = Receiver::start().await;
    receiver.answer(410, 0);
    let tenant = app.tenant("Acme", "free").await;
    let (id, _) = endpoint(
        &app,
        &tenant.key,
        &receiver.url,
        json!(["project.created"]),
        None,
    )
    .await;
    app.project(&tenant.key, "one").await;
    receiver.wait_for(|g| g.len() == 1).await;
    let shown = once_disabled(&app, &tenant.key, &id).await;
    assert_eq!(shown["enabled"], false);
    assert!(shown["disabled_reason"].as_str().unwrap().contains("410"));
    app.project(&tenant.key, "two").await;
    // Over eight delivery polls (webhooks.poll_ms = 50), nothing reaches it.
    assert!(
        holds_for(Duration::from_millis(400), || async {
            receiver.got().len() == 1
        })
        .await,
        "a disabled endpoint gets nothing more"
    );
    // Enabled again, it gets new events.
    app.patch(
        &format!("/api/v1/webhooks/{id}"),
        &tenant.key,
        json!({ "enabled": true }),
    )
    .await;
    app.project(&tenant.key, "three").await;
    receiver
        .wait_for(|g| g.iter().any(|r| r.body.contains("three")))
        .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_redirect_is_not_followed_and_a_slow_receiver_times_out() {
    let app = sqlite(|f| {
        f.merge(Serialized::default(
            "webhooks.retry_schedule_secs",
            Vec::<u64>::new(),
        ))
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(302, 0);
    receiver.answer(200, 3000);
    let tenant = app.tenant("Acme", "free").await;
    let (id, _) = endpoint(
        &app,
        &tenant.key,
        &receiver.url,
        json!(["project.created"]),
        None,
    )
    .await;
    app.project(&tenant.key, "redirected").await;
    app.project(&tenant.key, "slow").await;
    let mut attempts = Vec::new();
    for _ in 0..200 {
        let deliveries = app
            .get(&format!("/api/v1/webhooks/{id}/deliveries"), &tenant.key)
            .await;
        let items = deliveries.data().as_array().unwrap().clone();
        if items.len() == 2 && items.iter().all(|d| d["status"] == "failed") {
            attempts = items;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        attempts.len(),
        2,
        "both deliveries failed (no retries configured)"
    );
    let errors: Vec<(Value, String)> = attempts
        .iter()
        .map(|d| {
            (
                d["attempts"][0]["status_code"].clone(),
                d["attempts"][0]["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        errors.contains(&(json!(302), "redirect not followed".to_string())),
        "{errors:?}"
    );
    assert!(
        errors.contains(&(Value::Null, "timeout".to_string())),
        "{errors:?}"
    );
    assert!(
        receiver.got().iter().all(|r| r.path == "/hooks"),
        "/elsewhere was never asked"
    );
    app.stop().await;
}

#[actix_web::test]
async fn internal_addresses_are_refused_at_registration_and_at_delivery() {
    let app = TestApp::spawn(Backend::Sqlite, |f| {
        f.merge(Serialized::default("webhooks.poll_ms", 50))
            .merge(Serialized::default(
                "webhooks.retry_schedule_secs",
                Vec::<u64>::new(),
            ))
    })
    .await
    .unwrap();
    let tenant = app.tenant("Acme", "free").await;
    for url in [
        "http://127.0.0.1:9/hooks",
        "http://10.0.0.8/hooks",
        "http://192.168.0.1/hooks",
        "http://172.20.0.1/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.1.1/hooks",
        "http://[::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://[fd00::1]/hooks",
        "http://[fe80::1]/hooks",
        "ftp://example.com/hooks",
        "not a url",
        // Site-local, 6to4 and SIIT forms of loopback, benchmarking and discard ranges,
        // localhost-like and .internal names.
        "http://[fec0::1]/hooks",
        "http://[2002:7f00:1::]/hooks",
        "http://[::ffff:0:7f00:1]/hooks",
        "http://198.18.0.1/hooks",
        "http://[100::1]/hooks",
        "http://localhost/hooks",
        "http://localhost.localdomain/hooks",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let res = app
            .post(
                "/api/v1/webhooks",
                &tenant.key,
                json!({ "url": url, "events": ["project.created"] }),
            )
            .await;
        assert_eq!(res.status, 400, "{url}: {}", res.body);
        assert_eq!(res.body["error"]["details"]["field"], "url", "{url}");
    }
    let res = app
        .post(
            "/api/v1/webhooks",
            &tenant.key,
            json!({ "url": "https://example.com", "events": ["order.shipped"] }),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"]["details"]["field"], "events");

    // The registration refusal names the setting that allows private targets.
    let res = app
        .post(
            "/api/v1/webhooks",
            &tenant.key,
            json!({ "url": "http://127.0.0.1:9/hooks", "events": ["project.created"] }),
        )
        .await;
    let reason = res.body["error"]["details"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("outbound.allow_private_targets"),
        "{reason}"
    );

    // Names are checked again when delivering: an endpoint whose URL names this machine by
    // the time it is delivered to (stored before these rules, say) reaches nothing.
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let (id, _) = endpoint(
        &app,
        &tenant.key,
        "https://hooks.example.com/in",
        json!(["project.created"]),
        None,
    )
    .await;
    let db = app.database().await;
    sqlx::query("UPDATE webhook_endpoints SET url = $2 WHERE id = $1")
        .bind(&id)
        .bind(&by_name)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    app.project(&tenant.key, "p").await;
    let mut error = String::new();
    for _ in 0..200 {
        let deliveries = app
            .get(&format!("/api/v1/webhooks/{id}/deliveries"), &tenant.key)
            .await;
        if let Some(e) = deliveries.data()[0]["attempts"][0]["error"].as_str() {
            error = e.to_string();
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        error.contains("forbidden address") && error.contains("loopback"),
        "{error}"
    );
    assert!(receiver.got().is_empty());
    receiver.stop().await;
    app.stop().await;
}

#[actix_web::test]
async fn test_pings_redelivery_and_secret_rotation() {
    let app = sqlite(|f| f).await;
    let receiver = Receiver::start().await;
    let tenant = app.tenant("Acme", "free").await;
    let (id, old) = endpoint(
        &app,
        &tenant.key,
        &receiver.url,
        json!(["project.created"]),
        None,
    )
    .await;
    let ping = app
        .post(
            &format!("/api/v1/webhooks/{id}/test"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(ping.status, 202);
    let got = receiver.wait_for(|g| !g.is_empty()).await;
    assert!(got[0].body.contains("webhook.test") && verify(&old, &got[0]));

    let rotated = app
        .post(
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.data()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    app.project(&tenant.key, "after rotation").await;
    let got = receiver.wait_for(|g| g.len() >= 2).await;
    assert!(verify(&new, &got[1]), "the new secret signs");
    assert!(
        verify(&old, &got[1]),
        "the old one still signs during the window"
    );

    let delivery = ping.data()["delivery_id"].as_str().unwrap();
    let again = app
        .post(
            &format!("/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 202);
    let got = receiver.wait_for(|g| g.len() >= 3).await;
    assert_eq!(
        got[2].headers["webhook-id"], got[0].headers["webhook-id"],
        "a redelivery keeps its id"
    );
    receiver.stop().await;
    app.stop().await;
}

#[actix_web::test]
async fn a_short_outage_during_a_burst_does_not_disable_the_endpoint() {
    // Two failures would disable it, but only once failures have gone on for a day.
    let app = sqlite(|f| f.merge(Serialized::default("webhooks.disable_after_failures", 2))).await;
    let receiver = Receiver::start().await;
    for _ in 0..6 {
        receiver.answer(503, 0);
    }
    let tenant = app.tenant("Acme", "free").await;
    let (id, _) = endpoint(
        &app,
        &tenant.key,
        &receiver.url,
        json!(["project.created"]),
        None,
    )
    .await;
    for n in 0..3 {
        app.project(&tenant.key, &format!("p{n}")).await;
    }
    // Every event is delivered in the end; the endpoint stays enabled and healthy.
    // Six failed attempts and three that passed (each delivery has four attempts).
    let got = receiver.wait_for(|g| g.len() >= 9).await;
    assert_eq!(got.len(), 9);
    let shown = app
        .get(&format!("/api/v1/webhooks/{id}"), &tenant.key)
        .await;
    assert_eq!(shown.data()["enabled"], true, "{}", shown.body);
    receiver.stop().await;
    app.stop().await;
}

#[actix_web::test]
async fn consecutive_failures_disable_the_endpoint() {
    let app = sqlite(|f| {
        f.merge(Serialized::default("webhooks.disable_after_failures", 2))
            .merge(Serialized::default("webhooks.disable_after_secs", 0))
    })
    .await;
    let receiver = Receiver::start().await;
    for _ in 0..10 {
        receiver.answer(500, 0);
    }
    let tenant = app.tenant("Acme", "free").await;
    let (id, _) = endpoint(
        &app,
        &tenant.key,
        &receiver.url,
        json!(["project.created"]),
        None,
    )
    .await;
    app.project(&tenant.key, "p").await;
    let shown = once_disabled(&app, &tenant.key, &id).await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert_eq!(shown["consecutive_failures"], 2);
    assert!(shown["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("consecutive"));
    // Over six delivery polls (webhooks.poll_ms = 50), no attempt.
    assert!(
        holds_for(Duration::from_millis(300), || async {
            receiver.got().len() == 2
        })
        .await,
        "no attempt after the endpoint was disabled"
    );
    receiver.stop().await;
    app.stop().await;
}
