//! Audit rows (`server_history`), chain heads and gaps. The hash chain itself is computed by `crate::audit`;
//! this module only reads and writes rows, in the batches the audit writer hands it.

use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use super::{now_ms, on_pool, Dialect, Store, StoreError};

/// A row of `server_history`. The audit writer builds them with `id` 0 and learns the id from the insert. Its
/// JSON, every column by name, is a row line of the audit archive (`crate::audit::archive`): a column added here
/// changes that format.
#[derive(Debug, Clone, Default, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct AuditRow {
    pub id: i64,
    pub host_id: i64,
    pub history_ip: String,
    pub history_id: i64,
    pub history_user: String,
    pub login_user: Option<String>,
    pub tty: Option<String>,
    pub history_datetime: String,
    pub received_at: i64,
    pub history_command: String,
    pub source: String,
    pub stream: Option<String>,
    pub seq: Option<i64>,
    pub chain_seq: i64,
    /// The row's chain MAC.
    pub row_hash: String,
    /// The kernel's audit session id (history lines from omaudit-agent and execs).
    pub session: Option<i64>,
    /// Execs: the argument vector as JSON (a string per argument, `{"hex": …}` for bytes that are not UTF-8).
    pub argv: Option<String>,
    /// Execs: the working directory.
    pub cwd: Option<String>,
    /// Execs: the executable (the file tried, for a failed exec).
    pub exe: Option<String>,
    /// Execs: 0, or the negative errno of a failed exec.
    pub exit_code: Option<i64>,
    /// Execs: process id, parent process id, effective uid and login uid.
    pub pid: Option<i64>,
    pub ppid: Option<i64>,
    pub euid: Option<i64>,
    pub auid: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewGap {
    pub host_id: i64,
    pub stream: String,
    pub from_seq: i64,
    pub to_seq: i64,
    pub reason: String,
}

/// Filters for listing audit rows. Every field narrows; empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// `None`: any host; an empty list: none (a filter that no host passes).
    pub host_ids: Option<Vec<i64>>,
    pub users: Vec<String>,
    /// Stored `source` values (`legacy`, `agent`, `execve`); empty: any.
    pub sources: Vec<String>,
    /// The audit session id.
    pub session: Option<i64>,
    /// The terminal, exactly.
    pub tty: Option<String>,
    /// A substring of the command, case ignored (see [`super::audit_search`]).
    pub text: Option<String>,
    /// `received_at` bounds (the server's clock), inclusive, Unix ms.
    pub received_from: Option<i64>,
    pub received_to: Option<i64>,
    /// `history_datetime` bounds (the host's clock), inclusive, as "YYYY-MM-DD HH:MM:SS" prefixes.
    pub host_from: Option<String>,
    pub host_to: Option<String>,
    /// Rows with id greater than this, oldest first; otherwise newest first (below `before` when given).
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub limit: i64,
    /// Rows a command search reads, at most, when no index can answer its term; `None`: [`super::SCAN_WINDOW`].
    pub scan_rows: Option<i64>,
}

impl AuditQuery {
    /// This query with its hosts in ascending order, each once: what a search keeps of a set of hosts (its plan's
    /// hints, SQLite's reader's tables, the statement and its binds) is kept by that order.
    pub(super) fn hosts_in_order(&self) -> std::borrow::Cow<'_, AuditQuery> {
        match self.host_ids.as_deref() {
            Some(ids) if !ids.windows(2).all(|w| w[0] < w[1]) => {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                std::borrow::Cow::Owned(AuditQuery { host_ids: Some(ids), ..self.clone() })
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }
}

pub(super) const COLUMNS: &str = "id, host_id, history_ip, history_id, history_user, login_user, tty, \
                                  history_datetime, received_at, history_command, source, stream, seq, chain_seq, \
                                  row_hash, session, argv, cwd, exe, exit_code, pid, ppid, euid, auid";
pub(super) const INSERT_COLUMNS: &str = "host_id, history_ip, history_id, history_user, login_user, tty, \
                                         history_datetime, received_at, history_command, source, stream, seq, \
                                         chain_seq, row_hash, session, argv, cwd, exe, exit_code, pid, ppid, euid, auid";
/// One row's placeholders in `INSERT_COLUMNS` order.
pub(super) const ROW_MARKS: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Binds one row's values to `$query` in [`INSERT_COLUMNS`] order (a macro: each driver's query type differs).
macro_rules! bind_audit_row {
    ($query:expr, $r:expr) => {
        $query
            .bind($r.host_id)
            .bind(&$r.history_ip)
            .bind($r.history_id)
            .bind(&$r.history_user)
            .bind(&$r.login_user)
            .bind(&$r.tty)
            .bind(&$r.history_datetime)
            .bind($r.received_at)
            .bind(&$r.history_command)
            .bind(&$r.source)
            .bind(&$r.stream)
            .bind($r.seq)
            .bind($r.chain_seq)
            .bind(&$r.row_hash)
            .bind($r.session)
            .bind(&$r.argv)
            .bind(&$r.cwd)
            .bind(&$r.exe)
            .bind($r.exit_code)
            .bind($r.pid)
            .bind($r.ppid)
            .bind($r.euid)
            .bind($r.auid)
    };
}
pub(super) use bind_audit_row;

/// Rows per multi-row INSERT: 23 parameters each, well under every dialect's parameter limit.
const INSERT_CHUNK: usize = 500;

/// The audit writer's view of storage: the reads it makes before a group, and the group's one transaction.
/// Synchronous, because the writer is a thread of its own. Two implementations: [`super::audit_sqlite::SqliteAuditSink`]
/// for the embedded default (its own connection and prepared statements, no hop through a pool's worker) and
/// [`PooledAuditSink`] for MariaDB/MySQL and PostgreSQL.
pub trait AuditSink: Send {
    /// What makes commits durable when the commit itself does not: `Some` for SQLite (see
    /// [`super::audit_sqlite`]); `None` where a returned commit is durable already.
    fn wal_sync(&self) -> Result<Option<super::audit_sqlite::WalSync>, StoreError> {
        Ok(None)
    }
    /// Which sequence numbers in `from..=to` of an agent stream are stored already.
    fn existing_seqs(&mut self, host_id: i64, stream: &str, from: i64, to: i64) -> Result<Vec<i64>, StoreError>;
    /// A host's chain head: (last chain_seq, last row hash).
    fn audit_head(&mut self, host_id: i64) -> Result<Option<(i64, String)>, StoreError>;
    /// A host's newest `limit` rows, newest first.
    fn recent_audit_rows(&mut self, host_id: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError>;
    /// The latest `received_at` stored (0 for none): the writer never stamps a row earlier.
    fn latest_received_at(&mut self) -> Result<i64, StoreError>;
    /// Begins a group where other servers may write too (PostgreSQL): takes the audit write lock in a transaction
    /// that [`AuditSink::write_audit_batch`] then commits. False: this process is the database's only audit writer
    /// (SQLite and MariaDB serve one server), and nothing was begun.
    fn begin_group(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// What the database holds now, under the begun group's lock, for `hosts`: what other servers wrote.
    fn group_state(&mut self, _hosts: &[i64]) -> Result<Shared, StoreError> {
        Ok(Shared::default())
    }
    /// Ends a begun group without writing (its transaction rolls back and the lock is let go).
    fn abort_group(&mut self) {}
    /// Writes one group in one transaction: the rows, the gaps, the new chain heads, the hourly counts. Returns the
    /// rows' ids in order.
    fn write_audit_batch(
        &mut self,
        rows: &[AuditRow],
        gaps: &[NewGap],
        heads: &[(i64, i64, String)],
    ) -> Result<Vec<i64>, StoreError>;
}

/// What the database holds, under the audit write lock, for the hosts of a group: what other servers wrote.
#[derive(Debug, Default)]
pub struct Shared {
    /// Chain heads (last chain_seq, last hash) of the hosts that have one.
    pub heads: HashMap<i64, (i64, String)>,
    /// The latest `received_at` stored, 0 for none.
    pub latest_received_at: i64,
}

/// The channel on which a PostgreSQL group's commit is signalled, with the newest id it stored.
pub const AUDIT_CHANNEL: &str = "omserver_audit";

/// A group's transaction on PostgreSQL, holding the audit write lock until it ends.
pub struct Group(sqlx::Transaction<'static, sqlx::Postgres>);

/// The audit sink over the shared pool, driven from the writer thread through the runtime's handle.
pub struct PooledAuditSink {
    store: Store,
    runtime: tokio::runtime::Handle,
    /// The begun group, between [`AuditSink::begin_group`] and the write that commits it.
    group: Option<Group>,
}

impl AuditSink for PooledAuditSink {
    fn existing_seqs(&mut self, host_id: i64, stream: &str, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
        self.runtime.block_on(self.store.existing_seqs(host_id, stream, from, to))
    }

    fn audit_head(&mut self, host_id: i64) -> Result<Option<(i64, String)>, StoreError> {
        self.runtime.block_on(self.store.audit_head(host_id))
    }

    fn recent_audit_rows(&mut self, host_id: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.runtime.block_on(self.store.recent_audit_rows(host_id, limit))
    }

    fn latest_received_at(&mut self) -> Result<i64, StoreError> {
        self.runtime.block_on(self.store.latest_received_at())
    }

    fn begin_group(&mut self) -> Result<bool, StoreError> {
        self.abort_group();
        self.group = self.runtime.block_on(self.store.begin_audit_group())?;
        Ok(self.group.is_some())
    }

    fn group_state(&mut self, hosts: &[i64]) -> Result<Shared, StoreError> {
        match self.group.as_mut() {
            Some(group) => self.runtime.block_on(self.store.audit_group_state(group, hosts)),
            None => Ok(Shared::default()),
        }
    }

    fn abort_group(&mut self) {
        if let Some(Group(tx)) = self.group.take() {
            // Rolled back here, in the runtime: a connection is given back to its pool by a task.
            if let Err(err) = self.runtime.block_on(tx.rollback()) {
                tracing::warn!(error = %err, "rolling back an audit group");
            }
        }
    }

    fn write_audit_batch(
        &mut self,
        rows: &[AuditRow],
        gaps: &[NewGap],
        heads: &[(i64, i64, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let group = self.group.take();
        let ids = self.runtime.block_on(self.store.write_audit_batch(rows, gaps, heads, group))?;
        self.store.audit_index_nudge.nudge();
        Ok(ids)
    }
}

impl Store {
    /// The sink for the audit writer thread. A SQLite file gets a connection of its own; anything else (MySQL,
    /// PostgreSQL, an in-memory SQLite that another connection could not see) goes through the pool. Call it
    /// from within the runtime: the pooled sink keeps its handle.
    pub fn audit_sink(&self) -> Result<Box<dyn AuditSink>, StoreError> {
        Ok(match &self.sqlite_file {
            Some(path) => Box::new(super::audit_sqlite::SqliteAuditSink::open(path)?),
            None => Box::new(PooledAuditSink {
                store: self.clone(),
                runtime: tokio::runtime::Handle::current(),
                group: None,
            }),
        })
    }

    /// On PostgreSQL, where several servers write audit rows: begins a transaction that holds the audit write lock
    /// until it ends. The servers' writers take turns a group at a time (group commit makes a turn large), which
    /// keeps each host's chain one line and ids in `received_at` order ([`super::audit_search`] relies on it).
    /// `None` on the other dialects, which serve one server.
    pub async fn begin_audit_group(&self) -> Result<Option<Group>, StoreError> {
        let super::Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(super::cluster::advisory_key("omserver audit writer"))
            .execute(&mut *tx)
            .await?;
        Ok(Some(Group(tx)))
    }

    /// The chain heads of `hosts` and the latest `received_at`, read in `group`'s transaction, under its lock.
    pub async fn audit_group_state(&self, group: &mut Group, hosts: &[i64]) -> Result<Shared, StoreError> {
        let Group(tx) = group;
        let heads = sqlx::query_as::<_, (i64, i64, String)>(
            "SELECT host_id, last_seq, last_hash FROM audit_chain WHERE host_id = ANY($1)",
        )
        .bind(hosts)
        .fetch_all(&mut **tx)
        .await?;
        let latest_received_at: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(received_at), 0) FROM server_history").fetch_one(&mut **tx).await?;
        let heads = heads.into_iter().map(|(host, seq, hash)| (host, (seq, hash))).collect();
        Ok(Shared { heads, latest_received_at })
    }

    /// Writes one batch in one transaction: the rows, the gaps, the new chain heads and the hourly counts. Returns
    /// the ids of the rows in order. The caller (the audit writer) has already removed duplicates. `group`: the
    /// transaction [`Store::begin_audit_group`] began, which this commits.
    pub async fn write_audit_batch(
        &self,
        rows: &[AuditRow],
        gaps: &[NewGap],
        heads: &[(i64, i64, String)],
        group: Option<Group>,
    ) -> Result<Vec<i64>, StoreError> {
        let dialect = self.dialect;
        let head_sql = self.sql(match dialect {
            Dialect::MySql => {
                "INSERT INTO audit_chain (host_id, last_seq, last_hash) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq), last_hash = VALUES(last_hash)"
            }
            _ => {
                "INSERT INTO audit_chain (host_id, last_seq, last_hash) VALUES (?, ?, ?) \
                 ON CONFLICT (host_id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash"
            }
        });
        let gap_find = self
            .sql("SELECT COUNT(*) FROM audit_gaps WHERE host_id = ? AND stream = ? AND from_seq = ? AND to_seq = ?");
        let gap_insert = self.sql(
            "INSERT INTO audit_gaps (host_id, stream, from_seq, to_seq, reason, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        );
        let hour_sql = self.count_audit_hour_sql();
        let hours = super::overview::audit_hours_of(rows);
        let mut ids = Vec::with_capacity(rows.len());
        // The transaction's statements, the same on every dialect; only where the transaction comes from differs.
        macro_rules! write_in {
            ($tx:ident) => {{
                for chunk in rows.chunks(INSERT_CHUNK) {
                    let marks = vec![ROW_MARKS; chunk.len()].join(", ");
                    let mut sql = format!("INSERT INTO server_history ({INSERT_COLUMNS}) VALUES {marks}");
                    if dialect != Dialect::MySql {
                        sql.push_str(" RETURNING id");
                    }
                    let sql = self.sql(&sql);
                    let mut q = sqlx::query_scalar::<_, i64>(&sql);
                    for r in chunk {
                        q = bind_audit_row!(q, r);
                    }
                    if dialect == Dialect::MySql {
                        // MySQL has no RETURNING. The audit writer is the only writer of this table, so one
                        // multi-row INSERT takes consecutive ids from LAST_INSERT_ID() (the first row's).
                        q.fetch_optional(&mut *$tx).await?;
                        let first: i64 =
                            sqlx::query_scalar("SELECT CAST(LAST_INSERT_ID() AS SIGNED)").fetch_one(&mut *$tx).await?;
                        ids.extend((0..chunk.len() as i64).map(|i| first + i));
                    } else {
                        ids.extend(q.fetch_all(&mut *$tx).await?);
                    }
                }
                for g in gaps {
                    let seen: i64 = sqlx::query_scalar(&gap_find)
                        .bind(g.host_id)
                        .bind(&g.stream)
                        .bind(g.from_seq)
                        .bind(g.to_seq)
                        .fetch_one(&mut *$tx)
                        .await?;
                    if seen == 0 {
                        sqlx::query(&gap_insert)
                            .bind(g.host_id)
                            .bind(&g.stream)
                            .bind(g.from_seq)
                            .bind(g.to_seq)
                            .bind(&g.reason)
                            .bind(now_ms())
                            .execute(&mut *$tx)
                            .await?;
                    }
                }
                for (host_id, last_seq, last_hash) in heads {
                    sqlx::query(&head_sql).bind(host_id).bind(last_seq).bind(last_hash).execute(&mut *$tx).await?;
                }
                for (hour, count) in &hours {
                    sqlx::query(&hour_sql).bind(hour).bind(count).execute(&mut *$tx).await?;
                }
            }};
        }
        match (&self.pool, group) {
            (super::Pool::Postgres(_), Some(Group(mut tx))) => {
                write_in!(tx);
                // Every server's live stream reads the rows past its last from the database (`audit::follow`): the
                // signal, delivered at commit, says up to where.
                if let Some(newest) = ids.iter().max() {
                    super::cluster_jobs::signal(&mut tx, AUDIT_CHANNEL, *newest).await?;
                }
                tx.commit().await
            }
            _ => on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                write_in!(tx);
                tx.commit().await
            }),
        }?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Which sequence numbers in `from..=to` of an agent stream are stored already (a short range scan of the
    /// (host, stream, seq) index).
    pub async fn existing_seqs(&self, host_id: i64, stream: &str, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
        let sql = self.sql("SELECT seq FROM server_history WHERE host_id = ? AND stream = ? AND seq >= ? AND seq <= ?");
        Ok(
            on_pool!(self, pool => sqlx::query_scalar::<_, i64>(&sql).bind(host_id).bind(stream).bind(from).bind(to).fetch_all(pool).await)?,
        )
    }

    /// A host's newest `limit` rows, newest first (a short backward scan of the chain index).
    pub async fn recent_audit_rows(&self, host_id: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM server_history WHERE host_id = ? ORDER BY chain_seq DESC LIMIT ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, AuditRow>(&sql).bind(host_id).bind(limit).fetch_all(pool).await)?)
    }

    /// The newest audit row's id, 0 for none.
    pub async fn newest_audit_id(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM server_history";
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)?)
    }

    /// The latest `received_at` stored, 0 for none (one step down the index on it).
    pub async fn latest_received_at(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(received_at), 0) FROM server_history";
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)?)
    }

    /// The chain head of a host: (last chain_seq, last row hash).
    pub async fn audit_head(&self, host_id: i64) -> Result<Option<(i64, String)>, StoreError> {
        let sql = self.sql("SELECT last_seq, last_hash FROM audit_chain WHERE host_id = ?");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (i64, String)>(&sql).bind(host_id).fetch_optional(pool).await)?)
    }

    /// Hosts that have audit rows or a chain head.
    pub async fn audited_hosts(&self) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT host_id FROM audit_chain UNION SELECT DISTINCT host_id FROM server_history ORDER BY 1";
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).fetch_all(pool).await)?)
    }

    /// A host's rows in chain order, `limit` at a time from `after_seq`.
    pub async fn audit_chain_rows(
        &self,
        host_id: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM server_history WHERE host_id = ? AND chain_seq > ? ORDER BY chain_seq LIMIT ?"
        );
        let sql = self.sql(&query);
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, AuditRow>(&sql).bind(host_id).bind(after_seq).bind(limit).fetch_all(pool).await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::AuditQuery;

    #[test]
    fn a_querys_hosts_are_put_in_one_order_each_once() {
        let query = |ids: &[i64]| AuditQuery { host_ids: Some(ids.to_vec()), limit: 10, ..AuditQuery::default() };
        let unsorted = query(&[7, 3, 7, 1]);
        let ordered = unsorted.hosts_in_order();
        assert_eq!(ordered.host_ids.as_deref(), Some(&[1, 3, 7][..]));
        assert_eq!(ordered.limit, 10, "the rest of the query kept");
        assert!(matches!(query(&[1, 3, 7]).hosts_in_order(), Cow::Borrowed(_)), "in order already: not copied");
        assert!(matches!(AuditQuery::default().hosts_in_order(), Cow::Borrowed(_)));
    }
}
