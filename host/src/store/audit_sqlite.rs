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

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::{
    audit::{AuditSink, COLUMNS, INSERT_COLUMNS},
    now_ms, AuditRow, NewGap, StoreError,
};

pub struct SqliteAuditSink {
    conn: Connection,
    wal: PathBuf,
}

/// Makes the commits before it durable: `fdatasync` of the database's WAL file.
pub struct WalSync {
    file: File,
}

impl WalSync {
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl SqliteAuditSink {
    /// Opens the database file that the pool has already created and migrated.
    pub fn open(path: &Path) -> Result<SqliteAuditSink, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY;",
        )?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(SqliteAuditSink { conn, wal: wal.into() })
    }
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
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
        Ok(Some(WalSync { file }))
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
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO server_history ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))?;
            for r in rows {
                insert.execute(params![
                    r.host_id,
                    r.history_ip,
                    r.history_id,
                    r.history_user,
                    r.login_user,
                    r.tty,
                    r.history_datetime,
                    r.received_at,
                    r.history_command,
                    r.source,
                    r.stream,
                    r.seq,
                    r.chain_seq,
                    r.row_hash,
                ])?;
                ids.push(tx.last_insert_rowid());
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
        }
        tx.commit()?;
        Ok(ids)
    }
}
