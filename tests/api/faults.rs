//! Faults of the database underneath a running server: a full disk (SQLite on a small
//! tmpfs) and an outage (PostgreSQL refusing connections). No write that did not commit is
//! acknowledged, the answer is 503 with Retry-After rather than 500, and the server
//! recovers by itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use figment::providers::Serialized;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{eventually, Backend, TestApp};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap().keep();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self(dir)),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs ({}); the disk-full test needs root",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e}); the disk-full test needs it");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system of `dir` with one file until it has no space left.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // The last partial blocks too.
    let small = vec![0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

#[actix_web::test]
async fn a_full_disk_acknowledges_nothing_it_lost_and_recovers_by_itself() {
    let Some(disk) = Tmpfs::mount(20) else {
        return;
    };
    let url = format!("sqlite://{}/dgidgi.db", disk.0.display());
    let app = TestApp::spawn(Backend::Sqlite, |f| {
        f.merge(Serialized::default("database.url", url))
            .merge(Serialized::default("database.acquire_timeout_secs", 2))
            .merge(Serialized::default("runs.store_retry_secs", 1))
            .merge(Serialized::default("database.min_free_mb", 1))
    })
    .await
    .unwrap();
    let tenant = app.tenant("Acme", "free").await;
    let agent = app.agent(&tenant.key, json!({ "name": "echo" })).await;
    let project = app.project(&tenant.key, "before").await;
    let filler = fill(&disk.0);

    // Every write is either stored (and then readable) or refused with 503.
    let mut stored = Vec::new();
    let mut refused = 0;
    for n in 0..40 {
        let res = app
            .post(
                "/api/v1/projects",
                &tenant.key,
                json!({ "name": format!("p{n}"), "description": "x".repeat(2000) }),
            )
            .await;
        match res.status {
            201 => stored.push(res.data()["id"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(res.code(), "SERVICE_UNAVAILABLE");
                assert!(res.header("retry-after").is_some());
                refused += 1;
            }
            other => panic!("{other}: {}", res.body),
        }
    }
    assert!(refused > 0, "the disk was never full");
    for id in &stored {
        let res = app
            .get(&format!("/api/v1/projects/{id}"), &tenant.key)
            .await;
        assert_eq!(res.status, 200, "acknowledged {id} is not stored");
    }
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let run = app
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "hello", "projectId": project, "wait": 5 }),
        )
        .await;
    assert!(
        [503, 200, 202].contains(&run.status),
        "{}: {}",
        run.status,
        run.body
    );
    if run.status != 503 {
        let id = run.data()["id"].as_str().unwrap();
        let read = app
            .get(&format!("/api/v1/agents/{agent}/runs/{id}"), &tenant.key)
            .await;
        assert_eq!(read.status, 200, "an acknowledged run is readable");
    }

    // Space comes back: writes work again without a restart, and stay readable.
    std::fs::remove_file(filler).unwrap();
    let mut recovered = None;
    for n in 0..100 {
        let res = app
            .post(
                "/api/v1/projects",
                &tenant.key,
                json!({ "name": format!("after{n}") }),
            )
            .await;
        if res.status == 201 {
            recovered = Some(res.data()["id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(res.status, 503, "{}", res.body);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let id = recovered.expect("writes work again once space is back");
    for _ in 0..5 {
        let res = app
            .get(&format!("/api/v1/projects/{id}"), &tenant.key)
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
    }
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let done = app
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "hello again", "projectId": project, "wait": 20 }),
        )
        .await;
    assert_eq!(done.data()["status"], "completed", "{}", done.body);
    app.stop().await;
    drop(disk);
}

/// Connections to `database` refused (`ALLOW_CONNECTIONS false`, its backends ended) or
/// allowed again.
async fn set_connections(database: &str, allow: bool) {
    let base = std::env::var("DGIDGI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/test"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS {allow}"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// How long the database is away in the outage test.
const OUTAGE: Duration = Duration::from_secs(4);

#[actix_web::test]
async fn a_database_outage_answers_503_and_runs_in_flight_finish_after_it() {
    let Some(app) = TestApp::spawn(Backend::Postgres, |f| {
        f.merge(Serialized::default("database.acquire_timeout_secs", 1))
            .merge(Serialized::default("cluster.heartbeat_secs", 1))
            .merge(Serialized::default("providers.slow.kind", "offline"))
            .merge(Serialized::default("providers.slow.token_delay_ms", 100))
            .merge(Serialized::default("llm.default_provider", "slow"))
    })
    .await
    else {
        return;
    };
    let database = app.database_url.rsplit('/').next().unwrap().to_string();
    let tenant = app.tenant("Acme", "growth").await;
    let project = app.project(&tenant.key, "p").await;
    let agent = app.agent(&tenant.key, json!({ "name": "slow" })).await;
    let mut runs = Vec::new();
    for n in 0..10 {
        let res = app
            .post(
                &format!("/api/v1/agents/{agent}/execute"),
                &tenant.key,
                json!({ "goal": format!("count to {n} slowly, please"), "projectId": project }),
            )
            .await;
        assert_eq!(res.status, 202, "{}", res.body);
        runs.push(res.data()["id"].as_str().unwrap().to_string());
    }
    // Every run is in flight (growth allows 10 at once) when the database goes away.
    let in_flight = eventually(Duration::from_secs(10), || async {
        for run in &runs {
            let path = format!("/api/v1/agents/{agent}/runs/{run}");
            if app.get(&path, &tenant.key).await.data()["status"] != "running" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(in_flight, "the runs started");

    set_connections(&database, false).await;
    // Every route answers 503 with Retry-After, never 500.
    for path in [
        "/api/v1/projects",
        "/api/v1/agents",
        "/api/v1/chat/sessions",
    ] {
        let res = app.get(path, &tenant.key).await;
        assert_eq!(res.status, 503, "{path}: {}", res.body);
        assert_eq!(res.code(), "SERVICE_UNAVAILABLE");
        assert!(res.header("retry-after").is_some());
    }
    let res = app
        .post("/api/v1/projects", &tenant.key, json!({ "name": "during" }))
        .await;
    assert_eq!(res.status, 503, "{}", res.body);
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    // The outage lasts four seconds: longer than a pool acquire (1 s) and a reclaim sweep.
    actix_web::rt::time::sleep(OUTAGE).await;
    set_connections(&database, true).await;

    // Runs in flight outlive the outage: each one finishes, none stays `running`.
    for run in &runs {
        let done = app
            .run_until(&tenant.key, &agent, run, |r| {
                r["status"] != "running" && r["status"] != "queued"
            })
            .await;
        assert_eq!(done["status"], "completed", "{run}: {done}");
    }
    app.stop().await;
}
