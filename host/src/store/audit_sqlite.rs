//! The audit writer's own SQLite connection. On the embedded default the writer is the hottest path in the
//! server, and going through the sqlx pool cost it a hand-off to the pool's worker thread per statement plus a
//! copy of every bound string. Here the writer thread calls SQLite directly, with statements prepared once and
//! reused for every group (see BENCHMARKS.md for what this changed).
//!
//! Durability is split from the commit: the connection runs `synchronous = NORMAL` (a commit writes its WAL
//! frames but does not wait for the disk), and [`WalSync`] — `fdatasync` of the WAL file on another thread —
//! makes every commit before it durable. The writer answers a group only after a sync that started after the
//! group's commit, and meanwhile commits the next group, so one disk flush covers as many groups as arrived
//! during the previous one (the classic group-commit pipeline). SQLite's own rules keep the file consistent under
//! NORMAL: the WAL is synced before every checkpoint, and its header before it is reused.
//!
//! Other connections (the pool) still write inventory and jobs, with `synchronous = FULL`; the writer takes the
//! write lock per group (`BEGIN IMMEDIATE`) and waits for theirs within the busy timeout.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{params, Connection, OpenFlags, ToSql, TransactionBehavior};

use super::{
    audit::{AuditSink, COLUMNS, INSERT_COLUMNS, ROW_MARKS},
    now_ms, AuditRow, NewGap, StoreError,
};

pub struct SqliteAuditSink {
    conn: Connection,
    path: PathBuf,
    wal: PathBuf,
}

/// Makes the commits before it durable (`fdatasync` of the database's WAL file) and keeps the WAL short (nudges
/// a checkpointer thread with a connection of its own), both off the writer's thread; and tells the command
/// index's thread ([`super::audit_text`]) that rows are waiting.
pub struct WalSync {
    file: File,
    nudge: std::sync::mpsc::SyncSender<()>,
    index: std::sync::mpsc::SyncSender<()>,
}

impl WalSync {
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let _ = self.nudge.try_send(());
        let _ = self.index.try_send(());
        Ok(())
    }
}

/// Copies committed WAL frames into the database file whenever nudged, at most every [`CHECKPOINT_PAUSE`]. A
/// checkpoint copies about as many bytes as the commits wrote, and the writer used to do it inside a commit
/// every 1000 pages. Ends when the [`WalSync`] is dropped.
fn start_checkpointer(path: &Path) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
    let conn = open(path)?;
    let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("audit-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                // PASSIVE: copies what no reader still needs and never waits for or blocks the writer.
                if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %err, "audit WAL checkpoint failed; the writer checkpoints instead");
                }
                std::thread::sleep(CHECKPOINT_PAUSE);
            }
        })
        .map_err(|source| StoreError::Io { what: "audit checkpoint thread", source })?;
    Ok(nudge)
}

const CHECKPOINT_PAUSE: Duration = Duration::from_millis(20);

/// A connection configured as the pool's are, but committing with `synchronous = NORMAL` (see the module doc).
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // wal_autocheckpoint: the checkpointer keeps the WAL short; this is the backstop. Under sustained load the
    // WAL is never wholly checkpointed between two commits, and only then can SQLite start it over, so at 64 MiB
    // the writer checkpoints itself.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 16384;",
    )?;
    Ok(conn)
}

impl SqliteAuditSink {
    /// Opens the database file that the pool has already created and migrated.
    pub fn open(path: &Path) -> Result<SqliteAuditSink, StoreError> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(SqliteAuditSink { conn: open(path)?, path: path.to_owned(), wal: wal.into() })
    }
}

/// The multi-row INSERTs, largest first, ending with one row. 23 parameters a row: 5 888 at most, within
/// SQLite's default limit of 32 766. Measured: batch ingest ~25 % faster than with one row a statement.
static INSERTS: std::sync::LazyLock<Vec<(usize, String)>> =
    std::sync::LazyLock::new(|| [256, 32, 4, 1].into_iter().map(|rows| (rows, insert_sql(rows))).collect());

fn insert_sql(rows: usize) -> String {
    let marks = vec![ROW_MARKS; rows].join(", ");
    format!("INSERT INTO server_history ({INSERT_COLUMNS}) VALUES {marks}")
}

/// A row's values in `INSERT_COLUMNS` order.
fn row_params(r: &AuditRow) -> [&dyn ToSql; 23] {
    [
        &r.host_id,
        &r.history_ip,
        &r.history_id,
        &r.history_user,
        &r.login_user,
        &r.tty,
        &r.history_datetime,
        &r.received_at,
        &r.history_command,
        &r.source,
        &r.stream,
        &r.seq,
        &r.chain_seq,
        &r.row_hash,
        &r.session,
        &r.argv,
        &r.cwd,
        &r.exe,
        &r.exit_code,
        &r.pid,
        &r.ppid,
        &r.euid,
        &r.auid,
    ]
}

pub(super) fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        host_id: r.get(1)?,
        history_ip: r.get(2)?,
        history_id: r.get(3)?,
        history_user: r.get(4)?,
        login_user: r.get(5)?,
        tty: r.get(6)?,
        history_datetime: r.get(7)?,
        received_at: r.get(8)?,
        history_command: r.get(9)?,
        source: r.get(10)?,
        stream: r.get(11)?,
        seq: r.get(12)?,
        chain_seq: r.get(13)?,
        row_hash: r.get(14)?,
        session: r.get(15)?,
        argv: r.get(16)?,
        cwd: r.get(17)?,
        exe: r.get(18)?,
        exit_code: r.get(19)?,
        pid: r.get(20)?,
        ppid: r.get(21)?,
        euid: r.get(22)?,
        auid: r.get(23)?,
    })
}

impl AuditSink for SqliteAuditSink {
    fn wal_sync(&self) -> Result<Option<WalSync>, StoreError> {
        // The WAL file exists while any connection is open, and this sink's stays open for the life of the
        // process, so the file (inode) opened here is the one SQLite appends to from now on.
        let file = File::options()
            .read(true)
            .write(true)
            .open(&self.wal)
            .map_err(|source| StoreError::Io { what: "the database's WAL file", source })?;
        Ok(Some(WalSync { file, nudge: start_checkpointer(&self.path)?, index: super::audit_text::start(&self.path)? }))
    }

    fn existing_seqs(&mut self, host_id: i64, stream: &str, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT seq FROM server_history WHERE host_id = ? AND stream = ? AND seq >= ? AND seq <= ?",
        )?;
        let seqs = q.query_map(params![host_id, stream, from, to], |r| r.get(0))?;
        Ok(seqs.collect::<Result<_, _>>()?)
    }

    fn audit_head(&mut self, host_id: i64) -> Result<Option<(i64, String)>, StoreError> {
        let mut q = self.conn.prepare_cached("SELECT last_seq, last_hash FROM audit_chain WHERE host_id = ?")?;
        let mut rows = q.query_map([host_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.next().transpose()?)
    }

    fn latest_received_at(&mut self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("SELECT COALESCE(MAX(received_at), 0) FROM server_history", [], |r| r.get(0))?)
    }

    fn recent_audit_rows(&mut self, host_id: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM server_history WHERE host_id = ? ORDER BY chain_seq DESC LIMIT ?");
        let mut q = self.conn.prepare_cached(&sql)?;
        let rows = q.query_map(params![host_id, limit], audit_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write_audit_batch(
        &mut self,
        rows: &[AuditRow],
        gaps: &[NewGap],
        heads: &[(i64, i64, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(rows.len());
        {
            // Rows go in through multi-row statements of a few fixed sizes, largest first (SQLite then runs one
            // statement for many rows; each size is prepared once for the connection's life).
            let mut rest = rows;
            for (size, sql) in INSERTS.iter() {
                if rest.len() < *size {
                    // Not even looked up: the cache hashes and compares the whole SQL text (tens of KiB for the
                    // largest), and clears every parameter of a statement it hands back.
                    continue;
                }
                let mut insert = tx.prepare_cached(sql)?;
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(size * 23);
                while rest.len() >= *size {
                    let (these, after) = rest.split_at(*size);
                    params.clear();
                    params.extend(these.iter().flat_map(row_params));
                    insert.execute(params.as_slice())?;
                    // One statement's new rowids are consecutive: each is the table's largest plus one, and this
                    // connection holds the write lock.
                    let last = tx.last_insert_rowid();
                    ids.extend(last - *size as i64 + 1..=last);
                    rest = after;
                }
            }
            let mut gap = tx.prepare_cached(
                "INSERT INTO audit_gaps (host_id, stream, from_seq, to_seq, reason, received_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?;
            for g in gaps {
                gap.execute(params![g.host_id, g.stream, g.from_seq, g.to_seq, g.reason, now_ms()])?;
            }
            let mut head = tx.prepare_cached(
                "INSERT INTO audit_chain (host_id, last_seq, last_hash) VALUES (?, ?, ?) \
                 ON CONFLICT (host_id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash",
            )?;
            for (host_id, last_seq, last_hash) in heads {
                head.execute(params![host_id, last_seq, last_hash])?;
            }
            let mut hour = tx.prepare_cached(super::overview::COUNT_AUDIT_HOUR)?;
            for (start, count) in super::overview::audit_hours_of(rows) {
                hour.execute(params![start, count])?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }
}
