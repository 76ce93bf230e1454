//! The hot reads without a hop. A read through sqlx's SQLite driver crosses to the
//! connection's thread and back (twice with the pool's acquire), and under load those
//! crossings, not SQLite, were what reads waited on (BENCHMARKS.md, S3 and S6). On a
//! SQLite file the by-id reads and pages run on the calling thread instead, on a
//! connection of a small set of its own (a primary-key read takes microseconds); in WAL
//! mode a read never waits for the writer. PostgreSQL reads go through sqlx's pool.
//!
//! A row is read the same way whichever backend it came from ([`Record`]), so each table's
//! mapper is written once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sqlx::any::AnyRow;

use super::writer::{bind_all, sqlite_error, Bind};
use super::{Error, Result};

/// Connections kept for reuse at the most; more are opened when as many reads run at once.
const KEEP: usize = 16;

/// A row of either backend.
#[derive(Clone, Copy)]
pub(super) enum Record<'r> {
    Any(&'r AnyRow),
    Lite(&'r rusqlite::Row<'r>),
}

impl Record<'_> {
    /// Column `column` of the row.
    pub fn get<T: Column>(&self, column: &str) -> Result<T> {
        match self {
            Record::Any(row) => T::any(row, column),
            Record::Lite(row) => T::lite(row, column),
        }
    }
}

impl<'r> From<&'r AnyRow> for Record<'r> {
    fn from(row: &'r AnyRow) -> Self {
        Record::Any(row)
    }
}

impl<'r> From<&Record<'r>> for Record<'r> {
    fn from(row: &Record<'r>) -> Self {
        *row
    }
}

/// A type a column is read as.
pub(super) trait Column: Sized {
    fn any(row: &AnyRow, column: &str) -> Result<Self>;
    fn lite(row: &rusqlite::Row<'_>, column: &str) -> Result<Self>;
}

macro_rules! column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn any(row: &AnyRow, column: &str) -> Result<Self> {
                Ok(sqlx::Row::try_get(row, column)?)
            }
            fn lite(row: &rusqlite::Row<'_>, column: &str) -> Result<Self> {
                row.get(column).map_err(sqlite_error)
            }
        }
    )*};
}
column!(String, Option<String>, i64, Option<i64>);

/// The read connections of a SQLite file.
pub(super) struct Readers {
    file: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The rows of `sql` with `binds`, each made into a `T` by `from_row`.
    pub fn query<T>(
        &self,
        sql: &str,
        binds: &[Bind],
        from_row: fn(&Record) -> Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.take()?;
        let rows = Self::run(&conn, sql, binds, from_row);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < KEEP {
                idle.push(conn);
            }
        }
        rows
    }

    fn run<T>(
        conn: &rusqlite::Connection,
        sql: &str,
        binds: &[Bind],
        from_row: fn(&Record) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = conn.prepare_cached(sql).map_err(sqlite_error)?;
        bind_all(&mut stmt, binds)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(from_row(&Record::Lite(row))?);
        }
        Ok(out)
    }

    fn take(&self) -> Result<rusqlite::Connection> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(&self.file, flags)
            .map_err(|e| Error::Unavailable(format!("a read connection did not open: {e}")))?;
        // A read waits for a lock only in rare cases (a WAL being recovered); it waits on
        // the caller's thread, so not for long: past it the request gets a 503.
        conn.execute_batch("PRAGMA busy_timeout = 250;")
            .map_err(sqlite_error)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }
}
