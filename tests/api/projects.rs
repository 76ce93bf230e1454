use serde_json::json;

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    a_project_is_created_read_updated_and_deleted,
    projects_are_listed_newest_first_in_pages,
    every_project_change_records_its_event,
    an_operator_works_in_a_tenant_it_names,
);

async fn a_project_is_created_read_updated_and_deleted(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let res = app
        .post(
            "/api/v1/projects",
            &tenant.key,
            json!({ "name": "My AI App", "description": "An AI-powered application", "language": "TypeScript",
                    "metadata": { "team": "web", "tags": ["a", "b"] } }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let project = res.data().clone();
    let id = project["id"].as_str().unwrap();
    assert!(id.starts_with("proj_"));
    assert_eq!(project["tenant_id"], tenant.id.as_str());
    assert_eq!(project["metadata"]["tags"], json!(["a", "b"]));
    assert!(project["created_at"].as_str().unwrap().ends_with('Z'));

    let read = app
        .get(&format!("/api/v1/projects/{id}"), &tenant.key)
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.data(), &project);

    let res = app
        .patch(
            &format!("/api/v1/projects/{id}"),
            &tenant.key,
            json!({ "name": "Renamed", "description": null }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["name"], "Renamed");
    assert!(res.data()["description"].is_null());
    assert_eq!(
        res.data()["language"],
        "TypeScript",
        "fields not named stay"
    );
    assert_eq!(res.data()["metadata"]["team"], "web");
    assert!(res.data()["updated_at"].as_str().unwrap() >= project["updated_at"].as_str().unwrap());

    let res = app
        .patch(
            &format!("/api/v1/projects/{id}"),
            &tenant.key,
            json!({ "name": "  " }),
        )
        .await;
    assert_eq!(res.status, 400);

    let res = app
        .delete(&format!("/api/v1/projects/{id}"), &tenant.key)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.data(), &json!({ "id": id, "deleted": true }));
    for res in [
        app.get(&format!("/api/v1/projects/{id}"), &tenant.key)
            .await,
        app.patch(
            &format!("/api/v1/projects/{id}"),
            &tenant.key,
            json!({ "name": "x" }),
        )
        .await,
        app.delete(&format!("/api/v1/projects/{id}"), &tenant.key)
            .await,
    ] {
        assert_eq!(res.status, 404);
        assert_eq!(res.code(), "RESOURCE_NOT_FOUND");
        assert_eq!(res.body["error"]["details"]["project_id"], id);
    }
}

async fn projects_are_listed_newest_first_in_pages(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(app.project(&tenant.key, &format!("p{i}")).await);
    }
    made.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/projects?limit=2&cursor={c}"),
            None => "/api/v1/projects?limit=2".to_string(),
        };
        let page = app.get(&path, &tenant.key).await;
        assert_eq!(page.status, 200);
        seen.extend(
            page.data()
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_string()),
        );
        match page.body["meta"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, made);
}

async fn every_project_change_records_its_event(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let id = app.project(&tenant.key, "p").await;
    app.patch(
        &format!("/api/v1/projects/{id}"),
        &tenant.key,
        json!({ "language": "Rust" }),
    )
    .await;
    app.delete(&format!("/api/v1/projects/{id}"), &tenant.key)
        .await;
    let events = app.state.store.outbox_events(&tenant.id).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "tenant.created",
            "project.created",
            "project.updated",
            "project.deleted"
        ]
    );
    assert_eq!(events[2].payload["language"], "Rust");
    assert!(events
        .iter()
        .all(|e| e.id.starts_with("evt_") && e.tenant_id == tenant.id));
}

async fn an_operator_works_in_a_tenant_it_names(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let id = app.project(&tenant.key, "p").await;
    let res = app
        .get(
            &format!("/api/v1/projects/{id}?tenant_id={}", tenant.id),
            &app.operator_key,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app.get("/api/v1/projects", &app.operator_key).await;
    assert_eq!(res.status, 400, "an operator must name the tenant");
    assert_eq!(res.body["error"]["details"]["field"], "tenant_id");
}
