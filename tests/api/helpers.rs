//! Starts the real application on port 0 with a fresh database (an SQLite file in a temp
//! folder, or a PostgreSQL database of its own) and talks to it over real HTTP.

use std::sync::Arc;

use dgidgi::config::Config;
use dgidgi::http::AppState;
use dgidgi::providers::Providers;
use dgidgi::startup::Application;
use dgidgi_testkit::FreshDatabase;
pub use dgidgi_testkit::{eventually, holds_for, until};
use figment::providers::Serialized;
use figment::Figment;
use reqwest::Method;
use serde_json::Value;

/// Runs each listed `async fn name(app: &TestApp)` of the calling module once on SQLite and
/// once on PostgreSQL (skipped, and said so, where no PostgreSQL is reachable, except
/// under CI, where its absence fails the test).
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        crate::helpers::backend_tests!(@with crate::helpers::TestApp::plain; $($name),+);
    };
    (@with $setup:path; $($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    let ctx = $setup(crate::helpers::Backend::Sqlite).await.unwrap();
                    super::$name(&ctx).await;
                    ctx.stop().await;
                }
            )+
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    let Some(ctx) = $setup(crate::helpers::Backend::Postgres).await else {
                        return;
                    };
                    super::$name(&ctx).await;
                    ctx.stop().await;
                }
            )+
        }
    };
}
pub(crate) use backend_tests;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database of the test's own; `None` (the test is skipped, and says
/// so) where PostgreSQL is not reachable, except under CI, where that fails the test.
pub async fn fresh_postgres(prefix: &str) -> Option<FreshDatabase> {
    let admin = format!("{}/test", postgres_base());
    match FreshDatabase::create(&admin, prefix).await {
        Ok(db) => Some(db),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "PostgreSQL is required under CI and is not reachable at {}: {e}",
                postgres_base()
            )
        }
        Err(e) => {
            eprintln!(
                "skipped: PostgreSQL not reachable at {} ({e})",
                postgres_base()
            );
            None
        }
    }
}

/// The administrative PostgreSQL URL (without a database name).
fn postgres_base() -> String {
    std::env::var("DGIDGI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A running application and what tests need to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The operator key the first start created.
    pub operator_key: String,
    pub state: Arc<AppState>,
    /// The secret the server signs JWTs with (tests forge tokens with it).
    pub jwt_secret: String,
    pub database_url: String,
    handle: actix_web::dev::ServerHandle,
    /// The test's folder (SQLite database, key file, storage).
    path: std::path::PathBuf,
    /// Keeps the folder alive for the test's duration (held by the first server only).
    _dir: Option<tempfile::TempDir>,
    /// The test's own PostgreSQL database, dropped with it (even when the test panics).
    postgres_db: Option<FreshDatabase>,
}

/// The secrets PostgreSQL tests configure.
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-0000";
pub const TEST_SEALING_KEY: &str = "dGVzdC1zZWFsaW5nLWtleS0zMi1ieXRlcy1sb25nISE=";

/// The server's key file (SQLite).
fn key_file(state: &AppState) -> std::path::PathBuf {
    dgidgi::secrets::key_file(&state.config, state.store.backend()).expect("an SQLite key file")
}

/// A `name=` line of a key file.
pub fn key_file_value(path: &std::path::Path, name: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.split_once('=')
            .filter(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    })
}

/// A response: status, headers and the JSON body (`Null` when there is none).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// The error code of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A tenant made for a test, with its first (all-scopes) key.
pub struct TestTenant {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

impl TestApp {
    /// The application with the test defaults.
    pub async fn plain(backend: Backend) -> Option<Self> {
        Self::spawn(backend, |c| c).await
    }

    /// Starts the application on `backend` with `configure` applied to the test defaults.
    /// `None` when PostgreSQL is asked for and is not reachable outside CI.
    pub async fn spawn(
        backend: Backend,
        configure: impl FnOnce(Figment) -> Figment,
    ) -> Option<Self> {
        Self::spawn_with(backend, configure, |p| p).await
    }

    /// [`spawn`](Self::spawn), with `providers` changing the configured providers.
    pub async fn spawn_with(
        backend: Backend,
        configure: impl FnOnce(Figment) -> Figment,
        providers: impl FnOnce(Providers) -> Providers,
    ) -> Option<Self> {
        // RUST_LOG=error cargo test shows the server's logs of failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, postgres_db) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}/nested/dgidgi.db", dir.path().display()),
                None,
            ),
            Backend::Postgres => {
                let db = fresh_postgres("test").await?;
                (db.url.clone(), Some(db))
            }
        };
        let config = Self::config(dir.path(), &url, postgres_db.is_some(), configure);
        let configured = Providers::from_config(&config).expect("providers build");
        let app = Application::build_with(config, providers(configured))
            .await
            .expect("application builds");
        let operator_key = app
            .bootstrap_key
            .clone()
            .expect("a fresh database gets an operator key");
        let path = dir.path().to_path_buf();
        Some(Self::serve(
            app,
            operator_key,
            path,
            Some(dir),
            url,
            postgres_db,
        ))
    }

    /// The test defaults for a server on `url` whose files live in `dir`, and `configure`.
    pub fn config(
        dir: &std::path::Path,
        url: &str,
        postgres: bool,
        configure: impl FnOnce(Figment) -> Figment,
    ) -> Config {
        let mut figment = Config::defaults()
            .merge(Serialized::default("server.port", 0))
            .merge(Serialized::default("server.workers", 1))
            .merge(Serialized::default("actors.arbiters", 1))
            .merge(Serialized::default("database.url", url))
            .merge(Serialized::default("database.max_connections", 4))
            .merge(Serialized::default(
                "storage.platform_root",
                dir.join("storage").display().to_string(),
            ));
        if postgres {
            // PostgreSQL takes its secrets from configuration (SQLite: its key file).
            figment = figment
                .merge(Serialized::default("auth.jwt_secret", TEST_JWT_SECRET))
                .merge(Serialized::default("secrets.key", TEST_SEALING_KEY));
        }
        Config::from_figment(configure(figment)).expect("test configuration is valid")
    }

    fn serve(
        app: Application,
        operator_key: String,
        path: std::path::PathBuf,
        dir: Option<tempfile::TempDir>,
        database_url: String,
        postgres_db: Option<FreshDatabase>,
    ) -> Self {
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state.clone();
        let handle = app.handle();
        let jwt_secret = match state.config.auth.jwt_secret.as_str() {
            "" => key_file_value(&key_file(&state), "jwt_secret")
                .expect("the SQLite key file holds the JWT secret"),
            configured => configured.to_string(),
        };
        actix_web::rt::spawn(app.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
            operator_key,
            state,
            handle,
            jwt_secret,
            database_url,
            path,
            _dir: dir,
            postgres_db,
        }
    }

    /// The folder the test's files (SQLite database, key file, storage) live in.
    pub fn dir(&self) -> &std::path::Path {
        &self.path
    }

    /// Stops this server and starts another on the same database and folder, with the test
    /// defaults and `configure` (the operator key stays the same). The first server keeps
    /// owning the folder and the PostgreSQL database.
    pub async fn restart(&self, configure: impl FnOnce(Figment) -> Figment) -> TestApp {
        self.handle.stop(false).await;
        self.state.store.close().await;
        let url = self.database_url.clone();
        let config = Self::config(&self.path, &url, !url.starts_with("sqlite:"), configure);
        let providers = Providers::from_config(&config).expect("providers build");
        let app = Application::build_with(config, providers)
            .await
            .expect("application builds again");
        Self::serve(
            app,
            self.operator_key.clone(),
            self.path.clone(),
            None,
            url,
            None,
        )
    }

    /// A connection pool of the test's own to its database (to look at rows directly).
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.database_url)
            .await
            .expect("the test database opens")
    }

    /// Stops the server and drops the test's PostgreSQL database.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        self.state.store.close().await;
        drop(self.postgres_db.take());
    }

    /// Sends `method path` with `key` as Bearer credentials (if any) and `body` as JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    pub async fn reply(res: reqwest::Response) -> Reply {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("JSON body, got {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(key), Some(&body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(key), Some(&body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(key), Some(&body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Exchanges `api_key` for a JWT at the (unauthenticated) token endpoint.
    pub async fn token(&self, api_key: &str) -> Reply {
        let body = serde_json::json!({ "api_key": api_key });
        self.call(Method::POST, "/api/v1/auth/token", None, Some(&body))
            .await
    }

    /// Creates a tenant on `plan` as the operator.
    pub async fn tenant(&self, name: &str, plan: &str) -> TestTenant {
        let res = self
            .post(
                "/api/v1/tenants",
                &self.operator_key,
                serde_json::json!({ "name": name, "plan": plan }),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
        TestTenant {
            id: res.data()["id"].as_str().unwrap().to_string(),
            key: res.data()["api_key"]["key"].as_str().unwrap().to_string(),
            key_id: res.data()["api_key"]["id"].as_str().unwrap().to_string(),
        }
    }

    /// Creates an agent from `body` in the tenant whose key is `key`; returns its id.
    pub async fn agent(&self, key: &str, body: Value) -> String {
        let res = self.post("/api/v1/agents", key, body).await;
        assert_eq!(res.status, 201, "{}", res.body);
        res.data()["id"].as_str().unwrap().to_string()
    }

    /// Polls run `run` of `agent` until `done` holds for it (at most ~10 s); returns it.
    pub async fn run_until(
        &self,
        key: &str,
        agent: &str,
        run: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/v1/agents/{agent}/runs/{run}");
        let found = until(std::time::Duration::from_secs(10), || async {
            let res = self.get(&path, key).await;
            assert_eq!(res.status, 200, "{}", res.body);
            done(res.data()).then(|| res.data().clone())
        })
        .await;
        found.unwrap_or_else(|| panic!("run {run} did not reach the expected state"))
    }

    /// Opens the event stream at `path` and reads it until an event named `event` arrives
    /// (for at most 10 s); whether one did.
    pub async fn until_event(&self, path: &str, key: &str, event: &str) -> bool {
        let mut res = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let seen = dgidgi_testkit::sse::read_until(&mut res, |_, frame| frame.event == event);
        tokio::time::timeout(std::time::Duration::from_secs(10), seen)
            .await
            .unwrap_or(false)
    }

    /// Creates a project in the tenant whose key is `key`; returns its id.
    pub async fn project(&self, key: &str, name: &str) -> String {
        let res = self
            .post("/api/v1/projects", key, serde_json::json!({ "name": name }))
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
        res.data()["id"].as_str().unwrap().to_string()
    }
}

impl TestApp {
    /// The key the server seals stored secrets with (configured, or from its key file).
    pub fn sealing_key(&self) -> String {
        match self.state.config.secrets.key.as_str() {
            "" => key_file_value(&key_file(&self.state), "secrets_key")
                .expect("the SQLite key file holds the sealing key"),
            configured => configured.to_string(),
        }
    }
}
