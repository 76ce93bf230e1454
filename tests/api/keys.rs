use serde_json::json;

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    a_key_is_shown_once_listed_without_its_secret_and_revoked,
    scopes_are_enforced,
    a_key_cannot_grant_scopes_it_lacks,
    an_operator_makes_keys_in_the_tenant_it_names,
    bad_key_requests_are_400,
    operator_keys_are_made_only_by_operators,
);

async fn a_key_is_shown_once_listed_without_its_secret_and_revoked(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let made = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "deploy", "type": "ci", "environment": "staging", "expires_at": "2099-01-01T00:00:00+02:00" }),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let key = made.data()["key"].as_str().unwrap();
    assert!(key.starts_with("chy_ci_"), "{key}");
    assert_eq!(made.data()["type"], "ci");
    assert_eq!(made.data()["environment"], "staging");
    assert_eq!(made.data()["expires_at"], "2098-12-31T22:00:00.000Z");
    assert_eq!(made.data()["tenant_id"], tenant.id.as_str());
    assert!(key.starts_with(made.data()["prefix"].as_str().unwrap()));

    let list = app.get("/api/v1/api-keys", &tenant.key).await;
    assert_eq!(list.status, 200);
    let keys = list.data().as_array().unwrap();
    assert_eq!(keys.len(), 2, "the tenant's first key and the new one");
    assert!(keys
        .iter()
        .all(|k| k.get("key").is_none() && k.get("hash").is_none()));
    assert!(
        !list.body.to_string().contains(key),
        "the secret is never listed"
    );

    // The key works, and its use is recorded.
    assert_eq!(app.get("/api/v1/projects", key).await.status, 200);
    let id = made.data()["id"].as_str().unwrap();
    let mut used = false;
    for _ in 0..50 {
        let list = app.get("/api/v1/api-keys", &tenant.key).await;
        let row = list
            .data()
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .cloned()
            .unwrap();
        if row["last_used_at"].is_string() {
            used = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(used, "last_used_at is written after a use");

    let revoked = app
        .delete(&format!("/api/v1/api-keys/{id}"), &tenant.key)
        .await;
    assert_eq!(revoked.status, 200);
    let again = app
        .delete(&format!("/api/v1/api-keys/{id}"), &tenant.key)
        .await;
    assert_eq!(again.status, 200, "revoking twice is harmless");
    assert_eq!(again.data()["revoked_at"], revoked.data()["revoked_at"]);
    let missing = app
        .delete(
            "/api/v1/api-keys/key_00000000000000000000000000000000",
            &tenant.key,
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "RESOURCE_NOT_FOUND");
}

async fn scopes_are_enforced(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let made = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "reader", "type": "int", "scopes": ["projects:read"] }),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.data()["scopes"], json!(["projects:read"]));
    let reader = made.data()["key"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/projects", reader).await.status, 200);
    for res in [
        app.post("/api/v1/projects", reader, json!({ "name": "x" }))
            .await,
        app.get("/api/v1/users", reader).await,
        app.get("/api/v1/api-keys", reader).await,
        app.get(&format!("/api/v1/tenants/{}", tenant.id), reader)
            .await,
        app.patch(
            &format!("/api/v1/tenants/{}/settings", tenant.id),
            reader,
            json!({ "locale": "fr-FR" }),
        )
        .await,
    ] {
        assert_eq!(res.status, 403, "{}", res.body);
        assert_eq!(res.code(), "FORBIDDEN");
    }
}

async fn a_key_cannot_grant_scopes_it_lacks(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let made = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "keys", "type": "sdk", "scopes": ["keys:write", "projects:read"] }),
        )
        .await;
    let limited = made.data()["key"].as_str().unwrap();
    let res = app
        .post(
            "/api/v1/api-keys",
            limited,
            json!({ "name": "more", "type": "sdk", "scopes": ["projects:write"] }),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    // With no scopes named, a new key gets the caller's tenant scopes, no more.
    let res = app
        .post(
            "/api/v1/api-keys",
            limited,
            json!({ "name": "same", "type": "sdk" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.data()["scopes"], json!(["keys:write", "projects:read"]));
}

async fn an_operator_makes_keys_in_the_tenant_it_names(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .post(
            "/api/v1/api-keys",
            &app.operator_key,
            json!({ "name": "support", "type": "cli", "tenant_id": tenant.id }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.data()["tenant_id"], tenant.id.as_str());
    let key = res.data()["key"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/projects", key).await.status, 200);
    // Without a tenant, an operator's tenant key has nowhere to go.
    let res = app
        .post(
            "/api/v1/api-keys",
            &app.operator_key,
            json!({ "name": "x", "type": "cli" }),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"]["details"]["field"], "tenant_id");
    let res = app
        .post(
            "/api/v1/api-keys",
            &app.operator_key,
            json!({ "name": "x", "type": "cli", "tenant_id": "ten_00000000000000000000000000000000" }),
        )
        .await;
    assert_eq!(res.status, 404);
    // The operator lists a tenant's keys by naming it.
    let list = app
        .get(
            &format!("/api/v1/api-keys?tenant_id={}", tenant.id),
            &app.operator_key,
        )
        .await;
    assert_eq!(list.data().as_array().unwrap().len(), 2);
}

async fn bad_key_requests_are_400(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    for (body, field) in [
        (json!({ "name": "x", "type": "admin" }), "type"),
        (
            json!({ "name": "x", "type": "sdk", "scopes": ["root"] }),
            "scopes",
        ),
        (
            json!({ "name": "x", "type": "sdk", "environment": "moon" }),
            "environment",
        ),
        (
            json!({ "name": "x", "type": "sdk", "expires_at": "tomorrow" }),
            "expires_at",
        ),
        (
            json!({ "name": "x", "type": "sdk", "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at",
        ),
        (json!({ "name": "", "type": "sdk" }), "name"),
        (json!({ "type": "sdk" }), "name"),
    ] {
        let res = app
            .post("/api/v1/api-keys", &tenant.key, body.clone())
            .await;
        assert_eq!(res.status, 400, "{body}");
        assert_eq!(res.body["error"]["details"]["field"], field, "{body}");
    }
}

async fn operator_keys_are_made_only_by_operators(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "x", "type": "op" }),
        )
        .await;
    assert_eq!(res.status, 403);
    let res = app
        .post(
            "/api/v1/api-keys",
            &app.operator_key,
            json!({ "name": "second operator", "type": "op" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let key = res.data()["key"].as_str().unwrap();
    assert!(key.starts_with("chy_op_"));
    assert_eq!(app.get("/api/v1/tenants", key).await.status, 200);
    let list = app.get("/api/v1/api-keys", &app.operator_key).await;
    assert_eq!(
        list.data().as_array().unwrap().len(),
        2,
        "the bootstrap key and the new one"
    );
}
