//! The OpenAPI document is collected from the route registration: every operation it
//! lists is served, and other methods on its paths get the 405 envelope.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

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
    // Routes are registered once (http::routes), and the document is collected from that
    // registration: what it lists is what is served. Each operation answers below, and
    // every other method on a listed path is the 405 envelope.
    assert!(listed.len() >= 58, "{} operations", listed.len());
    for path in doc["paths"].as_object().unwrap().keys() {
        let methods: Vec<&str> = doc["paths"][path]
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.as_str())
            .collect();
        let Some(other) = ["get", "post", "patch", "put", "delete"]
            .into_iter()
            .find(|m| !methods.contains(m))
        else {
            continue;
        };
        let concrete = path
            .replace("{tenant_id}", "ten_00000000000000000000000000")
            .replace("{feature_key}", "byos")
            .replace("{run_id}", "run_00000000000000000000000000")
            .replace("{delivery_id}", "msg_00000000000000000000000000")
            .replace("{id}", "x_00000000000000000000000000");
        let res = app
            .call(
                other.to_uppercase().parse().unwrap(),
                &concrete,
                Some(&app.operator_key),
                None,
            )
            .await;
        assert_eq!(res.status, 405, "{other} {concrete}: {}", res.body);
        assert_eq!(res.code(), "METHOD_NOT_ALLOWED");
    }

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
