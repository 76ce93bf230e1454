use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    unknown_routes_are_404_in_the_envelope,
    a_wrong_method_is_405_in_the_envelope,
    bad_bodies_are_400_naming_the_field,
    an_oversized_body_is_400,
    bad_pagination_parameters_are_400,
);

async fn unknown_routes_are_404_in_the_envelope(app: &TestApp) {
    for path in ["/api/v1/nothing-here", "/nope", "/api/v1/projects/x/y/z"] {
        let res = app.get(path, &app.operator_key).await;
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.code(), "RESOURCE_NOT_FOUND");
        assert!(res.body["meta"]["request_id"].is_string());
    }
}

async fn a_wrong_method_is_405_in_the_envelope(app: &TestApp) {
    let res = app
        .call(
            Method::PUT,
            "/api/v1/projects",
            Some(&app.operator_key),
            Some(&json!({})),
        )
        .await;
    assert_eq!(res.status, 405);
    assert_eq!(res.code(), "METHOD_NOT_ALLOWED");
    let res = app.call(Method::POST, "/healthz", None, None).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.code(), "METHOD_NOT_ALLOWED");
}

async fn bad_bodies_are_400_naming_the_field(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let raw = |body: &'static str| body.to_string();
    let cases: Vec<(String, &str)> = vec![
        (raw("{\"name\": "), "body"),
        (raw("not json"), "body"),
        (raw(""), "body"),
        (raw("{\"name\": 42}"), "name"),
        (raw("{}"), "name"),
        (raw("{\"name\": \"ok\", \"colour\": \"red\"}"), "colour"),
        (raw("{\"name\": \"ok\", \"metadata\": [1]}"), "metadata"),
        (raw("{\"name\": \"\"}"), "name"),
        (raw("{\"name\": \"ok\"} trailing"), "body"),
        (raw("[1, 2]"), "body"),
    ];
    for (body, field) in cases {
        let res = app
            .client
            .post(format!("{}/api/v1/projects", app.address))
            .bearer_auth(&tenant.key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let res = TestApp::reply(res).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        assert_eq!(res.code(), "VALIDATION_ERROR", "{body}");
        assert_eq!(
            res.body["error"]["details"]["field"], field,
            "{body}: {}",
            res.body
        );
    }
    // Nested fields are named by their path.
    let res = app
        .patch(
            &format!("/api/v1/tenants/{}/settings", tenant.id),
            &tenant.key,
            json!({ "features": { "beta": "yes" } }),
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert_eq!(res.body["error"]["details"]["field"], "features.beta");
    // Nothing was created by any of them.
    let list = app.get("/api/v1/projects", &tenant.key).await;
    assert_eq!(list.data(), &Value::Array(vec![]));
}

async fn an_oversized_body_is_400(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let huge = "x".repeat(300 * 1024);
    let res = app
        .post(
            "/api/v1/projects",
            &tenant.key,
            json!({ "name": "big", "description": huge }),
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert_eq!(res.code(), "VALIDATION_ERROR");
    assert_eq!(res.body["error"]["details"]["field"], "body");
}

async fn bad_pagination_parameters_are_400(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%27%3B--", "cursor"),
    ] {
        let res = app
            .get(&format!("/api/v1/projects?{query}"), &tenant.key)
            .await;
        assert_eq!(res.status, 400, "{query}");
        assert_eq!(res.body["error"]["details"]["field"], field, "{query}");
    }
}

#[actix_web::test]
async fn a_panicking_handler_answers_500_in_the_envelope_and_the_server_keeps_serving() {
    let server = HttpServer::new(|| {
        App::new()
            .wrap(from_fn(dgidgi::http::middleware_request_context))
            .route(
                "/boom",
                web::get().to(|| async { panic!("boom") as &'static str }),
            )
            .route("/fine", web::get().to(|| async { "fine" }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let res = client.get(format!("{address}/boom")).send().await.unwrap();
        assert_eq!(res.status(), 500);
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(body["meta"]["request_id"], request_id.as_str());
        assert!(
            !body.to_string().contains("boom"),
            "the cause is logged, not shown"
        );
        let fine = client.get(format!("{address}/fine")).send().await.unwrap();
        assert_eq!(fine.status(), 200);
    }
    handle.stop(false).await;
}
