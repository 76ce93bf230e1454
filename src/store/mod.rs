//! The store: the only module with SQL. One set of queries runs on SQLite (the embedded
//! default) and PostgreSQL through sqlx's `Any` driver; each backend has its own migrations.
//!
//! Every mutation that the contract lists as a webhook event writes its domain event to the
//! `outbox` table in the same transaction as the change itself.

mod agents;
mod chat;
mod cluster;
mod events;
mod idempotency;
mod keys;
mod mcp;
mod outbox;
mod placement;
mod projects;
mod read;
mod runs;
mod tenants;
mod usage;
mod users;
mod webhooks;
mod writer;

pub use agents::{Agent, AgentConfig};
pub use cluster::{KeysChanged, Node, Notice, Notices};
pub use idempotency::{IdempotencyRecord, Reservation};
pub use keys::{ApiKeyRecord, KeyWithPlan, NewApiKey};
pub use mcp::{McpServer, NewMcpServer};
pub use outbox::OutboxEvent;
pub use placement::Placement;
pub use projects::{NewProject, Project, ProjectPatch};
pub use usage::UsageRow;
pub use users::{NewUser, User};
pub use webhooks::{Attempt, Delivery, Endpoint, NewEndpoint};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};

use crate::config::DatabaseConfig;

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A uniqueness rule was broken (an email already used in the tenant, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot take the request now (it is unreachable, refuses connections,
    /// or its disk is full): a 503 the client may retry; nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(String),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back (bad JSON in a column, say).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A run's write carried a claim that is no longer the run's latest: another node
    /// took the run over.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A write found no row to change: it is not there, or no longer as it was read.
    #[error("the row is gone or changed")]
    Gone,
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Error::Unavailable(e.to_string())
        } else {
            Error::Database(e.to_string())
        }
    }
}

/// Whether `e` says the database is out of reach or out of space rather than that the
/// request was wrong: connection and pool failures, SQLite's SQLITE_FULL, SQLITE_IOERR,
/// SQLITE_BUSY and SQLITE_CANTOPEN, PostgreSQL's connection (08), operator intervention
/// (57P01-57P05), insufficient resources (53) and "not accepting connections" (55000).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if code.chars().all(|c| c.is_ascii_digit()) && code.len() < 5 {
                // SQLite's (extended) result code: the primary code is the low byte.
                let primary = code.parse::<u32>().unwrap_or(0) & 0xff;
                matches!(primary, 5 | 10 | 13 | 14)
            } else {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "55000"
            }
        }
        _ => false,
    }
}

impl Error {
    /// A broken uniqueness rule said in the caller's words (`what`); any other error as is.
    fn conflict_as(self, what: &str) -> Self {
        match self {
            Error::Conflict(_) => Error::Conflict(what.to_string()),
            other => other,
        }
    }

    fn from_write(e: sqlx::Error, what: &str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(what.to_string())
            }
            _ => Error::from(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store error as actors see it: opaque, but telling an outage from anything else.
impl From<Error> for dgidgi_actors::StoreFailure {
    fn from(e: Error) -> Self {
        if matches!(e, Error::Unavailable(_)) {
            dgidgi_actors::StoreFailure::unavailable(e.to_string())
        } else if matches!(e, Error::Fenced(_)) {
            dgidgi_actors::StoreFailure::fenced(e.to_string())
        } else {
            dgidgi_actors::StoreFailure::new(e.to_string())
        }
    }
}

/// A store result as actors see it (the error converted with `From`).
pub(crate) fn for_actors<T>(result: Result<T>) -> Result<T, dgidgi_actors::StoreFailure> {
    result.map_err(Into::into)
}

/// A page request: at most `limit` rows older than `cursor` (the last id of the page before).
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<String>,
}

/// The filter of rows owned by tenant `$1`, or by the platform (no tenant) when `$1` is ''.
const OWNED_BY: &str = "(tenant_id = $1 OR ($1 = '' AND tenant_id IS NULL))";

/// One page of rows, newest first, and the cursor of the next page if there is one.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Page {
    /// A cursor bound that every id sorts below: ids are a lowercase prefix + `_` + hex.
    fn before(&self) -> &str {
        self.cursor.as_deref().unwrap_or("zzzz")
    }

    /// SQL LIMIT: one more than asked, to learn whether another page follows.
    fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    fn paged<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> &str) -> Paged<T> {
        let next_cursor = if items.len() > self.limit as usize {
            items.truncate(self.limit as usize);
            items.last().map(|last| id(last).to_string())
        } else {
            None
        };
        Paged { items, next_cursor }
    }
}

/// The handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Reads; on PostgreSQL also the write path's connections.
    pool: AnyPool,
    backend: Backend,
    /// Every write, committed in groups (see `writer`).
    write_path: writer::Writer,
    /// On SQLite, the by-id reads and pages without a hop (see `read`).
    readers: Option<Arc<read::Readers>>,
    /// This process's id among the nodes sharing the database: the owner of the runs it
    /// claims (see `cluster`).
    node: Arc<str>,
    /// How long a claim lasts without renewal.
    lease: Duration,
    /// On SQLite, the lock file held while this process serves the database.
    exclusive: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    /// The SQLite database file, if that is the backend.
    sqlite_file: Option<std::path::PathBuf>,
    /// On SQLite, the free space of the file's file system below which `ping` fails.
    min_free_bytes: u64,
    /// Announces committed appends to the other nodes (PostgreSQL).
    announcer: Option<cluster::Announcer>,
    /// Cancelled when the store closes: what works beside it (the cluster listener) stops.
    closing: tokio_util::sync::CancellationToken,
}

impl Store {
    /// Connects to `database.url`, creating the SQLite file and its folder when missing.
    #[tracing::instrument(skip_all, fields(url = %redact(&config.url)))]
    pub async fn connect(config: &DatabaseConfig) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if config.url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(&config.url)?)
        } else {
            (Backend::Postgres, config.url.clone())
        };
        let options = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
                // A connection that still counts itself inside a transaction when it is taken
                // again had its rollback fail (SQLite rolls a transaction back by itself on
                // SQLITE_FULL, and sqlx's ROLLBACK then fails): it is closed and replaced,
                // so that no later write runs inside a transaction that never commits.
                .before_acquire(|conn, _| {
                    Box::pin(async move {
                        let clean = !sqlx::Connection::is_in_transaction(conn);
                        if !clean {
                            tracing::warn!(
                                "a database connection was left inside a transaction; replacing it"
                            );
                        }
                        Ok(clean)
                    })
                })
                // A connection to a local SQLite file does not go stale: checking it before
                // each use would cost two thread hops per query for nothing.
                .test_before_acquire(backend == Backend::Postgres)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers run beside the writer; NORMAL syncs at
                            // checkpoints, which is durable against process crashes.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = options(config.max_connections).connect(&url).await?;
        let node: Arc<str> = crate::cluster::new_node_id().into();
        let announcer = (backend == Backend::Postgres)
            .then(|| cluster::start_announcer(pool.clone(), node.clone()));
        let sqlite_file = (backend == Backend::Sqlite)
            .then(|| sqlite_file(&url))
            .flatten();
        let write_path = match &sqlite_file {
            Some(file) => writer::Writer::sqlite(file)?,
            None => writer::Writer::pooled(pool.clone()),
        };
        Ok(Self {
            pool,
            backend,
            write_path,
            readers: sqlite_file
                .as_deref()
                .map(|f| Arc::new(read::Readers::new(f))),
            node,
            lease: Duration::from_secs(10),
            exclusive: Default::default(),
            sqlite_file,
            min_free_bytes: config.min_free_mb.saturating_mul(1024 * 1024),
            closing: Default::default(),
            announcer,
        })
    }

    /// This process's id among the nodes sharing the database.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Cancelled when the store closes.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }

    /// The same store, its claims lasting `lease` without renewal.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Applies the backend's migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Commits `unit` through the write path (`writer`); what each statement did.
    async fn write(&self, unit: Vec<writer::Stmt>) -> Result<Vec<writer::Done>> {
        self.write_path.write(unit).await
    }

    /// Commits one statement through the write path; what it did.
    async fn write_one(&self, stmt: writer::Stmt) -> Result<writer::Done> {
        Ok(self.write(vec![stmt]).await?.remove(0))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers and takes a write, through the write path (`/readyz`).
    pub async fn ping(&self) -> Result<()> {
        // A write may still fit on a full disk (SQLite reuses its WAL's free frames), so
        // a SQLite database also needs room to grow.
        if let Some(free) = self.sqlite_file.as_deref().and_then(free_bytes) {
            if free < self.min_free_bytes {
                return Err(Error::Unavailable(format!(
                    "{} MiB free on the database's disk, below database.min_free_mb",
                    free / (1024 * 1024)
                )));
            }
        }
        let mark = writer::Stmt::new(
            "INSERT INTO runtime_settings (name, value) VALUES ('readyz', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(crate::ids::now_rfc3339());
        self.write_one(mark).await?;
        Ok(())
    }

    /// Closes the pools, waiting for connections in use to be returned, and lets another
    /// process serve a SQLite database.
    pub async fn close(&self) {
        self.closing.cancel();
        self.pool.close().await;
        if let Ok(mut held) = self.exclusive.lock() {
            held.take();
        }
    }

    /// A runtime setting, created with `init` the first time it is asked for. Every node
    /// sharing the database gets the same value. Never a secret: see `crate::secrets`.
    pub async fn setting_or_init(
        &self,
        name: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String> {
        // Read first: a setting that exists (every call after the first, such as each
        // webhook fan-out round) costs no write.
        let sql = "SELECT value FROM runtime_settings WHERE name = $1";
        let value = |row: &read::Record| row.get::<String>("value");
        if let Some(found) = self.read(sql, vec![name.into()], value).await?.pop() {
            return Ok(found);
        }
        let init = writer::Stmt::new(
            "INSERT INTO runtime_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(init());
        self.write_one(init).await?;
        self.read(sql, vec![name.into()], value)
            .await?
            .pop()
            .ok_or_else(|| Error::Corrupt(format!("setting '{name}' was not kept")))
    }

    /// Whether the database still holds the secrets it kept before they moved out of it,
    /// and the legacy sealing key if it does.
    pub async fn legacy_secrets(&self) -> Result<(bool, Option<String>)> {
        let rows = sqlx::query(
            "SELECT name, value FROM runtime_settings WHERE name IN ('jwt_secret', 'secrets_key')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut key = None;
        for row in &rows {
            if row.try_get::<String, _>("name")? == "secrets_key" {
                key = Some(row.try_get("value")?);
            }
        }
        Ok((!rows.is_empty(), key))
    }

    /// Deletes the legacy secrets (once what they sealed is sealed again).
    pub async fn forget_legacy_secrets(&self) -> Result<()> {
        let forget = writer::Stmt::new(
            "DELETE FROM runtime_settings WHERE name IN ('jwt_secret', 'secrets_key')",
        );
        self.write_one(forget).await?;
        Ok(())
    }
}

impl Store {
    /// Row `id` of tenant `tenant_id` from `select` (`SELECT <columns> FROM <table>`).
    async fn tenant_row<T>(
        &self,
        select: &str,
        tenant_id: &str,
        id: &str,
        from_row: fn(&read::Record) -> Result<T>,
    ) -> Result<Option<T>> {
        let sql = format!("{select} WHERE tenant_id = $1 AND id = $2");
        let rows = self
            .read(&sql, vec![tenant_id.into(), id.into()], from_row)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The rows of `sql` with `binds`, made into `T`s by `from_row`: on SQLite on this
    /// thread (`read`), on PostgreSQL through the pool.
    async fn read<T>(
        &self,
        sql: &str,
        binds: Vec<writer::Bind>,
        from_row: fn(&read::Record) -> Result<T>,
    ) -> Result<Vec<T>> {
        if let Some(readers) = &self.readers {
            return readers.query(sql, &binds, from_row);
        }
        let rows = writer::sqlx_query(sql, &binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| from_row(&r.into())).collect()
    }

    /// One page, newest first, of the rows of `select` that match `filter`, whose
    /// placeholders `$1..$n` take `binds`; the page's bounds come after them. The one
    /// shape of every keyset-paginated list.
    async fn page_where<T>(
        &self,
        select: &str,
        filter: &str,
        binds: &[&str],
        page: &Page,
        from_row: fn(&read::Record) -> Result<T>,
        id: fn(&T) -> &str,
    ) -> Result<Paged<T>> {
        let n = binds.len();
        let sql = format!(
            "{select} WHERE {filter} AND id < ${} ORDER BY id DESC LIMIT ${}",
            n + 1,
            n + 2
        );
        let mut all: Vec<writer::Bind> = binds.iter().map(|b| (*b).into()).collect();
        all.push(page.before().into());
        all.push(page.fetch().into());
        let items = self.read(&sql, all, from_row).await?;
        Ok(page.paged(items, id))
    }
}

/// The SQLite URL with `mode=rwc` (create the file), after creating the file's folder.
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(Error::Corrupt(
            "database.url: an SQLite URL must name a file".into(),
        ));
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Corrupt(format!(
                "database.url: cannot create {}: {e}",
                dir.display()
            ))
        })?;
    }
    let mode = if query.contains("mode=") {
        ""
    } else {
        "mode=rwc"
    };
    let sep = if query.is_empty() || mode.is_empty() {
        ""
    } else {
        "&"
    };
    Ok(format!("sqlite://{path}?{query}{sep}{mode}"))
}

/// The space free to this process on the file system holding `file`.
fn free_bytes(file: &std::path::Path) -> Option<u64> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The database file of a SQLite URL (as `sqlite_url` writes it).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    (!path.is_empty()).then(|| path.into())
}

/// The URL with any password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn json_column<'r, T: serde::de::DeserializeOwned>(
    row: impl Into<read::Record<'r>>,
    column: &str,
) -> Result<T> {
    let text: String = row.into().get(column)?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}
