use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dgidgi::auth::{generate_key, Claims, KeyType};
use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    missing_malformed_and_unknown_credentials_are_401,
    a_revoked_key_is_refused_at_once,
    an_expired_key_is_refused,
    a_token_minted_from_a_key_works_like_the_key,
    forged_expired_and_foreign_tokens_are_401,
    a_token_dies_with_the_key_it_came_from,
    the_token_endpoint_refuses_bad_keys,
);

async fn missing_malformed_and_unknown_credentials_are_401(app: &TestApp) {
    let unknown = generate_key(KeyType::Sdk).secret;
    let mut checksum_broken = unknown.clone();
    checksum_broken.pop();
    checksum_broken.push('!');
    for header in [
        None,
        Some("Basic dXNlcjpwYXNz".to_string()),
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {checksum_broken}")),
        Some("Bearer chy_sdk_short".to_string()),
        Some("Bearer not.a.jwt".to_string()),
        Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA".to_string()),
    ] {
        let mut req = app.client.get(format!("{}/api/v1/projects", app.address));
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let res = TestApp::reply(req.send().await.unwrap()).await;
        assert_eq!(res.status, 401, "{header:?}");
        assert_eq!(res.code(), "UNAUTHORIZED", "{header:?}");
        assert!(res.body["meta"]["request_id"].is_string());
    }
}

async fn a_revoked_key_is_refused_at_once(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let made = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "ci", "type": "ci" }),
        )
        .await;
    let (key, id) = (
        made.data()["key"].as_str().unwrap(),
        made.data()["id"].as_str().unwrap(),
    );
    assert_eq!(app.get("/api/v1/projects", key).await.status, 200);
    let revoked = app
        .delete(&format!("/api/v1/api-keys/{id}"), &tenant.key)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.data()["revoked_at"].is_string());
    let res = app.get("/api/v1/projects", key).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.code(), "UNAUTHORIZED");
}

async fn an_expired_key_is_refused(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let key = generate_key(KeyType::Cli);
    app.state
        .store
        .create_key(&dgidgi::store::NewApiKey {
            id: dgidgi::ids::IdKind::ApiKey.new_id(),
            tenant_id: Some(tenant.id.clone()),
            name: "old".into(),
            key_type: "cli".into(),
            prefix: key.prefix,
            hash: key.hash,
            scopes: vec!["projects:read".into()],
            environment: "production".into(),
            expires_at: Some("2020-01-01T00:00:00.000Z".into()),
            created_at: "2019-01-01T00:00:00.000Z".into(),
        })
        .await
        .unwrap();
    let res = app.get("/api/v1/projects", &key.secret).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.code(), "UNAUTHORIZED");
}

async fn a_token_minted_from_a_key_works_like_the_key(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let project = app.project(&tenant.key, "p").await;
    let res = app.token(&tenant.key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["token_type"], "Bearer");
    assert_eq!(res.data()["tenant_id"], tenant.id.as_str());
    assert!(res.data()["expires_in"].as_u64().unwrap() > 0);
    let token = res.data()["access_token"].as_str().unwrap();
    let got = app.get(&format!("/api/v1/projects/{project}"), token).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.data()["id"], project.as_str());
    // The key may also come as the Bearer header, with no body.
    let res = app
        .call(Method::POST, "/api/v1/auth/token", Some(&tenant.key), None)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // A key with fewer scopes mints a token with those scopes only.
    let narrow = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "ro", "type": "sdk", "scopes": ["projects:read"] }),
        )
        .await;
    let narrow_key = narrow.data()["key"].as_str().unwrap();
    let res = app
        .call(
            Method::POST,
            "/api/v1/auth/token",
            None,
            Some(&json!({ "apiKey": narrow_key })),
        )
        .await;
    let token = res.data()["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/projects", token).await.status, 200);
    let denied = app
        .post("/api/v1/projects", token, json!({ "name": "no" }))
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.code(), "FORBIDDEN");
}

fn claims(app: &TestApp, tenant_id: &str, key_id: &str, now: u64) -> Claims {
    let config = &app.state.config.auth;
    Claims {
        iss: config.jwt_issuer.clone(),
        aud: config.jwt_audience.clone(),
        sub: key_id.into(),
        tid: Some(tenant_id.into()),
        scp: vec!["projects:read".into()],
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: "test".into(),
    }
}

async fn forged_expired_and_foreign_tokens_are_401(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let secret = app.jwt_secret.clone();
    let now = dgidgi::http::unix_now();
    let sign = |c: &Claims, key: &[u8]| {
        encode(&Header::default(), c, &EncodingKey::from_secret(key)).unwrap()
    };
    let good = claims(app, &tenant.id, &tenant.key_id, now);
    // The well-formed token is accepted, so each refusal below is for its one flaw.
    assert_eq!(
        app.get("/api/v1/projects", &sign(&good, secret.as_bytes()))
            .await
            .status,
        200
    );

    let wrong_secret = sign(&good, b"another-secret-another-secret-xx");
    let expired = sign(
        &Claims {
            exp: now - 3600,
            iat: now - 7200,
            nbf: now - 7200,
            ..good.clone()
        },
        secret.as_bytes(),
    );
    let not_yet = sign(
        &Claims {
            nbf: now + 3600,
            exp: now + 7200,
            ..good.clone()
        },
        secret.as_bytes(),
    );
    let wrong_audience = sign(
        &Claims {
            aud: "someone-else".into(),
            ..good.clone()
        },
        secret.as_bytes(),
    );
    let wrong_issuer = sign(
        &Claims {
            iss: "evil".into(),
            ..good.clone()
        },
        secret.as_bytes(),
    );
    let other_tenant = sign(
        &Claims {
            tid: Some("ten_00000000000000000000000000000000".into()),
            ..good.clone()
        },
        secret.as_bytes(),
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap())
    );
    let hs512 = encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &good,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    for (what, token) in [
        ("wrong secret", wrong_secret),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong audience", wrong_audience),
        ("wrong issuer", wrong_issuer),
        ("tenant other than the key's", other_tenant),
        ("alg none", unsigned),
        ("other algorithm", hs512),
    ] {
        let res = app.get("/api/v1/projects", &token).await;
        assert_eq!(res.status, 401, "{what}");
        assert_eq!(res.code(), "UNAUTHORIZED", "{what}");
    }
}

async fn a_token_dies_with_the_key_it_came_from(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let made = app
        .post(
            "/api/v1/api-keys",
            &tenant.key,
            json!({ "name": "cli", "type": "cli" }),
        )
        .await;
    let (key, id) = (
        made.data()["key"].as_str().unwrap(),
        made.data()["id"].as_str().unwrap(),
    );
    let res = app.token(key).await;
    let token = res.data()["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/projects", token).await.status, 200);
    app.delete(&format!("/api/v1/api-keys/{id}"), &tenant.key)
        .await;
    assert_eq!(app.get("/api/v1/projects", token).await.status, 401);
}

async fn the_token_endpoint_refuses_bad_keys(app: &TestApp) {
    for body in [
        json!({ "api_key": "chy_sdk_nope" }),
        json!({ "api_key": generate_key(KeyType::Sdk).secret }),
    ] {
        let res = app
            .call(Method::POST, "/api/v1/auth/token", None, Some(&body))
            .await;
        assert_eq!(res.status, 401, "{body}");
        assert_eq!(res.code(), "UNAUTHORIZED");
    }
    let res = app
        .call(Method::POST, "/api/v1/auth/token", None, None)
        .await;
    assert_eq!(res.status, 401);
    let res = app
        .call(
            Method::POST,
            "/api/v1/auth/token",
            None,
            Some(&json!({ "key": "x" })),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["error"]["details"]["field"], "key");
}
