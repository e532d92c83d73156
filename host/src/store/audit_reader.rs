//! The audit listing's own SQLite connections (on-disk SQLite only). Through sqlx a page of rows crossed from the
//! connection's thread one message per row, every column copied on the way (`sqlite3_value_dup`), and the
//! handler was woken for each: 100 rows cost about three times SQLite's own time, and any extra work in the
//! statement (a scoped caller's hosts) was paid again in wake-ups. Here a blocking thread runs the statement on a
//! connection of its own and hands back the whole page at once (see BENCHMARKS.md, Grants).
//!
//! Read only (`query_only`): the audit writer and the pool write; these connections never hold a transaction
//! between statements, so they never hold back a checkpoint.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use rusqlite::{
    params_from_iter,
    types::{ToSqlOutput, Value},
    Connection, ToSql,
};
use tokio::sync::Semaphore;

use super::{audit::AuditRow, audit_sqlite, Bind, StoreError};

/// Statements running at once, at most, and connections kept open. Listings beyond it wait for a turn rather
/// than open connections without bound.
const READERS: usize = 4;

/// Statements each connection keeps prepared: a listing's text differs with its filters and the number of hosts.
const PREPARED: usize = 64;

pub(super) struct AuditReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    turns: Arc<Semaphore>,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ToSql for Bind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Bind::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Bind::Text(v) => ToSqlOutput::from(v.as_str()),
        })
    }
}

impl AuditReader {
    /// Connections are opened when first needed: the file exists and is migrated by then.
    pub(super) fn new(path: PathBuf) -> AuditReader {
        AuditReader { path, idle: Mutex::new(Vec::new()), turns: Arc::new(Semaphore::new(READERS)) }
    }

    /// Every row `sql` (selecting [`super::audit::COLUMNS`] in order) gives with `binds`.
    pub(super) async fn rows(self: &Arc<Self>, sql: String, binds: Vec<Bind>) -> Result<Vec<AuditRow>, StoreError> {
        // The semaphore is never closed.
        let turn = Arc::clone(&self.turns).acquire_owned().await.map_err(|_| reader_gone())?;
        let reader = Arc::clone(self);
        // A caller that goes away leaves the statement to finish: the turn is held until it has.
        tokio::task::spawn_blocking(move || {
            let rows = reader.run(&sql, &binds);
            drop(turn);
            rows
        })
        .await
        .map_err(|_| reader_gone())?
    }

    fn run(&self, sql: &str, binds: &[Bind]) -> Result<Vec<AuditRow>, StoreError> {
        let kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match kept {
            Some(conn) => conn,
            None => self.open()?,
        };
        let rows = read(&conn, sql, binds);
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        Ok(rows?)
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = audit_sqlite::open(&self.path)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        Ok(conn)
    }
}

fn read(conn: &Connection, sql: &str, binds: &[Bind]) -> rusqlite::Result<Vec<AuditRow>> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params_from_iter(binds), audit_sqlite::audit_row)?;
    rows.collect()
}

fn reader_gone() -> StoreError {
    StoreError::Io { what: "the audit reader's thread", source: std::io::Error::other("it ended before answering") }
}
