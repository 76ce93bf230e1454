//! The runtime's own secrets are not in the database: a copy of it neither mints tokens
//! nor opens sealed secrets. Legacy databases move theirs out without locking anyone out,
//! and the sealing key rotates.

use std::os::unix::fs::PermissionsExt;

use dgidgi::auth::Claims;
use dgidgi::sealing::Sealer;
use figment::providers::Serialized;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use sqlx::Row;

use crate::helpers::{backend_tests, Backend, TestApp};

backend_tests!(
    the_database_holds_neither_the_jwt_secret_nor_the_sealing_key,
    a_legacy_database_moves_its_secrets_out_and_keeps_what_they_sealed,
    the_sealing_key_rotates_and_stored_secrets_follow,
    a_token_names_a_live_key_of_its_kind_and_no_scope_beyond_it,
);

fn token(app: &TestApp, secret: &str, sub: &str, tid: Option<&str>, scopes: &[&str]) -> String {
    let now = dgidgi::http::unix_now();
    let config = &app.state.config.auth;
    let claims = Claims {
        iss: config.jwt_issuer.clone(),
        aud: config.jwt_audience.clone(),
        sub: sub.into(),
        tid: tid.map(str::to_string),
        scp: scopes.iter().map(|s| s.to_string()).collect(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: "forged".into(),
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn operator_key_id(app: &TestApp) -> String {
    let keys = app.get("/api/v1/api-keys", &app.operator_key).await;
    keys.data()[0]["id"].as_str().unwrap().to_string()
}

/// A webhook endpoint of a new tenant; answers its id and its secret (shown once).
async fn endpoint(app: &TestApp) -> (String, String) {
    let tenant = app.tenant("Acme", "growth").await;
    let made = app
        .post(
            "/api/v1/webhooks",
            &tenant.key,
            json!({ "url": "https://hooks.example.com/in", "events": ["project.created"] }),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    (
        made.data()["id"].as_str().unwrap().to_string(),
        made.data()["secret"].as_str().unwrap().to_string(),
    )
}

async fn stored_secret(app: &TestApp, endpoint: &str) -> String {
    let db = app.database().await;
    let row = sqlx::query("SELECT secret FROM webhook_endpoints WHERE id = $1")
        .bind(endpoint)
        .fetch_one(&db)
        .await
        .unwrap();
    row.try_get("secret").unwrap()
}

async fn the_database_holds_neither_the_jwt_secret_nor_the_sealing_key(app: &TestApp) {
    let (id, secret) = endpoint(app).await;
    let db = app.database().await;
    let names: Vec<String> = sqlx::query("SELECT name FROM runtime_settings")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("name").unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "jwt_secret" || n == "secrets_key"),
        "{names:?}"
    );
    let sealed = stored_secret(app, &id).await;
    assert!(!sealed.contains(&secret));
    let opened = Sealer::from_base64(&app.sealing_key())
        .unwrap()
        .open(&sealed)
        .unwrap();
    assert_eq!(opened, secret);
    if app.state.config.database.url.starts_with("sqlite:") {
        // The embedded default keeps them in a key file beside the database, owner-only,
        // and nowhere in the database file.
        let file = app.dir().join("nested/dgidgi.keys");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let bytes = std::fs::read(app.dir().join("nested/dgidgi.db")).unwrap();
        for value in [app.jwt_secret.clone(), app.sealing_key()] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "a secret is in the database file"
            );
        }
    }
}

async fn a_legacy_database_moves_its_secrets_out_and_keeps_what_they_sealed(app: &TestApp) {
    let (id, secret) = endpoint(app).await;
    let operator = operator_key_id(app).await;
    // The database as an earlier version left it: both secrets stored in it, and the
    // webhook secret sealed with the stored key; no key file.
    let (old_jwt, old_key) = (
        "legacy-jwt-secret-legacy-jwt-secret-00",
        Sealer::generate_key(),
    );
    let db = app.database().await;
    for (name, value) in [("jwt_secret", old_jwt), ("secrets_key", old_key.as_str())] {
        sqlx::query("INSERT INTO runtime_settings (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(value)
            .execute(&db)
            .await
            .unwrap();
    }
    let sealed_old = Sealer::from_base64(&old_key).unwrap().seal(&secret);
    sqlx::query("UPDATE webhook_endpoints SET secret = $2 WHERE id = $1")
        .bind(&id)
        .bind(&sealed_old)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let _ = std::fs::remove_file(app.dir().join("nested/dgidgi.keys"));
    // The legacy secret mints a token that the old server accepted.
    let forged = token(app, old_jwt, &operator, None, &[]);

    let app = app.restart(|f| f).await;
    let db = app.database().await;
    let left = sqlx::query(
        "SELECT COUNT(*) AS n FROM runtime_settings WHERE name IN ('jwt_secret', 'secrets_key')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        left.try_get::<i64, _>("n").unwrap(),
        0,
        "legacy rows deleted"
    );
    for path in ["/api/v1/tenants", "/metrics"] {
        let res = app.get(path, &forged).await;
        assert_eq!(res.status, 401, "{path} with a token of the stored secret");
    }
    // Nothing is locked out: the webhook secret is sealed with the new key, unchanged.
    let sealed_now = stored_secret(&app, &id).await;
    assert_ne!(sealed_now, sealed_old);
    let opened = Sealer::from_base64(&app.sealing_key())
        .unwrap()
        .open(&sealed_now)
        .unwrap();
    assert_eq!(opened, secret);
    assert_eq!(
        app.get("/api/v1/tenants", &app.operator_key).await.status,
        200
    );
    app.stop().await;
}

async fn the_sealing_key_rotates_and_stored_secrets_follow(app: &TestApp) {
    let (id, secret) = endpoint(app).await;
    let old = app.sealing_key();
    let new = Sealer::generate_key();
    let (old2, new2) = (old.clone(), new.clone());
    let app = app
        .restart(move |f| {
            f.merge(Serialized::default("secrets.key", new2))
                .merge(Serialized::default("secrets.previous_keys", vec![old2]))
        })
        .await;
    let sealed = stored_secret(&app, &id).await;
    assert_eq!(
        Sealer::from_base64(&new).unwrap().open(&sealed).unwrap(),
        secret
    );
    assert!(Sealer::from_base64(&old).unwrap().open(&sealed).is_err());
    // The old key can go: the server starts on the new one alone and still signs.
    let new3 = new.clone();
    let app = app
        .restart(move |f| f.merge(Serialized::default("secrets.key", new3)))
        .await;
    let test = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/webhooks/{id}/test"),
            Some(&app.operator_key),
            None,
        )
        .await;
    assert!(test.status < 500, "{}", test.body);
    app.stop().await;
}

async fn a_token_names_a_live_key_of_its_kind_and_no_scope_beyond_it(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let operator = operator_key_id(app).await;
    // An operator key's id with a tenant's tid, and a tenant key's id with no tid.
    let mixed = token(
        app,
        &app.jwt_secret,
        &operator,
        Some(&tenant.id),
        &["projects:read"],
    );
    assert_eq!(app.get("/api/v1/projects", &mixed).await.status, 401);
    let unowned = token(app, &app.jwt_secret, &tenant.key_id, None, &[]);
    assert_eq!(app.get("/api/v1/tenants", &unowned).await.status, 401);
    // A read-only key's token that claims more scopes gets only its key's.
    let narrow = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "ro", "type": "sdk", "scopes": ["projects:read"] }),
        )
        .await;
    let narrow_id = narrow.data()["id"].as_str().unwrap();
    let claimed = token(
        app,
        &app.jwt_secret,
        narrow_id,
        Some(&tenant.id),
        &["projects:read", "projects:write", "keys:write"],
    );
    assert_eq!(app.get("/api/v1/projects", &claimed).await.status, 200);
    let denied = app
        .post("/api/v1/projects", &claimed, json!({ "name": "no" }))
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
}

#[actix_web::test]
async fn postgres_refuses_to_start_without_configured_secrets() {
    let Some(app) = TestApp::plain(Backend::Postgres).await else {
        return;
    };
    let mut config = app.state.config.clone();
    config.auth.jwt_secret.clear();
    config.secrets.key.clear();
    let providers = dgidgi::providers::Providers::from_config(&config).unwrap();
    let refused = dgidgi::startup::Application::build_with(config, providers).await;
    let message = format!("{:#}", refused.err().expect("start-up refused"));
    assert!(
        message.contains("auth.jwt_secret") && message.contains("secrets.key"),
        "{message}"
    );
    app.stop().await;
}
