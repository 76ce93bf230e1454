//! Regions, regional preferences, feature checks, routing info and tenant storage:
//! platform storage, and BYOS validated for real against an S3 server on loopback.

use serde_json::{json, Value};

use crate::helpers::{backend_tests, TestApp};

backend_tests!(
    regions_come_from_config,
    preferences_start_from_defaults_and_secondary_regions_need_growth,
    residency_and_compliance_rules_hold,
    a_tenant_reaches_only_its_own_placement,
    features_are_checked_against_the_plan,
    routing_info_names_the_node_and_the_tenant_region,
    platform_storage_follows_the_primary_region_unless_pinned,
);

fn prefs_path(tenant: &str) -> String {
    format!("/api/v1/regions/preferences/{tenant}")
}

fn storage_path(tenant: &str) -> String {
    format!("/api/v1/regions/storage/{tenant}")
}

fn feature_path(tenant: &str, feature: &str) -> String {
    format!("/api/v1/regions/features/{tenant}/check/{feature}")
}

async fn regions_come_from_config(app: &TestApp) {
    let tenant = app.tenant("Acme", "free").await;
    let res = app.get("/api/v1/regions", &tenant.key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let regions = res.data().as_array().unwrap();
    let ids: Vec<_> = regions.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["eu-central", "eu-west", "us-east", "us-west"]);
    let eu = &regions[1];
    assert_eq!(eu["name"], "EU West");
    assert_eq!(eu["location"], "Dublin, Ireland");
    assert_eq!(eu["available"], true);
    assert_eq!(eu["complianceLevels"], json!(["standard", "gdpr", "soc2"]));
}

async fn preferences_start_from_defaults_and_secondary_regions_need_growth(app: &TestApp) {
    let free = app.tenant("Small", "free").await;
    let res = app.get(&prefs_path(&free.id), &free.key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.data(),
        &json!({ "primaryRegion": "us-east", "secondaryRegion": null,
                 "dataResidencyRequired": false, "dataResidencyRegion": null,
                 "complianceLevel": "standard" })
    );
    let res = app
        .patch(
            &prefs_path(&free.id),
            &free.key,
            json!({ "secondaryRegion": "us-west" }),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    assert_eq!(res.code(), "FORBIDDEN");
    assert_eq!(
        res.body["error"]["details"],
        json!({ "feature": "secondaryRegion", "plan": "free", "requiredPlan": "growth" })
    );

    let growth = app.tenant("Bigger", "growth").await;
    let path = prefs_path(&growth.id);
    let res = app
        .patch(&path, &growth.key, json!({ "secondaryRegion": "us-west" }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["secondaryRegion"], "us-west");
    assert_eq!(
        res.data()["primaryRegion"],
        "us-east",
        "what is not named stays"
    );
    assert_eq!(
        app.get(&path, &growth.key).await.data()["secondaryRegion"],
        "us-west"
    );
    let res = app
        .patch(&path, &growth.key, json!({ "secondaryRegion": null }))
        .await;
    assert_eq!(res.data()["secondaryRegion"], Value::Null, "null clears");

    for (body, field) in [
        (json!({ "primaryRegion": "mars-1" }), "primaryRegion"),
        (json!({ "secondaryRegion": "us-east" }), "secondaryRegion"),
        (json!({ "primaryRegion": 7 }), "primaryRegion"),
        (json!({ "colour": "blue" }), "colour"),
    ] {
        let res = app.patch(&path, &growth.key, body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        assert_eq!(res.code(), "VALIDATION_ERROR");
        assert!(
            res.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{body}: {}",
            res.body
        );
    }
}

async fn residency_and_compliance_rules_hold(app: &TestApp) {
    let growth = app.tenant("Euro", "growth").await;
    let path = prefs_path(&growth.id);
    let refused = |res: crate::helpers::Reply, field: &str| {
        assert_eq!(res.status, 400, "{}", res.body);
        assert_eq!(res.body["error"]["details"]["field"], field, "{}", res.body);
    };
    refused(
        app.patch(&path, &growth.key, json!({ "dataResidencyRequired": true }))
            .await,
        "dataResidencyRegion",
    );
    refused(
        app.patch(
            &path,
            &growth.key,
            json!({ "dataResidencyRequired": true, "dataResidencyRegion": "eu" }),
        )
        .await,
        "primaryRegion",
    );
    let res = app
        .patch(
            &path,
            &growth.key,
            json!({ "primaryRegion": "eu-west", "dataResidencyRequired": true,
                    "dataResidencyRegion": "eu", "complianceLevel": "gdpr" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    refused(
        app.patch(&path, &growth.key, json!({ "secondaryRegion": "us-east" }))
            .await,
        "secondaryRegion",
    );
    let res = app
        .patch(
            &path,
            &growth.key,
            json!({ "secondaryRegion": "eu-central" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // Platform storage cannot be pinned outside the residency region.
    let res = app
        .put(
            &storage_path(&growth.id),
            &growth.key,
            json!({ "storageMode": "platform", "platformRegion": "us-west" }),
        )
        .await;
    refused(res, "platformRegion");

    refused(
        app.patch(&path, &growth.key, json!({ "complianceLevel": "pci" }))
            .await,
        "complianceLevel",
    );
    let res = app
        .patch(&path, &growth.key, json!({ "complianceLevel": "hipaa" }))
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    assert_eq!(res.body["error"]["details"]["feature"], "compliance.hipaa");
    assert_eq!(res.body["error"]["details"]["requiredPlan"], "enterprise");

    let enterprise = app.tenant("Clinic", "enterprise").await;
    let path = prefs_path(&enterprise.id);
    refused(
        app.patch(
            &path,
            &enterprise.key,
            json!({ "primaryRegion": "us-west", "complianceLevel": "hipaa" }),
        )
        .await,
        "primaryRegion",
    );
    let res = app
        .patch(
            &path,
            &enterprise.key,
            json!({ "complianceLevel": "hipaa" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);

    let free = app.tenant("Tiny", "free").await;
    let res = app
        .patch(
            &prefs_path(&free.id),
            &free.key,
            json!({ "primaryRegion": "eu-west", "dataResidencyRequired": true, "dataResidencyRegion": "eu" }),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    assert_eq!(res.body["error"]["details"]["requiredPlan"], "starter");
}

async fn a_tenant_reaches_only_its_own_placement(app: &TestApp) {
    let a = app.tenant("A", "growth").await;
    let b = app.tenant("B", "growth").await;
    let calls = [
        ("GET", prefs_path(&b.id), None),
        (
            "PATCH",
            prefs_path(&b.id),
            Some(json!({ "primaryRegion": "eu-west" })),
        ),
        ("GET", storage_path(&b.id), None),
        (
            "PUT",
            storage_path(&b.id),
            Some(json!({ "storageMode": "platform" })),
        ),
        (
            "POST",
            format!("{}/validate", storage_path(&b.id)),
            Some(json!({})),
        ),
        ("GET", feature_path(&b.id, "byos"), None),
    ];
    for (method, path, body) in &calls {
        let res = app
            .call(method.parse().unwrap(), path, Some(&a.key), body.as_ref())
            .await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.body);
        assert_eq!(res.code(), "RESOURCE_NOT_FOUND");
    }
    // B's preferences were not changed by A's attempt; the operator may act on any tenant.
    let res = app.get(&prefs_path(&b.id), &app.operator_key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["primaryRegion"], "us-east");
    let res = app
        .patch(
            &prefs_path(&b.id),
            &app.operator_key,
            json!({ "primaryRegion": "eu-west" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        app.get(&prefs_path(&b.id), &b.key).await.data()["primaryRegion"],
        "eu-west"
    );
    assert_eq!(
        app.get(&prefs_path(&a.id), &a.key).await.data()["primaryRegion"],
        "us-east"
    );
    // Scopes: a read-only key reads, and changes nothing.
    let reader = app
        .post(
            "/api/v1/api-keys",
            &a.key,
            json!({ "name": "reader", "type": "int", "scopes": ["regions:read"] }),
        )
        .await;
    assert_eq!(reader.status, 201, "{}", reader.body);
    let reader = reader.data()["key"].as_str().unwrap().to_string();
    assert_eq!(app.get(&prefs_path(&a.id), &reader).await.status, 200);
    let res = app
        .patch(
            &prefs_path(&a.id),
            &reader,
            json!({ "primaryRegion": "eu-west" }),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    let res = app
        .put(
            &storage_path(&a.id),
            &reader,
            json!({ "storageMode": "platform" }),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    let missing = "ten_00000000000000000000000000";
    let res = app.get(&prefs_path(missing), &app.operator_key).await;
    assert_eq!(res.status, 404, "{}", res.body);
}

async fn features_are_checked_against_the_plan(app: &TestApp) {
    let free = app.tenant("Free", "free").await;
    let res = app.get(&feature_path(&free.id, "byos"), &free.key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let check = res.data();
    assert_eq!(check["featureKey"], "byos");
    assert_eq!(check["allowed"], false);
    assert_eq!(check["plan"], "free");
    assert_eq!(check["requiredPlan"], "growth");
    assert_eq!(check["limits"]["maxConcurrentRuns"], 4);
    assert_eq!(check["limits"]["requestsPerWindowPerKey"], 1000);
    let res = app
        .get(&feature_path(&free.id, "dataResidency"), &free.key)
        .await;
    assert_eq!(res.data()["requiredPlan"], "starter");
    // The gate the feature check reports is the one the server enforces.
    let res = app
        .put(
            &storage_path(&free.id),
            &free.key,
            json!({ "storageMode": "byos", "byosProvider": "s3", "byosBucket": "b",
                    "byosAccessKey": "k", "byosSecretKey": "s" }),
        )
        .await;
    assert_eq!(res.status, 403, "{}", res.body);
    assert_eq!(res.body["error"]["details"]["feature"], "byos");

    let growth = app.tenant("Growth", "growth").await;
    for (feature, allowed, required) in [
        ("byos", true, "growth"),
        ("secondaryRegion", true, "growth"),
        ("compliance.gdpr", true, "starter"),
        ("compliance.hipaa", false, "enterprise"),
    ] {
        let res = app
            .get(&feature_path(&growth.id, feature), &growth.key)
            .await;
        assert_eq!(res.data()["allowed"], allowed, "{feature}: {}", res.body);
        assert_eq!(res.data()["requiredPlan"], required, "{feature}");
    }
    // A tenant flag can switch a feature off.
    let res = app
        .patch(
            &format!("/api/v1/tenants/{}/settings", growth.id),
            &growth.key,
            json!({ "features": { "byos": false } }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app
        .get(&feature_path(&growth.id, "byos"), &growth.key)
        .await;
    assert_eq!(res.data()["allowed"], false);
    let res = app
        .get(&feature_path(&growth.id, "teleportation"), &growth.key)
        .await;
    assert_eq!(res.status, 404, "{}", res.body);
}

async fn routing_info_names_the_node_and_the_tenant_region(app: &TestApp) {
    let home = app.tenant("Home", "growth").await;
    let res = app.get("/api/v1/routing-info", &home.key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let info = res.data();
    assert!(!info["nodeId"].as_str().unwrap().is_empty());
    assert_eq!(info["nodeRegion"], "us-east");
    assert_eq!(info["tenantId"], home.id.as_str());
    assert_eq!(info["primaryRegion"], "us-east");
    assert_eq!(info["servedHere"], true);

    let away = app.tenant("Away", "growth").await;
    app.patch(
        &prefs_path(&away.id),
        &away.key,
        json!({ "primaryRegion": "eu-west" }),
    )
    .await;
    let info = app.get("/api/v1/routing-info", &away.key).await;
    assert_eq!(info.data()["primaryRegion"], "eu-west");
    assert_eq!(info.data()["servedHere"], false);
    let info = app
        .get(
            &format!("/api/v1/routing-info?tenant_id={}", away.id),
            &app.operator_key,
        )
        .await;
    assert_eq!(info.data()["tenantId"], away.id.as_str());
    assert_eq!(info.data()["servedHere"], false);
}

async fn platform_storage_follows_the_primary_region_unless_pinned(app: &TestApp) {
    let t = app.tenant("Acme", "free").await;
    let res = app.get(&storage_path(&t.id), &t.key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["storageMode"], "platform");
    assert_eq!(res.data()["platformRegion"], "us-east");
    app.patch(
        &prefs_path(&t.id),
        &t.key,
        json!({ "primaryRegion": "eu-west" }),
    )
    .await;
    let res = app.get(&storage_path(&t.id), &t.key).await;
    assert_eq!(res.data()["platformRegion"], "eu-west");
    let res = app
        .put(
            &storage_path(&t.id),
            &t.key,
            json!({ "storageMode": "platform", "platformRegion": "eu-central" }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data()["platformRegion"], "eu-central");
    assert_eq!(
        app.get(&storage_path(&t.id), &t.key).await.data()["platformRegion"],
        "eu-central"
    );
    for (body, field) in [
        (
            json!({ "storageMode": "platform", "platformRegion": "atlantis" }),
            "platformRegion",
        ),
        (
            json!({ "storageMode": "platform", "byosBucket": "b" }),
            "byosBucket",
        ),
        (json!({ "storageMode": "tape" }), "storageMode"),
    ] {
        let res = app.put(&storage_path(&t.id), &t.key, body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        assert_eq!(res.body["error"]["details"]["field"], field, "{}", res.body);
    }
}

/// A tenant's bucket, as the tests send it.
fn byos(endpoint: &str, bucket: &str, secret: Option<&str>) -> Value {
    let mut body = json!({ "storageMode": "byos", "byosProvider": "s3", "byosEndpoint": endpoint,
                           "byosBucket": bucket, "byosRegion": "us-east-1" });
    if let Some(secret) = secret {
        body["byosAccessKey"] = json!(crate::s3::ACCESS_KEY);
        body["byosSecretKey"] = json!(secret);
    }
    body
}

/// Checks of a validation, as (name, status).
fn checks(validation: &Value) -> Vec<(String, String)> {
    validation["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all_passed(validation: &Value) {
    assert_eq!(validation["valid"], true, "{validation}");
    let names: Vec<_> = checks(validation)
        .into_iter()
        .map(|(n, s)| {
            assert_eq!(s, "passed", "{validation}");
            n
        })
        .collect();
    assert_eq!(names, ["bucket", "write", "read", "list", "delete"]);
    for check in validation["checks"].as_array().unwrap() {
        assert!(check["latencyMs"].as_f64().unwrap() >= 0.0);
    }
}

mod byos {
    use figment::providers::Serialized;
    use serde_json::{json, Value};

    use super::{all_passed, byos, checks, storage_path};
    use crate::helpers::{backend_tests, Backend, TestApp};
    use crate::s3::{S3Server, ACCESS_KEY, SECRET_KEY};

    /// The test buckets are on loopback, which the outbound guard refuses by default.
    async fn loopback_allowed(backend: Backend) -> Option<TestApp> {
        TestApp::spawn(backend, |f| {
            f.merge(Serialized::default("outbound.allow_private_targets", true))
        })
        .await
    }

    backend_tests!(@with super::loopback_allowed;
        a_bucket_is_validated_for_real_and_its_keys_are_never_shown,
        wrong_secret_missing_bucket_and_closed_port_each_fail_with_their_reason,
        sealed_keys_moved_to_another_tenant_do_not_open,
    );

    fn no_secret_in(body: &Value) {
        let text = body.to_string();
        assert!(!text.contains(SECRET_KEY), "secret shown: {text}");
        assert!(!text.contains(ACCESS_KEY), "access key shown: {text}");
    }

    async fn a_bucket_is_validated_for_real_and_its_keys_are_never_shown(app: &TestApp) {
        let Some(s3) = S3Server::start(&["acme-data"]) else {
            return;
        };
        let t = app.tenant("Acme", "growth").await;
        let path = storage_path(&t.id);
        let res = app
            .put(
                &path,
                &t.key,
                byos(&s3.endpoint, "acme-data", Some(SECRET_KEY)),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        no_secret_in(&res.body);
        all_passed(&res.data()["validation"]);
        assert_eq!(res.data()["storageMode"], "byos");
        assert_eq!(res.data()["byosAccessKey"], "****EY01");
        assert_eq!(res.data()["byosSecretKey"], "****");
        assert!(res.data()["validatedAt"].is_string());

        let res = app.get(&path, &t.key).await;
        no_secret_in(&res.body);
        assert_eq!(res.data()["byosBucket"], "acme-data");
        assert_eq!(res.data()["byosEndpoint"], s3.endpoint.as_str());
        assert_eq!(res.data()["byosAccessKey"], "****EY01");

        let res = app
            .post(&format!("{path}/validate"), &t.key, json!({}))
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        all_passed(res.data());
        assert_eq!(res.data()["bucket"], "acme-data");
        // The probe object is cleaned up.
        let probes = s3.root.path().join("acme-data/dgidgi/.probe");
        let left = std::fs::read_dir(&probes).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "probe objects left behind");

        // A PUT without keys keeps the stored ones (and is validated with them).
        let res = app
            .put(&path, &t.key, byos(&s3.endpoint, "acme-data", None))
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        all_passed(&res.data()["validation"]);
        // Stored keys go nowhere new: another endpoint, bucket or provider without the keys
        // is refused before anything is sent, and the stored configuration stays.
        let elsewhere = S3Server::start(&["acme-data", "other"]).expect("a second S3 server");
        let mut other_provider = byos(&s3.endpoint, "acme-data", None);
        other_provider["byosProvider"] = json!("r2");
        for (what, body) in [
            ("endpoint", byos(&elsewhere.endpoint, "acme-data", None)),
            ("bucket", byos(&s3.endpoint, "other", None)),
            ("provider", other_provider),
        ] {
            let res = app.put(&path, &t.key, body).await;
            assert_eq!(res.status, 400, "{what}: {}", res.body);
            assert_eq!(
                res.body["error"]["details"]["field"], "byosAccessKey",
                "{what}"
            );
        }
        let stats = std::fs::read_dir(elsewhere.root.path().join("acme-data"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(stats, 0, "nothing reached the other server");
        let res = app.get(&path, &t.key).await;
        assert_eq!(res.data()["byosEndpoint"], s3.endpoint.as_str());
        // With the keys given again, the new endpoint is accepted (after its round trip).
        let res = app
            .put(
                &path,
                &t.key,
                byos(&elsewhere.endpoint, "acme-data", Some(SECRET_KEY)),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        all_passed(&res.data()["validation"]);
        // Only one key of the pair is refused.
        let mut half = byos(&s3.endpoint, "acme-data", None);
        half["byosAccessKey"] = json!("AKIAONLYONE");
        let res = app.put(&path, &t.key, half).await;
        assert_eq!(res.status, 400, "{}", res.body);
        // Nothing of the keys is in the database in clear.
        let stored: Value = app
            .state
            .store
            .placement(&t.id, dgidgi::store::Placement::Storage)
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.to_string().contains(SECRET_KEY));
        assert!(!stored.to_string().contains(ACCESS_KEY));
    }

    async fn wrong_secret_missing_bucket_and_closed_port_each_fail_with_their_reason(
        app: &TestApp,
    ) {
        let Some(mut s3) = S3Server::start(&["acme-data"]) else {
            return;
        };
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let t = app.tenant("Acme", "growth").await;
        let path = storage_path(&t.id);
        for (body, reason, failed_check) in [
            (
                byos(&s3.endpoint, "acme-data", Some("not-the-secret")),
                "bad_credentials",
                "bucket",
            ),
            (
                byos(&s3.endpoint, "no-such-bucket", Some(SECRET_KEY)),
                "no_such_bucket",
                "bucket",
            ),
            (
                byos(&closed, "acme-data", Some(SECRET_KEY)),
                "unreachable",
                "bucket",
            ),
        ] {
            let res = app.put(&path, &t.key, body).await;
            assert_eq!(res.status, 400, "{reason}: {}", res.body);
            assert_eq!(res.code(), "VALIDATION_ERROR");
            let details = &res.body["error"]["details"];
            assert_eq!(details["reason"], reason, "{}", res.body);
            let validation = &details["validation"];
            assert_eq!(validation["valid"], false);
            assert_eq!(validation["reason"]["code"], reason);
            assert!(!validation["reason"]["message"].as_str().unwrap().is_empty());
            let got = checks(validation);
            assert_eq!(
                got[0],
                (failed_check.to_string(), "failed".to_string()),
                "{validation}"
            );
            assert!(got[1..].iter().all(|(_, s)| s == "skipped"), "{validation}");
            assert!(!res.body.to_string().contains(SECRET_KEY));
        }
        // Nothing failing was stored; the bucket was not created by the attempt.
        assert_eq!(
            app.get(&path, &t.key).await.data()["storageMode"],
            "platform"
        );
        assert!(!s3.root.path().join("no-such-bucket").exists());

        // A stored bucket that goes away fails a later validation (a 200 that says so).
        let res = app
            .put(
                &path,
                &t.key,
                byos(&s3.endpoint, "acme-data", Some(SECRET_KEY)),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        s3.stop();
        let res = app
            .post(&format!("{path}/validate"), &t.key, json!({}))
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.data()["valid"], false);
        assert_eq!(res.data()["reason"]["code"], "unreachable");
    }

    async fn sealed_keys_moved_to_another_tenant_do_not_open(app: &TestApp) {
        let Some(s3) = S3Server::start(&["acme-data"]) else {
            return;
        };
        let a = app.tenant("A", "growth").await;
        let b = app.tenant("B", "growth").await;
        let res = app
            .put(
                &storage_path(&a.id),
                &a.key,
                byos(&s3.endpoint, "acme-data", Some(SECRET_KEY)),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        // Someone with write access to the database copies A's sealed keys into B's row.
        let store = &app.state.store;
        let stolen: Value = store
            .placement(&a.id, dgidgi::store::Placement::Storage)
            .await
            .unwrap()
            .unwrap();
        store
            .save_placement(&b.id, dgidgi::store::Placement::Storage, &stolen)
            .await
            .unwrap();
        let res = app
            .post(
                &format!("{}/validate", storage_path(&b.id)),
                &b.key,
                json!({}),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.data()["valid"], false);
        assert_eq!(res.data()["reason"]["code"], "credentials_unreadable");
        // A's own keys still work.
        let res = app
            .post(
                &format!("{}/validate", storage_path(&a.id)),
                &a.key,
                json!({}),
            )
            .await;
        all_passed(res.data());
    }

    #[actix_web::test]
    async fn bucket_endpoints_are_guarded_like_webhooks() {
        // The default configuration: private targets refused.
        let app = TestApp::plain(Backend::Sqlite).await.unwrap();
        let t = app.tenant("Acme", "growth").await;
        let path = storage_path(&t.id);
        for endpoint in [
            "http://127.0.0.1:9",
            "https://10.0.0.8",
            "https://[::1]:9000",
            "https://169.254.169.254",
        ] {
            let res = app
                .put(&path, &t.key, byos(endpoint, "b", Some(SECRET_KEY)))
                .await;
            assert_eq!(res.status, 400, "{endpoint}: {}", res.body);
            assert_eq!(
                res.body["error"]["details"]["field"], "byosEndpoint",
                "{}",
                res.body
            );
        }
        // A localhost-like name is refused as it is given, before anything resolves it.
        let res = app
            .put(
                &path,
                &t.key,
                byos("https://localhost:9", "b", Some(SECRET_KEY)),
            )
            .await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert_eq!(res.body["error"]["details"]["field"], "byosEndpoint");
        app.stop().await;
    }
}

mod byos_in_use {
    use figment::providers::Serialized;
    use serde_json::json;

    use super::{byos, storage_path};
    use crate::cli::Logged;
    use crate::fake_llm::{LlmApp, Script};
    use crate::helpers::Backend;
    use crate::s3::{S3Server, ACCESS_KEY, SECRET_KEY};

    #[actix_web::test]
    async fn an_agent_artifact_lands_in_the_tenants_bucket() {
        let Some(s3) = S3Server::start(&["acme-data"]) else {
            return;
        };
        let ctx = LlmApp::start_with(Backend::Sqlite, |f| {
            f.merge(Serialized::default("outbound.allow_private_targets", true))
        })
        .await
        .unwrap();
        let t = ctx.tenant("Acme", "growth").await;
        let res = ctx
            .put(
                &storage_path(&t.id),
                &t.key,
                byos(&s3.endpoint, "acme-data", Some(SECRET_KEY)),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        let project = ctx.project(&t.key, "web").await;
        let agent = ctx
            .agent(
                &t.key,
                json!({ "name": "Writer", "tools": ["write_file", "read_file", "list_files"],
                        "config": { "autonomyLevel": "medium" } }),
            )
            .await;
        let content = "# Summary\nEverything is in the tenant's own bucket.";
        ctx.llm.push(Script::Tools(vec![(
            "write_file",
            json!({ "path": "reports/summary.md", "content": content }),
        )]));
        ctx.llm.push(Script::Tools(vec![
            ("list_files", json!({})),
            ("read_file", json!({ "path": "reports/summary.md" })),
        ]));
        ctx.llm.push(Script::Text(vec!["Done"]));
        let res = ctx
            .post(
                &format!("/api/v1/agents/{agent}/execute"),
                &t.key,
                json!({ "goal": "Write the summary", "projectId": project, "wait": 30 }),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        let run = res.data();
        assert_eq!(run["status"], "completed", "{run}");
        let results = &run["steps"][1]["tool_results"];
        assert_eq!(results[0]["output"], "reports/summary.md", "{run}");
        assert_eq!(results[1]["output"], content, "{run}");
        assert_eq!(run["artifacts"][0]["path"], "reports/summary.md");
        // The object is in the bucket, under the tenant's folder for the project...
        let key = format!("dgidgi/projects/{project}/reports/summary.md");
        let stored = std::fs::read_to_string(s3.root.path().join("acme-data").join(&key));
        assert_eq!(stored.unwrap(), content);
        // ...and not in platform storage.
        let platform = std::path::Path::new(&ctx.state.config.storage.platform_root)
            .join("us-east")
            .join(&t.id)
            .join("projects");
        assert!(!platform.exists(), "{} exists", platform.display());
        ctx.stop().await;
    }

    #[actix_web::test]
    async fn no_key_appears_in_the_server_log() {
        let Some(s3) = S3Server::start(&["acme-data"]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let server = Logged::start(
            dir.path(),
            &[],
            &[
                ("RUST_LOG", "debug"),
                ("DGIDGI__OUTBOUND__ALLOW_PRIVATE_TARGETS", "true"),
            ],
        );
        let (base, operator) = (server.base.clone(), server.operator.clone());
        let client = reqwest::Client::new();
        let send = |method: reqwest::Method, path: String, key: String, body: serde_json::Value| {
            let req = client
                .request(method, format!("{base}{path}"))
                .bearer_auth(key)
                .json(&body);
            async move {
                let res = req.send().await.unwrap();
                (
                    res.status().as_u16(),
                    res.json::<serde_json::Value>().await.unwrap(),
                )
            }
        };
        let (status, body) = send(
            reqwest::Method::POST,
            "/tenants".into(),
            operator.clone(),
            json!({ "name": "Acme", "plan": "growth" }),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (tenant, key) = (
            body["data"]["id"].as_str().unwrap().to_string(),
            body["data"]["api_key"]["key"].as_str().unwrap().to_string(),
        );
        let path = storage_path(&tenant).replace("/api/v1", "");
        let wrong = "wrong-secret-that-must-not-be-logged";
        for (secret, expected) in [(SECRET_KEY, 200), (wrong, 400)] {
            let (status, body) = send(
                reqwest::Method::PUT,
                path.clone(),
                key.clone(),
                byos(&s3.endpoint, "acme-data", Some(secret)),
            )
            .await;
            assert_eq!(status, expected, "{body}");
        }
        let (status, _) = send(reqwest::Method::GET, path.clone(), key.clone(), json!(null)).await;
        assert_eq!(status, 200);
        let (status, body) = send(
            reqwest::Method::POST,
            format!("{path}/validate"),
            key,
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let log = server.stop();
        assert!(
            log.contains("storage configuration changed"),
            "the log was captured: {log}"
        );
        for secret in [SECRET_KEY, wrong, ACCESS_KEY] {
            assert!(!log.contains(secret), "'{secret}' is in the log");
        }
    }
}
