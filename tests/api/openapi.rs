//! The OpenAPI document covers every route, and every operation it lists is served.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

/// Every route the server has (README's route table), as (method, path template).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/api/v1/auth/token"),
    ("get", "/api/v1/tenants"),
    ("post", "/api/v1/tenants"),
    ("get", "/api/v1/tenants/{id}"),
    ("patch", "/api/v1/tenants/{id}/settings"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/api-keys"),
    ("post", "/api/v1/api-keys"),
    ("delete", "/api/v1/api-keys/{id}"),
    ("get", "/api/v1/projects"),
    ("post", "/api/v1/projects"),
    ("get", "/api/v1/projects/{id}"),
    ("patch", "/api/v1/projects/{id}"),
    ("delete", "/api/v1/projects/{id}"),
    ("get", "/api/v1/agents"),
    ("post", "/api/v1/agents"),
    ("get", "/api/v1/agents/{id}"),
    ("patch", "/api/v1/agents/{id}"),
    ("delete", "/api/v1/agents/{id}"),
    ("post", "/api/v1/agents/{id}/execute"),
    ("get", "/api/v1/agents/{id}/runs"),
    ("get", "/api/v1/agents/{id}/runs/{run_id}"),
    ("post", "/api/v1/agents/{id}/runs/{run_id}/cancel"),
    ("get", "/api/v1/agents/{id}/runs/{run_id}/stream"),
    ("get", "/api/v1/chat/sessions"),
    ("post", "/api/v1/chat/sessions"),
    ("get", "/api/v1/chat/sessions/{id}"),
    ("delete", "/api/v1/chat/sessions/{id}"),
    ("get", "/api/v1/chat/sessions/{id}/messages"),
    ("post", "/api/v1/chat/sessions/{id}/messages"),
    ("post", "/api/v1/chat/sessions/{id}/cancel"),
    ("get", "/api/v1/chat/sessions/{id}/stream"),
    ("get", "/api/v1/webhooks"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{id}"),
    ("patch", "/api/v1/webhooks/{id}"),
    ("delete", "/api/v1/webhooks/{id}"),
    ("get", "/api/v1/webhooks/{id}/deliveries"),
    (
        "post",
        "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    ),
    ("post", "/api/v1/webhooks/{id}/test"),
    ("post", "/api/v1/webhooks/{id}/rotate-secret"),
    ("get", "/api/v1/regions"),
    ("get", "/api/v1/regions/preferences/{tenant_id}"),
    ("patch", "/api/v1/regions/preferences/{tenant_id}"),
    ("get", "/api/v1/regions/storage/{tenant_id}"),
    ("put", "/api/v1/regions/storage/{tenant_id}"),
    ("post", "/api/v1/regions/storage/{tenant_id}/validate"),
    (
        "get",
        "/api/v1/regions/features/{tenant_id}/check/{feature_key}",
    ),
    ("get", "/api/v1/routing-info"),
    ("get", "/metrics"),
    ("get", "/api/v1/ops/actors"),
    ("get", "/api/v1/ops/actors/stream"),
    ("get", "/ops"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/docs"),
];

#[actix_web::test]
async fn the_document_lists_every_route_and_every_listed_route_is_served() {
    let app = TestApp::plain(Backend::Sqlite).await.unwrap();
    let res = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    // The camelCase spellings the contract's SDK sends are in the request schemas too.
    let schemas = &doc["components"]["schemas"];
    for (schema, field, twin) in [
        ("CreateAgent", "project_id", "projectId"),
        ("CreateAgent", "system_prompt", "systemPrompt"),
        ("Execute", "project_id", "projectId"),
        ("CreateSession", "project_id", "projectId"),
        ("CreateSession", "system_prompt", "systemPrompt"),
        ("SettingsBody", "max_concurrent_runs", "maxConcurrentRuns"),
    ] {
        let properties = &schemas[schema]["properties"];
        assert!(properties[field].is_object(), "{schema}.{field}");
        assert!(
            properties[twin].is_object(),
            "{schema}.{twin}: {properties}"
        );
    }
    let required = schemas["CreateSession"]["required"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !required.contains(&Value::from("project_id")),
        "either spelling may be sent"
    );
    assert!(schemas["ErrorBody"]["required"]
        .as_array()
        .unwrap()
        .contains(&Value::from("details")));

    let mut listed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.push((method.clone(), path.clone()));
        }
    }
    listed.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "the document and the routes differ");

    // Each operation is served: with dummy ids it may be refused or not found, but never
    // "no route", never 405, never a 5xx.
    for (method, path) in &listed {
        let concrete = path
            .replace("{tenant_id}", "ten_00000000000000000000000000")
            .replace("{feature_key}", "byos")
            .replace("{run_id}", "run_00000000000000000000000000")
            .replace("{delivery_id}", "msg_00000000000000000000000000")
            .replace("{id}", "x_00000000000000000000000000");
        let method: Method = method.to_uppercase().parse().unwrap();
        let mut req = app
            .client
            .request(method.clone(), format!("{}{concrete}", app.address))
            .bearer_auth(&app.operator_key);
        if ["POST", "PATCH", "PUT"].contains(&method.as_str()) {
            req = req.json(&serde_json::json!({}));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = if res
            .headers()
            .get("content-type")
            .is_some_and(|c| c == "text/event-stream")
        {
            String::new()
        } else {
            res.text().await.unwrap()
        };
        assert!(
            status < 500 && status != 405,
            "{method} {concrete}: {status} {text}"
        );
        assert!(
            !text.contains("No route for"),
            "{method} {concrete} is not routed"
        );
    }

    // SSE endpoints say so; errors point at the error envelope.
    let stream = &doc["paths"]["/api/v1/agents/{id}/runs/{run_id}/stream"]["get"];
    assert!(
        stream["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{stream}"
    );
    let get_project = &doc["paths"]["/api/v1/projects/{id}"]["get"];
    assert_eq!(
        get_project["responses"]["404"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorEnvelope"
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let docs = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/api/v1/openapi.json"));
    app.stop().await;
}

#[test]
fn the_readme_and_architecture_links_resolve_inside_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..];
            let target = &target[..target.find(')').unwrap_or(target.len())];
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let resolved = root.join(path);
            assert!(
                resolved.exists() && resolved.starts_with(root) && !path.contains(".."),
                "{doc} links to {target}, which is not in the repository"
            );
        }
    }
}
