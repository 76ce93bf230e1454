//! The cross-tenant matrix: tenant A's credentials against every route with tenant B's ids.
//! None succeeds, and none answers differently from an id that does not exist.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{backend_tests, TestApp};

backend_tests!(no_tenant_reaches_another_tenants_data);

async fn no_tenant_reaches_another_tenants_data(app: &TestApp) {
    let a = app.tenant("A", "free").await;
    let b = app.tenant("B", "free").await;
    let b_project = app.project(&b.key, "secret plans").await;
    let b_key = app
        .post(
            "/api/v1/api-keys",
            &b.key,
            json!({ "name": "b", "type": "ci" }),
        )
        .await;
    let b_key_id = b_key.data()["id"].as_str().unwrap().to_string();
    app.post(
        "/api/v1/users",
        &b.key,
        json!({ "email": "b@b.example", "name": "B" }),
    )
    .await;
    let ghost_tenant = "ten_00000000000000000000000000000000";
    let ghost_project = "proj_00000000000000000000000000000000";
    let ghost_key = "key_00000000000000000000000000000000";

    // Each request is tried with B's real id and with an id that does not exist.
    let b_id = b.id.as_str();
    let routes: Vec<(Method, String, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/api/v1/tenants/{b_id}"),
            format!("/api/v1/tenants/{ghost_tenant}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/tenants/{b_id}/settings"),
            format!("/api/v1/tenants/{ghost_tenant}/settings"),
            Some(json!({ "locale": "xx" })),
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{b_project}"),
            format!("/api/v1/projects/{ghost_project}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{b_project}"),
            format!("/api/v1/projects/{ghost_project}"),
            Some(json!({ "name": "mine now" })),
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{b_project}"),
            format!("/api/v1/projects/{ghost_project}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{b_project}?tenant_id={b_id}"),
            format!("/api/v1/projects/{ghost_project}?tenant_id={ghost_tenant}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/projects?tenant_id={b_id}"),
            format!("/api/v1/projects?tenant_id={ghost_tenant}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/users?tenant_id={b_id}"),
            format!("/api/v1/users?tenant_id={ghost_tenant}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/api-keys?tenant_id={b_id}"),
            format!("/api/v1/api-keys?tenant_id={ghost_tenant}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/api-keys/{b_key_id}"),
            format!("/api/v1/api-keys/{ghost_key}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/projects?tenant_id={b_id}"),
            format!("/api/v1/projects?tenant_id={ghost_tenant}"),
            Some(json!({ "name": "planted" })),
        ),
    ];
    for (method, real, ghost, body) in routes {
        let on_b = app
            .call(method.clone(), &real, Some(&a.key), body.as_ref())
            .await;
        let on_ghost = app
            .call(method.clone(), &ghost, Some(&a.key), body.as_ref())
            .await;
        assert_eq!(on_b.status, 404, "{method} {real}: {}", on_b.body);
        assert_eq!(on_b.code(), "RESOURCE_NOT_FOUND", "{method} {real}");
        assert_eq!(
            (on_b.status, on_b.code()),
            (on_ghost.status, on_ghost.code()),
            "{method} {real} leaks existence"
        );
        assert!(
            !on_b.body.to_string().contains("secret plans"),
            "{method} {real} leaked B's data"
        );
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/users",
            json!({ "email": "x@a.example", "name": "x", "tenant_id": b_id }),
        ),
        (
            Method::POST,
            "/api/v1/api-keys",
            json!({ "name": "x", "type": "sdk", "tenant_id": b_id }),
        ),
    ] {
        let res = app
            .call(method.clone(), path, Some(&a.key), Some(&body))
            .await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.body);
    }

    // A's lists hold only A's things.
    for path in [
        "/api/v1/projects",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/tenants",
    ] {
        let res = app.get(path, &a.key).await;
        assert_eq!(res.status, 200, "{path}");
        let text = res.data().to_string();
        assert!(
            !text.contains(b_id) && !text.contains(&b_project),
            "{path} shows B's data"
        );
    }
    // B's things are all still there and unchanged.
    let project = app
        .get(&format!("/api/v1/projects/{b_project}"), &b.key)
        .await;
    assert_eq!(project.data()["name"], "secret plans");
    let keys = app.get("/api/v1/api-keys", &b.key).await;
    assert!(keys
        .data()
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["revoked_at"].is_null()));
    let tenant = app.get(&format!("/api/v1/tenants/{b_id}"), &b.key).await;
    assert_eq!(tenant.data()["settings"]["locale"], "en-US");
    let projects = app.get("/api/v1/projects", &b.key).await;
    assert_eq!(projects.data().as_array().unwrap().len(), 1);
}
