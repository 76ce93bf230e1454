//! The tenant actor over an in-memory store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::testing::MemoryTenants;

fn tenants_over(store: Arc<MemoryTenants>, idle: Duration) -> Tenants {
    Tenants::new(store, vec![Arbiter::current()], idle, Default::default())
}

#[actix::test]
async fn an_update_is_answered_only_after_the_store_kept_it() {
    let store = MemoryTenants::with_ten_1(TenantSettings::default());
    let tenants = tenants_over(store.clone(), Duration::from_secs(60));
    let patch = TenantSettingsPatch {
        max_concurrent_runs: Some(9),
        ..Default::default()
    };
    let updated = tenants
        .update(
            "ten_1",
            UpdateTenant {
                plan: Some("growth".into()),
                settings: patch,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.plan.as_str(), updated.settings.max_concurrent_runs),
        ("growth", 9)
    );
    assert_eq!(
        store.tenants.lock().unwrap()["ten_1"]
            .settings
            .max_concurrent_runs,
        9
    );
    assert_eq!(tenants.actors().live(), 1);
}

#[actix::test]
async fn a_failed_write_changes_nothing() {
    let store = MemoryTenants::with_ten_1(TenantSettings::default());
    let tenants = tenants_over(store.clone(), Duration::from_secs(60));
    store.failing.store(true, Ordering::SeqCst);
    let patch = TenantSettingsPatch {
        locale: Some("fr-FR".into()),
        ..Default::default()
    };
    let failed = tenants
        .update(
            "ten_1",
            UpdateTenant {
                plan: None,
                settings: patch,
            },
        )
        .await;
    assert!(matches!(failed, Err(Error::Store(_))), "{failed:?}");
    assert_eq!(tenants.get("ten_1").await.unwrap().settings.locale, "en-US");
}

#[actix::test]
async fn a_missing_tenant_is_not_found_and_its_actor_goes_away() {
    let tenants = tenants_over(
        MemoryTenants::with_ten_1(TenantSettings::default()),
        Duration::from_secs(60),
    );
    assert_eq!(tenants.get("ten_nobody").await, Err(Error::NotFound));
    actix::clock::sleep(Duration::from_millis(200)).await;
    assert_eq!(tenants.actors().live(), 0);
}

#[test]
fn a_patch_changes_only_what_it_names() {
    let mut features = BTreeMap::new();
    features.insert("beta".to_string(), Some(true));
    let before = TenantSettings {
        display_name: Some("Old".into()),
        ..Default::default()
    };
    let after = before.patched(TenantSettingsPatch {
        display_name: Some(None),
        timezone: Some("Asia/Tokyo".into()),
        features,
        ..Default::default()
    });
    assert_eq!(after.display_name, None);
    assert_eq!(after.timezone, "Asia/Tokyo");
    assert_eq!(after.locale, before.locale);
    assert_eq!(after.features.get("beta"), Some(&true));
}
