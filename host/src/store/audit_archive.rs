//! Retention's side of `server_history`: how far each host's chain has been archived (`audit_archived`), and the
//! two moves across that line, each one short transaction: rows out (deleted once they are in an archive file)
//! and rows back in (restored from one). The files themselves are `crate::audit::archive`'s.

use super::{
    audit::{bind_audit_row, COLUMNS, INSERT_COLUMNS, ROW_MARKS},
    on_pool, AuditRow, Dialect, Store, StoreError,
};

/// How far a host's chain is archived: positions `1..=last_seq` are in archive files, the last with MAC
/// `last_hash`. `mark` is the chain key's MAC of the three, so only the server can move the line.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArchivedUpTo {
    pub host_id: i64,
    pub last_seq: i64,
    pub last_hash: String,
    pub mark: String,
    pub archived_at: i64,
}

impl Store {
    /// Every host's archive line.
    pub async fn archived_up_to(&self) -> Result<Vec<ArchivedUpTo>, StoreError> {
        let sql = "SELECT host_id, last_seq, last_hash, mark, archived_at FROM audit_archived ORDER BY host_id";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ArchivedUpTo>(sql).fetch_all(pool).await)?)
    }

    /// The hosts whose chains have a head: the ones retention looks at.
    pub async fn chained_hosts(&self) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT host_id FROM audit_chain ORDER BY host_id";
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).fetch_all(pool).await)?)
    }

    /// One row of a host's chain, by position.
    pub async fn audit_row_at(&self, host_id: i64, chain_seq: i64) -> Result<Option<AuditRow>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM server_history WHERE host_id = ? AND chain_seq = ?");
        let sql = self.sql(&query);
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, AuditRow>(&sql).bind(host_id).bind(chain_seq).fetch_optional(pool).await)?,
        )
    }

    /// Deletes a host's rows at positions `line.last_seq` and below (they are in an archive file) and moves its
    /// archive line there, in one transaction. Returns the rows deleted.
    pub async fn delete_archived(&self, line: &ArchivedUpTo) -> Result<u64, StoreError> {
        // SQLite gives a new row the table's largest id plus one (no AUTOINCREMENT: migration 0003), so the
        // table's newest row stays, archived or not, or the next rows would take ids the archive, the command
        // index's position and the alert feed's cursor already passed. A later pass deletes it (it is then no
        // longer the newest); `audit verify` starts after the archive line, and a restore replaces it.
        let delete = self.sql(match self.dialect {
            Dialect::Sqlite => {
                "DELETE FROM server_history WHERE host_id = ? AND chain_seq <= ? \
                 AND id < (SELECT MAX(id) FROM server_history)"
            }
            _ => "DELETE FROM server_history WHERE host_id = ? AND chain_seq <= ?",
        });
        let upsert = self.archive_line_sql();
        let begin = self.begin_write();
        Ok(on_pool!(self, pool => async {
            let mut tx = pool.begin_with(begin).await?;
            let deleted = sqlx::query(&delete).bind(line.host_id).bind(line.last_seq).execute(&mut *tx).await?.rows_affected();
            sqlx::query(&upsert)
                .bind(line.host_id).bind(line.last_seq).bind(&line.last_hash).bind(&line.mark).bind(line.archived_at)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(deleted)
        }.await)?)
    }

    /// Puts archived rows back (with their ids, positions and MACs, as they were) and moves the host's archive line
    /// below them, in one transaction: `line` is the new line (`last_seq` 0: nothing archived any more). The
    /// rows the command index had covered are indexed again.
    pub async fn restore_archived(&self, rows: &[AuditRow], line: &ArchivedUpTo) -> Result<(), StoreError> {
        let upsert = self.archive_line_sql();
        let forget = self.sql("DELETE FROM audit_archived WHERE host_id = ?");
        // Searches that remembered where a set of hosts' newest row lies stop trusting it (`audit_search.rs`).
        let counted = "UPDATE audit_restores SET generation = generation + 1";
        // An archived row still here (the newest row SQLite keeps, see `delete_archived`) gives way to its copy.
        let present = self.sql("DELETE FROM server_history WHERE host_id = ? AND chain_seq >= ? AND chain_seq <= ?");
        let marks = vec![ROW_MARKS.replacen('(', "(?, ", 1); rows.len()].join(", ");
        let insert =
            self.sql(&format!("INSERT INTO server_history (id, {INSERT_COLUMNS}) VALUES {marks}")).into_owned();
        // The command index covers the ids up to its position, and these are below it: index them here.
        let covered = "FROM server_history WHERE host_id = ? AND chain_seq > ? AND chain_seq <= ? \
                       AND id <= (SELECT position FROM audit_text_position)";
        let reindex = match self.dialect {
            Dialect::Sqlite => Some(format!(
                "INSERT INTO server_history_text (rowid, history_command) SELECT id, history_command {covered}"
            )),
            Dialect::Postgres => Some(
                self.sql(&format!(
                    "INSERT INTO server_history_text (id, words) SELECT id, {} {covered}",
                    super::audit_text::PG_WORDS
                ))
                .into_owned(),
            ),
            Dialect::MySql => None,
        };
        let (first, last) = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => (first.chain_seq, last.chain_seq),
            _ => return Ok(()),
        };
        let begin = self.begin_write();
        on_pool!(self, pool => async {
            let mut tx = pool.begin_with(begin).await?;
            sqlx::query(&present).bind(line.host_id).bind(first).bind(last).execute(&mut *tx).await?;
            let mut q = sqlx::query(&insert);
            for r in rows {
                q = bind_audit_row!(q.bind(r.id), r);
            }
            q.execute(&mut *tx).await?;
            sqlx::query(counted).execute(&mut *tx).await?;
            if let Some(reindex) = &reindex {
                sqlx::query(reindex).bind(line.host_id).bind(first - 1).bind(last).execute(&mut *tx).await?;
            }
            if line.last_seq == 0 {
                sqlx::query(&forget).bind(line.host_id).execute(&mut *tx).await?;
            } else {
                sqlx::query(&upsert)
                    .bind(line.host_id).bind(line.last_seq).bind(&line.last_hash).bind(&line.mark).bind(line.archived_at)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await
        }.await)?;
        Ok(())
    }

    /// SQLite: take the write lock at once. A deferred transaction that reads first cannot wait for the audit
    /// writer's lock (its snapshot would be stale: "database is locked" at once, not after the busy timeout).
    fn begin_write(&self) -> &'static str {
        if self.dialect == Dialect::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        }
    }

    fn archive_line_sql(&self) -> String {
        let columns = "audit_archived (host_id, last_seq, last_hash, mark, archived_at) VALUES (?, ?, ?, ?, ?)";
        self.sql(&match self.dialect {
            Dialect::MySql => format!(
                "INSERT INTO {columns} ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq), \
                 last_hash = VALUES(last_hash), mark = VALUES(mark), archived_at = VALUES(archived_at)"
            ),
            _ => format!(
                "INSERT INTO {columns} ON CONFLICT (host_id) DO UPDATE SET last_seq = excluded.last_seq, \
                 last_hash = excluded.last_hash, mark = excluded.mark, archived_at = excluded.archived_at"
            ),
        })
        .into_owned()
    }
}
