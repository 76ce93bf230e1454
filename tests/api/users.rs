use serde_json::json;

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    users_are_created_listed_and_recorded,
    a_used_email_is_a_conflict,
    bad_users_are_400
);

async fn users_are_created_listed_and_recorded(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .post(
            "/api/v1/users",
            &tenant.key,
            json!({ "email": " Ada@Example.COM ", "name": "Ada", "role": "admin" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert!(res.data()["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(res.data()["email"], "ada@example.com");
    assert_eq!(res.data()["role"], "admin");
    let res = app
        .post(
            "/api/v1/users",
            &tenant.key,
            json!({ "email": "bob@example.com", "name": "Bob" }),
        )
        .await;
    assert_eq!(res.data()["role"], "member");
    let list = app.get("/api/v1/users", &tenant.key).await;
    let emails: Vec<_> = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["bob@example.com", "ada@example.com"]);
    let events = app.state.store.outbox_events(&tenant.id).await.unwrap();
    let users = events
        .iter()
        .filter(|e| e.event_type == "user.created")
        .count();
    assert_eq!(users, 2);
    // An operator acts in a tenant it names.
    let res = app
        .post(
            "/api/v1/users",
            &app.operator_key,
            json!({ "email": "op@example.com", "name": "Op", "tenant_id": tenant.id }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.data()["tenant_id"], tenant.id.as_str());
}

async fn a_used_email_is_a_conflict(app: &TestApp) {
    let a = app.tenant("A", "free").await;
    let b = app.tenant("B", "free").await;
    let body = json!({ "email": "ada@example.com", "name": "Ada" });
    assert_eq!(
        app.post("/api/v1/users", &a.key, body.clone()).await.status,
        201
    );
    let again = app
        .post(
            "/api/v1/users",
            &a.key,
            json!({ "email": "ADA@example.com", "name": "Ada 2" }),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.code(), "CONFLICT");
    assert_eq!(
        app.post("/api/v1/users", &b.key, body).await.status,
        201,
        "emails are unique per tenant"
    );
}

async fn bad_users_are_400(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    for (body, field) in [
        (json!({ "email": "not-an-email", "name": "x" }), "email"),
        (json!({ "email": "a@b", "name": "x" }), "email"),
        (json!({ "email": "a b@c.de", "name": "x" }), "email"),
        (
            json!({ "email": "a@c.de", "name": "x", "role": "god" }),
            "role",
        ),
        (json!({ "email": "a@c.de" }), "name"),
    ] {
        let res = app.post("/api/v1/users", &tenant.key, body.clone()).await;
        assert_eq!(res.status, 400, "{body}");
        assert_eq!(res.body["error"]["details"]["field"], field, "{body}");
    }
}
