//! Counting before reading: the probes that choose an audit search's plan ([`super::audit_search`]). Each counts
//! rows through an index, never past [`NARROW_ROWS`], or finds where a read starts: which filters leave few rows
//! (read through their index) or many (read newest first through the table), where a day received begins and
//! ends, where a host's chain continues, and how deep a set of hosts' newest rows lie.

use super::{
    audit::AuditQuery, fetch_bound, host_set_hints::SetNewest, on_pool, Bind, Dialect, Pool, Store, StoreError,
};

/// The id of the newest row of any of the hosts in a JSON array (SQLite; binds `i64::MAX`, then the array): each
/// host's newest through the index on its chain, a fifth to a third of a microsecond per host; NULL when they have
/// none.
const NEWEST_OF_HOSTS: &str = "SELECT MAX((SELECT id FROM server_history n WHERE n.host_id = j.value \
     AND n.chain_seq < ? ORDER BY n.chain_seq DESC LIMIT 1)) FROM json_each(?) j";

/// Below this many rows left by the other filters, a text search reads those instead of the command index.
pub(super) const NARROW_ROWS: i64 = 10_000;

/// The ids of the rows of `users` users (SQLite, MariaDB/MySQL): each name through the index on `history_user`,
/// then through the one on `login_user`, by value and as the range of `name(uid)`. Its parameters:
/// [`user_binds`].
pub(super) fn users_by_index(dialect: Dialect, users: usize) -> String {
    let through = |index: &str| match dialect {
        Dialect::MySql => format!("FORCE INDEX ({index})"),
        _ => format!("INDEXED BY {index}"),
    };
    let (by_user, by_login) = (through("server_history_user_idx"), through("server_history_login_idx"));
    let marks = vec!["?"; users].join(", ");
    let mut parts = vec![
        format!("SELECT id FROM server_history {by_user} WHERE history_user IN ({marks})"),
        format!("SELECT id FROM server_history {by_login} WHERE login_user IN ({marks})"),
    ];
    parts.extend(
        (0..users)
            .map(|_| format!("SELECT id FROM server_history {by_login} WHERE login_user >= ? AND login_user < ?")),
    );
    parts.join(" UNION ALL ")
}

/// The parameters of the user filter, in both its forms: the names, the names again, then each name's range.
pub(super) fn user_binds(users: &[String]) -> Vec<Bind> {
    let mut binds: Vec<Bind> = users.iter().map(|u| Bind::Text(u.clone())).collect();
    binds.extend(users.iter().map(|u| Bind::Text(u.clone())));
    for u in users {
        binds.extend([Bind::Text(format!("{u}(")), Bind::Text(format!("{u})"))]);
    }
    binds
}

impl Store {
    /// The first and last ids received in `from..=to` (Unix ms), by two steps down the index on `received_at`;
    /// `None` when no row was.
    pub(super) async fn received_ids(
        &self,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let first = self.sql(
            "SELECT MIN(id) FROM server_history WHERE received_at = \
             (SELECT MIN(received_at) FROM server_history WHERE received_at >= ?)",
        );
        let last = self.sql(
            "SELECT MAX(id) FROM server_history WHERE received_at = \
             (SELECT MAX(received_at) FROM server_history WHERE received_at <= ?)",
        );
        let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
        let (first, last): (Option<i64>, Option<i64>) = on_pool!(self, pool => {
            let first = sqlx::query_scalar(&first).bind(from).fetch_one(pool).await?;
            let last = sqlx::query_scalar(&last).bind(to).fetch_one(pool).await?;
            Ok::<_, sqlx::Error>((first, last))
        })?;
        Ok(match (first, last) {
            (Some(first), Some(last)) if first <= last => Some((first, last)),
            _ => None,
        })
    }

    /// The rows of `hosts`, counted through the host index up to [`NARROW_ROWS`] (SQLite). A set of hosts found to
    /// hold that many is remembered for a minute ([`HostSetHints`](super::host_set_hints::HostSetHints)): a scoped caller's every query names the same
    /// hundreds of hosts, and rows only grow (retention aside, which makes the plan slower, never wrong).
    pub(super) async fn hosts_rows(&self, hosts: &[i64], key: u64) -> Result<i64, StoreError> {
        if self.host_set_hints.is_broad(key) {
            return Ok(NARROW_ROWS);
        }
        let query = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM server_history WHERE host_id IN ({}) LIMIT ?) AS probe",
            vec!["?"; hosts.len()].join(", ")
        );
        let mut binds: Vec<Bind> = hosts.iter().map(|id| Bind::Int(*id)).collect();
        binds.push(Bind::Int(NARROW_ROWS));
        let counted: Vec<(i64,)> = fetch_bound!(self, (i64,), &query, &binds)?;
        let rows = counted.first().map_or(0, |(n,)| *n);
        if rows >= NARROW_ROWS {
            self.host_set_hints.keep_broad(key);
        }
        Ok(rows)
    }

    /// Whether a listing of one host reads down that host's chain (SQLite, newest first, no lower bound on the
    /// ids that the chain cannot give), and where: `before` is that row's position in the chain. A `before` that
    /// is not one of the host's rows (gone, or another host's) leaves the listing to the table, as does a filter
    /// that reads its rows through an index of its own (`by_other_index`: a rare user's, a day received).
    pub(super) async fn chain_start(
        &self,
        filter: &AuditQuery,
        by_other_index: bool,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let Some(&[host]) = filter.host_ids.as_deref() else { return Ok((None, None)) };
        if self.dialect != Dialect::Sqlite || filter.after.is_some() || by_other_index {
            return Ok((None, None));
        }
        let Some(before) = filter.before else { return Ok((Some(host), None)) };
        let Pool::Sqlite(pool) = &self.pool else { return Ok((None, None)) };
        let position: Option<i64> =
            sqlx::query_scalar("SELECT chain_seq FROM server_history WHERE id = ? AND host_id = ?")
                .bind(before)
                .bind(host)
                .fetch_optional(pool)
                .await?;
        Ok(match position {
            Some(position) => (Some(host), Some(position)),
            None => (None, None),
        })
    }

    /// Where the newest row of `hosts` (a set whose rows lie deep, SQLite) lies, as looked up within the last second
    /// ([`SetNewest`]): the lookup reads each host's newest through the index on its chain, 0.1–0.2 ms for 500 hosts,
    /// which every first page of a scoped caller would otherwise pay.
    pub(super) async fn set_newest(&self, hosts: &[i64], key: u64) -> Result<SetNewest, StoreError> {
        if let Some(newest) = self.host_set_hints.newest(key, hosts) {
            return Ok(newest);
        }
        // One statement: the three are read from one snapshot.
        let query = format!(
            "SELECT (SELECT MAX(id) FROM server_history), ({NEWEST_OF_HOSTS}), \
             (SELECT generation FROM audit_restores)"
        );
        let array = format!("[{}]", hosts.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        let (top, newest, restores): (Option<i64>, Option<i64>, i64) = on_pool!(self, pool => {
            sqlx::query_as(&query).bind(i64::MAX).bind(&array).fetch_one(pool).await
        })?;
        let found = SetNewest { newest: newest.unwrap_or(0), top: top.unwrap_or(0), restores };
        self.host_set_hints.keep_newest(key, hosts, found);
        Ok(found)
    }

    /// How many rows lie above `id`, counted up to `cap`.
    pub(super) async fn rows_above(&self, id: i64, cap: i64) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT COUNT(*) FROM (SELECT 1 FROM server_history WHERE id > ? LIMIT ?) AS probe");
        let above: i64 = on_pool!(self, pool => sqlx::query_scalar(&sql).bind(id).bind(cap).fetch_one(pool).await)?;
        Ok(above)
    }

    /// The rows of `filter`'s users, counted through the indexes up to [`NARROW_ROWS`] (SQLite, MariaDB/MySQL).
    pub(super) async fn users_rows(&self, filter: &AuditQuery) -> Result<i64, StoreError> {
        let users = users_by_index(self.dialect, filter.users.len());
        let query = format!("SELECT COUNT(*) FROM ({users} LIMIT ?) AS probe");
        let mut binds = user_binds(&filter.users);
        binds.push(Bind::Int(NARROW_ROWS));
        let counted: Vec<(i64,)> = fetch_bound!(self, (i64,), &query, &binds)?;
        Ok(counted.first().map_or(0, |(n,)| *n))
    }
}

/// Whether, of the filters an index answers, the hosts are the only one (users, session and times are not).
pub(super) fn narrowed_by_hosts_alone(filter: &AuditQuery) -> bool {
    filter.users.is_empty()
        && filter.session.is_none()
        && filter.received_from.is_none()
        && filter.received_to.is_none()
        && filter.host_from.is_none()
        && filter.host_to.is_none()
}

/// Whether the hosts are the only filter: then the first row found is the hosts' newest.
pub(super) fn names_only_hosts(filter: &AuditQuery) -> bool {
    narrowed_by_hosts_alone(filter) && filter.text.is_none() && filter.sources.is_empty() && filter.tty.is_none()
}
