use figment::providers::Serialized;
use figment::Figment;
use serde_json::json;

use crate::helpers::{Backend, TestApp};

fn small_limits(f: Figment) -> Figment {
    f.merge(Serialized::default("plans.free.rate_limit.per_key", 3))
        .merge(Serialized::default("plans.free.rate_limit.per_tenant", 4))
        .merge(Serialized::default(
            "plans.platform.rate_limit.per_key",
            1000,
        ))
}

#[actix_web::test]
async fn each_response_reports_the_budget_and_the_key_is_refused_past_it() {
    let app = TestApp::spawn(Backend::Sqlite, small_limits).await.unwrap();
    let tenant = app.tenant("Acme", "free").await;
    for remaining in ["2", "1", "0"] {
        let res = app.get("/api/v1/projects", &tenant.key).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(res.header("x-ratelimit-remaining"), Some(remaining));
        let reset: u64 = res.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset > dgidgi::http::unix_now() && reset <= dgidgi::http::unix_now() + 60);
    }
    let refused = app.get("/api/v1/projects", &tenant.key).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.code(), "RATE_LIMIT_EXCEEDED");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // The auth endpoint is never limited.
    for _ in 0..10 {
        let res = app.token(&tenant.key).await;
        assert_eq!(res.status, 200);
        assert!(res.header("x-ratelimit-limit").is_none());
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_tenant_ceiling_caps_all_its_keys_together() {
    let app = TestApp::spawn(Backend::Sqlite, small_limits).await.unwrap();
    let tenant = app.tenant("Acme", "free").await;
    let other = app.tenant("Other", "free").await;
    let second = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "2", "type": "sdk" }),
        )
        .await;
    let second = second.data()["key"].as_str().unwrap().to_string();
    // The first key spent 1 creating the second: 3 of the tenant's 4 are left.
    assert_eq!(app.get("/api/v1/projects", &tenant.key).await.status, 200);
    assert_eq!(app.get("/api/v1/projects", &second).await.status, 200);
    let last = app.get("/api/v1/projects", &second).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));
    let refused = app.get("/api/v1/projects", &second).await;
    assert_eq!(
        refused.status, 429,
        "the second key has budget left but the tenant has none"
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        app.get("/api/v1/projects", &other.key).await.status,
        200,
        "other tenants are not affected"
    );
    app.stop().await;
}
