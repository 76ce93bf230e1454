//! The write path: every write of the store. Each caller hands over one unit of work (a list of
//! statements that commit together or not at all); one writer takes every unit waiting
//! and commits them in one transaction, then answers each caller once its unit is
//! durable. A unit that fails fails alone: the others of its batch still commit.
//!
//! A unit is data (SQL text and the values bound to it), written once for both backends:
//! - on a SQLite file, a thread of its own owns the one write connection (rusqlite) and
//!   runs a whole batch in one hop, each unit inside a savepoint; sqlx would cross to its
//!   connection thread and back for every statement, and those crossings were most of
//!   the server's time (BENCHMARKS.md, issue 16);
//! - on PostgreSQL, a task runs the batch through sqlx in one
//!   transaction, and when that fails runs each unit again alone.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Error, Result};

/// Units committed in one transaction at most.
const MAX_BATCH: usize = 512;

/// How often the checkpointer copies the WAL back into the SQLite file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Frames in the WAL (4 KiB pages) from which the writer checkpoints too, after answering
/// its batch, so that the log restarts under unbroken load.
const CHECKPOINT_FRAMES: i64 = 4096;

/// A value bound to a statement's `$n`.
#[derive(Debug, Clone)]
pub(super) enum Bind {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Bind {
    fn from(v: i64) -> Self {
        Bind::Int(v)
    }
}
impl From<bool> for Bind {
    fn from(v: bool) -> Self {
        Bind::Int(i64::from(v))
    }
}
impl From<String> for Bind {
    fn from(v: String) -> Self {
        Bind::Text(v)
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Self {
        Bind::Text(v.to_string())
    }
}
impl From<&String> for Bind {
    fn from(v: &String) -> Self {
        Bind::Text(v.clone())
    }
}
impl From<&Option<String>> for Bind {
    fn from(v: &Option<String>) -> Self {
        v.as_ref().into()
    }
}
impl<T: Into<Bind>> From<Option<T>> for Bind {
    fn from(v: Option<T>) -> Self {
        v.map_or(Bind::Null, Into::into)
    }
}

/// One statement of a unit of work.
#[derive(Debug, Clone)]
pub(super) struct Stmt {
    sql: Cow<'static, str>,
    binds: Vec<Bind>,
    /// What refuses the whole unit when the statement changes no row.
    unless_changed: Option<Unless>,
    /// The statement returns a row; its first column (an integer) is the answer.
    returns: bool,
}

impl Stmt {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            binds: Vec::new(),
            unless_changed: None,
            returns: false,
        }
    }

    /// Binds the next `$n`.
    pub fn bind(mut self, value: impl Into<Bind>) -> Self {
        self.binds.push(value.into());
        self
    }

    /// Refuses the whole unit (fenced, with `why`) unless this statement changes a row.
    pub fn or_fenced(mut self, why: String) -> Self {
        self.unless_changed = Some(Unless::Fenced(why));
        self
    }

    /// Refuses the whole unit with `Error::Gone` unless this statement changes a row (the
    /// row it changes is not there, or no longer as the caller read it).
    pub fn or_gone(mut self) -> Self {
        self.unless_changed = Some(Unless::Gone);
        self
    }

    /// The statement returns a row (`RETURNING`, `SELECT`): its first column is answered.
    pub fn returning(mut self) -> Self {
        self.returns = true;
        self
    }
}

/// Why a unit is refused when one of its statements changes no row.
#[derive(Debug, Clone)]
enum Unless {
    Fenced(String),
    Gone,
}

/// What a statement did: the rows it changed, and the first column of each row it
/// returned (for a statement that returns rows).
#[derive(Debug, Clone, Default)]
pub(super) struct Done {
    pub changed: u64,
    pub returned: Vec<Bind>,
}

impl Done {
    /// The first returned value, if it is an integer.
    pub fn first_int(&self) -> Option<i64> {
        match self.returned.first() {
            Some(Bind::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// The returned values that are text.
    pub fn texts(self) -> Vec<String> {
        self.returned
            .into_iter()
            .filter_map(|v| match v {
                Bind::Text(t) => Some(t),
                _ => None,
            })
            .collect()
    }
}

type Answer = oneshot::Sender<Result<Vec<Done>>>;

struct Job {
    unit: Vec<Stmt>,
    done: Answer,
}

/// The handle to the writer; cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// A writer with a thread and a connection of its own on the SQLite file `file`.
    pub fn sqlite(file: &Path) -> Result<Self> {
        let conn = open(file)?;
        let checkpoints = rusqlite::Connection::open(file).map_err(sqlite_error)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let wal = Arc::new(AtomicI64::new(0));
        let (file, frames) = (file.to_path_buf(), wal.clone());
        let thread = |name: &str| std::thread::Builder::new().name(name.into());
        let started = thread("sqlite-writer")
            .spawn(move || sqlite_writer(conn, &file, rx, &frames))
            .and_then(|_| {
                thread("sqlite-checkpointer").spawn(move || checkpointer(checkpoints, wal))
            });
        started.map_err(|e| Error::Unavailable(format!("the writer thread did not start: {e}")))?;
        Ok(Self { jobs })
    }

    /// A writer that commits through `pool` (PostgreSQL), on a task of the current runtime.
    pub fn pooled(pool: AnyPool) -> Self {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let jobs = batch(first, |_| rx.try_recv().ok());
                metrics::histogram!("dgidgi_write_batch_size").record(jobs.len() as f64);
                let answers = pooled_answers(&pool, &jobs).await;
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.done.send(answer);
                }
            }
        });
        Self { jobs }
    }

    /// Commits `unit` (with whatever else is waiting) and answers what each of its
    /// statements did, once it is durable.
    pub async fn write(&self, unit: Vec<Stmt>) -> Result<Vec<Done>> {
        let (done, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the database writer has stopped".into());
        self.jobs.send(Job { unit, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// `first` and whatever else waits, up to `MAX_BATCH`.
fn batch(first: Job, mut next: impl FnMut(usize) -> Option<Job>) -> Vec<Job> {
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH {
        match next(jobs.len()) {
            Some(job) => jobs.push(job),
            None => break,
        }
    }
    jobs
}

/// Commits `jobs` through `pool` in one transaction; when that fails, each alone, so that
/// only the units at fault fail. Answers each.
async fn pooled_answers(pool: &AnyPool, jobs: &[Job]) -> Vec<Result<Vec<Done>>> {
    if let Ok(answers) = pooled_batch(pool, jobs).await {
        return answers.into_iter().map(Ok).collect();
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let alone = pooled_batch(pool, std::slice::from_ref(job)).await;
        answers.push(alone.map(|mut a| a.remove(0)));
    }
    answers
}

async fn pooled_batch(pool: &AnyPool, jobs: &[Job]) -> Result<Vec<Vec<Done>>> {
    let mut tx = pool.begin().await?;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut answer = Vec::with_capacity(job.unit.len());
        for stmt in &job.unit {
            answer.push(execute(&mut tx, stmt).await?);
        }
        answers.push(answer);
    }
    tx.commit().await?;
    Ok(answers)
}

/// `sql` as a sqlx query with `binds` bound in order.
pub(super) fn sqlx_query<'q>(
    sql: &'q str,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    binds
        .iter()
        .fold(sqlx::query(sql), |query, bind| match bind {
            Bind::Null => query.bind(None::<String>),
            Bind::Int(v) => query.bind(*v),
            Bind::Text(v) => query.bind(v.as_str()),
        })
}

/// Runs a unit's statement `stmt` inside the sqlx transaction `tx`.
async fn execute(tx: &mut sqlx::Transaction<'_, sqlx::Any>, stmt: &Stmt) -> Result<Done> {
    let query = sqlx_query(&stmt.sql, &stmt.binds);
    // A broken uniqueness rule is a conflict, which the caller names (`conflict_as`).
    let conflict = |e| Error::from_write(e, "a row with this key exists");
    let done = if stmt.returns {
        let rows = query.fetch_all(&mut **tx).await.map_err(conflict)?;
        let returned = rows
            .iter()
            .map(|r| {
                Ok(match r.try_get::<Option<i64>, _>(0) {
                    Ok(v) => Bind::from(v),
                    Err(_) => Bind::from(r.try_get::<Option<String>, _>(0)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Done {
            changed: returned.len() as u64,
            returned,
        }
    } else {
        Done {
            changed: query
                .execute(&mut **tx)
                .await
                .map_err(conflict)?
                .rows_affected(),
            returned: Vec::new(),
        }
    };
    refuse_unless_changed(stmt, &done)?;
    Ok(done)
}

fn refuse_unless_changed(stmt: &Stmt, done: &Done) -> Result<()> {
    match &stmt.unless_changed {
        Some(Unless::Fenced(why)) if done.changed == 0 => Err(Error::Fenced(why.clone())),
        Some(Unless::Gone) if done.changed == 0 => Err(Error::Gone),
        _ => Ok(()),
    }
}

fn open(file: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(file).map_err(sqlite_error)?;
    // As the pool's connections (`Store::connect`): WAL, synced at checkpoints. No
    // checkpoint inside a commit: the checkpointer copies the log back off this thread.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -65536;",
    )
    .map_err(sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A SQLite error as the store's: an outage when it says the database is out of reach
/// or out of space (the codes `is_unavailable` names for sqlx).
pub(super) fn sqlite_error(e: rusqlite::Error) -> Error {
    let unavailable = matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::CannotOpen
        )
    );
    let unique = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    );
    if unavailable {
        Error::Unavailable(e.to_string())
    } else if unique {
        Error::Conflict(e.to_string())
    } else {
        Error::Database(e.to_string())
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`: the frames in the log, and whether every
/// one of them is in the database file now.
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<(i64, bool)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let (log, copied): (i64, i64) = (row.get(1)?, row.get(2)?);
        Ok((log, log == copied))
    })
}

/// Copies the WAL back into the database file every `CHECKPOINT_EVERY` on a connection of
/// its own (copying and syncing the file while the writer goes on), and tells the writer
/// how long the log is (`wal`). Stops when the writer has stopped.
fn checkpointer(conn: rusqlite::Connection, wal: Arc<AtomicI64>) {
    while Arc::strong_count(&wal) > 1 {
        std::thread::sleep(CHECKPOINT_EVERY);
        match checkpoint(&conn) {
            Ok((log, _)) => wal.store(log, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
        }
    }
}

fn sqlite_writer(
    mut conn: rusqlite::Connection,
    file: &Path,
    mut rx: mpsc::UnboundedReceiver<Job>,
    wal: &AtomicI64,
) {
    while let Some(first) = rx.blocking_recv() {
        let jobs = batch(first, |_| rx.try_recv().ok());
        metrics::histogram!("dgidgi_write_batch_size").record(jobs.len() as f64);
        let answers = sqlite_batch(&conn, &jobs);
        for (job, answer) in jobs.into_iter().zip(answers) {
            let _ = job.done.send(answer);
        }
        // The log restarts (the next transaction writes from its start) only once every
        // frame is copied back, which under unbroken load only a checkpoint between this
        // thread's transactions sees: the checkpointer copied most, this copies the rest.
        if wal.load(Ordering::Relaxed) >= CHECKPOINT_FRAMES {
            match checkpoint(&conn) {
                Ok((_, true)) => wal.store(0, Ordering::Relaxed),
                Ok((log, false)) => wal.store(log / 2, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "the writer's checkpoint failed"),
            }
        }
        // A failed COMMIT that SQLite did not roll back by itself would leave every later
        // batch inside a transaction that never commits: start again on a new connection.
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            tracing::warn!("the writer's connection was left inside a transaction; reopening it");
            match open(file) {
                Ok(fresh) => conn = fresh,
                Err(e) => tracing::error!(error = %e, "the writer's connection did not reopen"),
            }
        }
    }
}

/// Runs `jobs` in one transaction, each in a savepoint of its own; answers each.
fn sqlite_batch(conn: &rusqlite::Connection, jobs: &[Job]) -> Vec<Result<Vec<Done>>> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = sqlite_error(e);
        return jobs.iter().map(|_| Err(copy(&e))).collect();
    }
    let mut answers: Vec<Result<Vec<Done>>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = conn
            .execute_batch("SAVEPOINT unit")
            .map_err(sqlite_error)
            .and_then(|()| job.unit.iter().map(|s| sqlite_stmt(conn, s)).collect());
        let closed = match answer {
            Ok(_) => conn.execute_batch("RELEASE unit"),
            Err(_) => conn.execute_batch("ROLLBACK TO unit; RELEASE unit"),
        };
        answers.push(match closed {
            Ok(()) => answer,
            Err(e) => Err(sqlite_error(e)),
        });
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let e = sqlite_error(e);
        let _ = conn.execute_batch("ROLLBACK");
        return jobs.iter().map(|_| Err(copy(&e))).collect();
    }
    answers
}

/// The same failure again, for each unit of a batch that failed as a whole.
fn copy(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::Gone => Error::Gone,
        other => Error::Database(other.to_string()),
    }
}

/// Binds `binds` to `prepared`: `$n` names the n-th wherever it stands in the text.
pub(super) fn bind_all(prepared: &mut rusqlite::CachedStatement<'_>, binds: &[Bind]) -> Result<()> {
    for index in 1..=prepared.parameter_count() {
        let n = prepared
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::Database(format!("parameter {index} is not named $n")))?;
        let value = binds
            .get(n - 1)
            .ok_or_else(|| Error::Database(format!("no value bound to ${n}")))?;
        let bound = match value {
            Bind::Null => prepared.raw_bind_parameter(index, rusqlite::types::Null),
            Bind::Int(v) => prepared.raw_bind_parameter(index, v),
            Bind::Text(v) => prepared.raw_bind_parameter(index, v.as_str()),
        };
        bound.map_err(sqlite_error)?;
    }
    Ok(())
}

fn sqlite_stmt(conn: &rusqlite::Connection, stmt: &Stmt) -> Result<Done> {
    let mut prepared = conn.prepare_cached(&stmt.sql).map_err(sqlite_error)?;
    bind_all(&mut prepared, &stmt.binds)?;
    let done = if stmt.returns {
        let mut rows = prepared.raw_query();
        let mut returned = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            returned.push(match row.get_ref(0).map_err(sqlite_error)? {
                rusqlite::types::ValueRef::Integer(v) => Bind::Int(v),
                rusqlite::types::ValueRef::Text(t) => {
                    Bind::Text(String::from_utf8_lossy(t).into_owned())
                }
                _ => Bind::Null,
            });
        }
        Done {
            changed: returned.len() as u64,
            returned,
        }
    } else {
        Done {
            changed: prepared.raw_execute().map_err(sqlite_error)? as u64,
            returned: Vec::new(),
        }
    };
    refuse_unless_changed(stmt, &done)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(unit: Vec<Stmt>) -> Job {
        Job {
            unit,
            done: oneshot::channel().0,
        }
    }

    fn insert(id: i64, v: &str) -> Stmt {
        Stmt::new("INSERT INTO t (id, v) VALUES ($1, $2)")
            .bind(id)
            .bind(v)
    }

    /// One batch: a good unit, one that breaks a key after a good statement, a good one, a
    /// fenced one. Only the two good units commit, whole.
    fn mixed_batch() -> Vec<Job> {
        vec![
            job(vec![insert(1, "a")]),
            job(vec![insert(2, "b"), insert(1, "again")]),
            job(vec![insert(3, "c")]),
            job(vec![
                insert(4, "d"),
                Stmt::new("UPDATE t SET v = v WHERE id = $1")
                    .bind(99)
                    .or_fenced("not held".into()),
            ]),
        ]
    }

    fn assert_only_its_own_units_failed(answers: &[Result<Vec<Done>>]) {
        assert!(answers[0].is_ok(), "{:?}", answers[0]);
        assert!(
            matches!(answers[1], Err(Error::Conflict(_))),
            "{:?}",
            answers[1]
        );
        assert!(answers[2].is_ok(), "{:?}", answers[2]);
        assert!(
            matches!(answers[3], Err(Error::Fenced(_))),
            "{:?}",
            answers[3]
        );
    }

    #[test]
    fn a_failed_unit_fails_alone_in_a_sqlite_batch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        let conn = open(&file).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let answers = sqlite_batch(&conn, &mixed_batch());
        assert_only_its_own_units_failed(&answers);
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [1, 3], "units 2 and 4 left nothing behind");
        assert!(conn.is_autocommit(), "the batch is over");
    }

    #[tokio::test]
    async fn a_failed_unit_fails_alone_in_a_pooled_batch() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let answers = pooled_answers(&pool, &mixed_batch()).await;
        assert_only_its_own_units_failed(&answers);
        let ids: Vec<i64> = sqlx::query("SELECT id FROM t ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, [1, 3], "units 2 and 4 left nothing behind");
    }

    #[tokio::test]
    async fn each_caller_is_answered_what_its_statements_did() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        open(&file)
            .unwrap()
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let writer = Writer::sqlite(&file).unwrap();
        let writes = (0..200).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(vec![
                        insert(i, "x"),
                        Stmt::new("UPDATE t SET v = $2 WHERE id = $1 RETURNING id * 10")
                            .bind(i)
                            .bind("y")
                            .returning(),
                    ])
                    .await
            })
        });
        for (i, write) in writes.enumerate() {
            let done = write.await.unwrap().unwrap();
            assert_eq!(done[0].changed, 1);
            assert_eq!(
                done[1].first_int(),
                Some(i as i64 * 10),
                "the row it returned"
            );
        }
    }
}
