use serde_json::json;

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    a_retried_create_returns_the_first_response,
    a_reused_key_with_another_body_is_refused,
    idempotency_keys_belong_to_their_caller,
);

async fn post_with_key(
    app: &TestApp,
    key: &str,
    idem: &str,
    body: serde_json::Value,
) -> crate::helpers::Reply {
    let res = app
        .client
        .post(format!("{}/api/v1/projects", app.address))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    TestApp::reply(res).await
}

async fn a_retried_create_returns_the_first_response(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let first = post_with_key(app, &tenant.key, "create-1", json!({ "name": "once" })).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = post_with_key(app, &tenant.key, "create-1", json!({ "name": "once" })).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the first response, byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(again.header("x-ratelimit-limit").is_some());
    let other = post_with_key(app, &tenant.key, "create-2", json!({ "name": "once" })).await;
    assert_ne!(other.data()["id"], first.data()["id"]);
    let list = app.get("/api/v1/projects", &tenant.key).await;
    assert_eq!(list.data().as_array().unwrap().len(), 2);
    // A refused request is kept too: its retry is refused the same way.
    let bad = post_with_key(app, &tenant.key, "create-3", json!({ "name": "" })).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        post_with_key(app, &tenant.key, "create-3", json!({ "name": "" }))
            .await
            .body,
        bad.body
    );
}

async fn a_reused_key_with_another_body_is_refused(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    assert_eq!(
        post_with_key(app, &tenant.key, "k", json!({ "name": "one" }))
            .await
            .status,
        201
    );
    let res = post_with_key(app, &tenant.key, "k", json!({ "name": "two" })).await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert_eq!(res.code(), "IDEMPOTENCY_KEY_REUSED");
    let list = app.get("/api/v1/projects", &tenant.key).await;
    assert_eq!(list.data().as_array().unwrap().len(), 1);
    let res = post_with_key(
        app,
        &tenant.key,
        &"x".repeat(300),
        json!({ "name": "long" }),
    )
    .await;
    assert_eq!(res.status, 400);
}

async fn idempotency_keys_belong_to_their_caller(app: &TestApp) {
    let a = app.tenant("A", "free").await;
    let b = app.tenant("B", "free").await;
    let on_a = post_with_key(app, &a.key, "same", json!({ "name": "p" })).await;
    let on_b = post_with_key(app, &b.key, "same", json!({ "name": "p" })).await;
    assert_eq!(on_b.status, 201);
    assert_ne!(on_a.data()["id"], on_b.data()["id"]);
    assert_eq!(on_b.data()["tenant_id"], b.id.as_str());
}
