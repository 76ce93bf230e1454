use figment::providers::Serialized;
use serde_json::json;

use crate::helpers::{backend_tests, eventually, Backend, TestApp};

backend_tests!(
    an_operator_creates_a_tenant_whose_first_key_works,
    only_operators_create_tenants,
    an_operator_lists_every_tenant_and_a_tenant_sees_itself,
    settings_are_validated_and_kept,
    only_operators_change_plans,
);

async fn an_operator_creates_a_tenant_whose_first_key_works(app: &TestApp) {
    let res = app
        .post(
            "/api/v1/tenants",
            &app.operator_key,
            json!({ "name": "Acme", "plan": "growth" }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let data = res.data();
    assert!(data["id"].as_str().unwrap().starts_with("ten_"));
    assert_eq!(data["plan"], "growth");
    assert_eq!(data["settings"]["timezone"], "UTC");
    assert_eq!(data["api_key"]["type"], "sdk");
    assert!(data["api_key"]["scopes"].as_array().unwrap().len() > 10);
    let key = data["api_key"]["key"].as_str().unwrap();
    let own = app
        .get(
            &format!("/api/v1/tenants/{}", data["id"].as_str().unwrap()),
            key,
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.data()["name"], "Acme");
    let events = app
        .state
        .store
        .outbox_events(data["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["tenant.created"]
    );
    assert_eq!(events[0].payload["name"], "Acme");
    // The plan defaults to free; unknown plans are refused.
    let res = app
        .post(
            "/api/v1/tenants",
            &app.operator_key,
            json!({ "name": "Beta" }),
        )
        .await;
    assert_eq!(res.data()["plan"], "free");
    let res = app
        .post(
            "/api/v1/tenants",
            &app.operator_key,
            json!({ "name": "Gamma", "plan": "gold" }),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"]["details"]["field"], "plan");
}

async fn only_operators_create_tenants(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .post("/api/v1/tenants", &tenant.key, json!({ "name": "Evil" }))
        .await;
    assert_eq!(res.status, 403);
    assert_eq!(res.code(), "FORBIDDEN");
}

async fn an_operator_lists_every_tenant_and_a_tenant_sees_itself(app: &TestApp) {
    let a = app.tenant("A", "free").await;
    let b = app.tenant("B", "starter").await;
    let all = app.get("/api/v1/tenants", &app.operator_key).await;
    let ids: Vec<_> = all
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [b.id.clone(), a.id.clone()], "newest first");
    let own = app.get("/api/v1/tenants", &a.key).await;
    assert_eq!(own.data().as_array().unwrap().len(), 1);
    assert_eq!(own.data()[0]["id"], a.id.as_str());
    let page = app.get("/api/v1/tenants?limit=1", &app.operator_key).await;
    assert_eq!(page.data().as_array().unwrap().len(), 1);
    let cursor = page.body["meta"]["next_cursor"].as_str().unwrap();
    let next = app
        .get(
            &format!("/api/v1/tenants?limit=1&cursor={cursor}"),
            &app.operator_key,
        )
        .await;
    assert_eq!(next.data()[0]["id"], a.id.as_str());
    assert!(next.body["meta"]["next_cursor"].is_null());
}

async fn settings_are_validated_and_kept(app: &TestApp) {
    let tenant = app.tenant("Acme", "starter").await;
    let path = format!("/api/v1/tenants/{}/settings", tenant.id);
    // A new tenant may run as many at once as its plan allows.
    let read = app
        .get(&format!("/api/v1/tenants/{}", tenant.id), &tenant.key)
        .await;
    assert_eq!(read.data()["settings"]["max_concurrent_runs"], 10);
    let growth = app.tenant("Big", "growth").await;
    let read = app
        .get(&format!("/api/v1/tenants/{}", growth.id), &growth.key)
        .await;
    assert_eq!(read.data()["settings"]["max_concurrent_runs"], 50);
    // More concurrent runs than the plan includes: a 400 that states the limit.
    let res = app
        .patch(&path, &tenant.key, json!({ "max_concurrent_runs": 11 }))
        .await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert_eq!(res.code(), "VALIDATION_ERROR");
    assert_eq!(res.body["error"]["details"]["field"], "max_concurrent_runs");
    let reason = res.body["error"]["details"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("at most 10") && reason.contains("starter"),
        "{reason}"
    );
    let res = app
        .patch(
            &path,
            &tenant.key,
            json!({ "displayName": "ACME Inc", "timezone": "Europe/Paris", "max_concurrent_runs": 8,
                    "features": { "beta.tools": true, "legacy": false } }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["settings"]["display_name"], "ACME Inc");
    assert_eq!(res.data()["settings"]["max_concurrent_runs"], 8);
    // Partial: what is not named stays; null clears; a null feature is removed.
    let res = app
        .patch(
            &path,
            &tenant.key,
            json!({ "display_name": null, "features": { "legacy": null } }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let settings = &res.data()["settings"];
    assert!(settings["display_name"].is_null());
    assert_eq!(settings["timezone"], "Europe/Paris");
    assert_eq!(settings["features"], json!({ "beta.tools": true }));
    // IANA time zones and BCP 47 language tags are accepted as such.
    let res = app
        .patch(
            &path,
            &tenant.key,
            json!({ "timezone": "America/Argentina/Buenos_Aires", "locale": "zh-Hant-TW" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app
        .patch(
            &path,
            &tenant.key,
            json!({ "timezone": "Europe/Paris", "locale": "fr-FR" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    for (body, field) in [
        (json!({ "max_concurrent_runs": 0 }), "max_concurrent_runs"),
        (json!({ "max_concurrent_runs": -1 }), "max_concurrent_runs"),
        (
            json!({ "data_retention_days": 100000 }),
            "data_retention_days",
        ),
        (json!({ "timezone": "Mars/Olympus Mons" }), "timezone"),
        (json!({ "timezone": "Mars/Olympus" }), "timezone"),
        (json!({ "timezone": "Europe/Pariss" }), "timezone"),
        (json!({ "locale": "" }), "locale"),
        (json!({ "locale": "english-please" }), "locale"),
        (json!({ "locale": "en-US-" }), "locale"),
        (json!({ "locale": "x1-US" }), "locale"),
        (json!({ "features": { "has space": true } }), "features"),
        (json!({ "colour": "red" }), "colour"),
    ] {
        let res = app.patch(&path, &tenant.key, body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        assert_eq!(res.body["error"]["details"]["field"], field, "{body}");
    }
    let read = app
        .get(&format!("/api/v1/tenants/{}", tenant.id), &tenant.key)
        .await;
    assert_eq!(
        read.data()["settings"]["timezone"],
        "Europe/Paris",
        "refused patches changed nothing"
    );
    assert_eq!(read.data()["settings"]["max_concurrent_runs"], 8);
}

async fn only_operators_change_plans(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let path = format!("/api/v1/tenants/{}/settings", tenant.id);
    let res = app
        .patch(&path, &tenant.key, json!({ "plan": "enterprise" }))
        .await;
    assert_eq!(res.status, 403);
    let res = app
        .patch(&path, &app.operator_key, json!({ "plan": "enterprise" }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["plan"], "enterprise");
    // The new plan's limits apply to the tenant's keys at once.
    let res = app.get("/api/v1/projects", &tenant.key).await;
    assert_eq!(res.header("x-ratelimit-limit"), Some("20000"));
}

#[actix_web::test]
async fn an_idle_tenant_actor_passivates_and_comes_back_with_its_state() {
    let app = TestApp::spawn(Backend::Sqlite, |f| {
        f.merge(Serialized::default("actors.tenant_idle_secs", 0))
    })
    .await
    .unwrap();
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .patch(
            &format!("/api/v1/tenants/{}/settings", tenant.id),
            &tenant.key,
            json!({ "locale": "fr-FR" }),
        )
        .await;
    assert_eq!(res.status, 200);
    let passivated = eventually(std::time::Duration::from_secs(2), || async {
        app.state.tenants.actors().live() == 0
    })
    .await;
    assert!(passivated, "the idle actor left memory");
    let read = app
        .get(&format!("/api/v1/tenants/{}", tenant.id), &tenant.key)
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.data()["settings"]["locale"], "fr-FR");
    app.stop().await;
}
