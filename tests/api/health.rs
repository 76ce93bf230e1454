use crate::helpers::{backend_tests, TestApp};
use reqwest::Method;

backend_tests!(
    healthz_and_readyz_answer_without_credentials,
    every_response_carries_its_request_id
);

async fn healthz_and_readyz_answer_without_credentials(app: &TestApp) {
    let live = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.data()["status"], "ok");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.data()["database"], "ok");
}

async fn every_response_carries_its_request_id(app: &TestApp) {
    for res in [
        app.call(Method::GET, "/healthz", None, None).await,
        app.call(Method::GET, "/api/v1/projects", None, None).await,
        app.get("/api/v1/tenants", &app.operator_key).await,
    ] {
        let id = res.body["meta"]["request_id"].as_str().unwrap();
        assert!(id.starts_with("req_"), "{id}");
        assert_eq!(res.header("x-request-id"), Some(id));
        let ts = res.body["meta"]["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "{ts}"
        );
    }
}
