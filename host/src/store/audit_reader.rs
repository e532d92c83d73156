//! The audit listing's own SQLite connections (on-disk SQLite only). Through sqlx a page of rows crossed from the
//! connection's thread one message per row, every column copied on the way (`sqlite3_value_dup`), and the
//! handler was woken for each: 100 rows cost about three times SQLite's own time, and any extra work in the
//! statement (a scoped caller's hosts) was paid again in wake-ups. Here a blocking thread runs the statement on a
//! connection of its own and hands back the whole page at once (see BENCHMARKS.md, Grants).
//!
//! A scoped caller's hosts (hundreds, on every query) are kept in a table of the connection's own (`temp`) rather
//! than bound as an `IN` list: SQLite built an index of the list for each statement and bound every value
//! (30–40 µs for 500 hosts); it probes the table's own key instead. Each connection keeps the sets it was asked
//! for, checked value by value before use: the table's name comes from a hash, and a collision must not change
//! whose rows a caller sees.
//!
//! The audit writer and the pool write; these connections only read (and fill their `temp` tables). They never
//! hold a transaction between statements, so they never hold back a checkpoint.

use std::{
    collections::HashMap,
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

/// Statements each connection keeps prepared: a listing's text differs with its filters and its set of hosts.
const PREPARED: usize = 64;

/// Sets of hosts each connection keeps as tables; past this, it drops them all and starts again.
const HOST_TABLES: usize = 32;

pub(super) struct AuditReader {
    path: PathBuf,
    idle: Mutex<Vec<Reader>>,
    turns: Arc<Semaphore>,
}

/// A connection and the sets of hosts its `temp` tables hold, by key.
struct Reader {
    conn: Connection,
    tables: HashMap<u64, Arc<[i64]>>,
}

/// The hosts a listing keeps to, as the table [`host_table`] of `key` names.
#[derive(Debug, Clone)]
pub(super) struct HostSet {
    pub key: u64,
    pub ids: Arc<[i64]>,
}

/// The name of the table that holds a set of hosts, on each reader connection.
pub(super) fn host_table(key: u64) -> String {
    format!("temp.hosts_{key:016x}")
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

    /// Every row `sql` (selecting [`super::audit::COLUMNS`] in order) gives with `binds`; `hosts`, when given, is
    /// what the table `sql` names holds.
    pub(super) async fn rows(
        self: &Arc<Self>,
        sql: String,
        binds: Vec<Bind>,
        hosts: Option<HostSet>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        // The semaphore is never closed.
        let turn = Arc::clone(&self.turns).acquire_owned().await.map_err(|_| reader_gone())?;
        let reader = Arc::clone(self);
        // A caller that goes away leaves the statement to finish: the turn is held until it has.
        tokio::task::spawn_blocking(move || {
            let rows = reader.run(&sql, &binds, hosts.as_ref());
            drop(turn);
            rows
        })
        .await
        .map_err(|_| reader_gone())?
    }

    fn run(&self, sql: &str, binds: &[Bind], hosts: Option<&HostSet>) -> Result<Vec<AuditRow>, StoreError> {
        let kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut reader = match kept {
            Some(reader) => reader,
            None => self.open()?,
        };
        let rows = match hosts {
            Some(set) => reader.keep_hosts(set),
            None => Ok(()),
        }
        .and_then(|()| reader.read(sql, binds));
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(reader);
        Ok(rows?)
    }

    fn open(&self) -> Result<Reader, StoreError> {
        let conn = audit_sqlite::open(&self.path)?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        Ok(Reader { conn, tables: HashMap::new() })
    }
}

impl Reader {
    fn read(&self, sql: &str, binds: &[Bind]) -> rusqlite::Result<Vec<AuditRow>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(params_from_iter(binds), audit_sqlite::audit_row)?;
        rows.collect()
    }

    /// Makes the table of `set.key` hold exactly `set.ids`.
    fn keep_hosts(&mut self, set: &HostSet) -> rusqlite::Result<()> {
        if self.tables.get(&set.key).is_some_and(|held| held[..] == set.ids[..]) {
            return Ok(());
        }
        if self.tables.len() >= HOST_TABLES && !self.tables.contains_key(&set.key) {
            for key in std::mem::take(&mut self.tables).into_keys() {
                self.conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", host_table(key)))?;
            }
        }
        // Forgotten first: a failure half-way leaves a table this connection no longer trusts.
        self.tables.remove(&set.key);
        let table = host_table(set.key);
        let tx = self.conn.unchecked_transaction()?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY); DELETE FROM {table};"
        ))?;
        {
            let mut insert = tx.prepare(&format!("INSERT OR IGNORE INTO {table} (id) VALUES (?)"))?;
            for id in set.ids.iter() {
                insert.execute([id])?;
            }
        }
        tx.commit()?;
        self.tables.insert(set.key, Arc::clone(&set.ids));
        Ok(())
    }
}

fn reader_gone() -> StoreError {
    StoreError::Io { what: "the audit reader's thread", source: std::io::Error::other("it ended before answering") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(reader: &Reader, key: u64) -> Vec<i64> {
        let sql = format!("SELECT id FROM {} ORDER BY id", host_table(key));
        let mut statement = reader.conn.prepare(&sql).unwrap();
        statement.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_table_holds_the_set_asked_for_even_when_another_set_had_its_key() {
        let mut reader = Reader { conn: Connection::open_in_memory().unwrap(), tables: HashMap::new() };
        let set = |key: u64, ids: &[i64]| HostSet { key, ids: ids.into() };
        reader.keep_hosts(&set(7, &[1, 2, 3])).unwrap();
        assert_eq!(held(&reader, 7), [1, 2, 3]);
        // The same key for other hosts (a hash collision): the table is refilled, never reused.
        reader.keep_hosts(&set(7, &[4])).unwrap();
        assert_eq!(held(&reader, 7), [4]);
        for key in 100..100 + HOST_TABLES as u64 {
            reader.keep_hosts(&set(key, &[key as i64])).unwrap();
        }
        assert!(reader.tables.len() <= HOST_TABLES, "{} tables kept", reader.tables.len());
        reader.keep_hosts(&set(7, &[5, 6])).unwrap();
        assert_eq!(held(&reader, 7), [5, 6]);
    }
}
