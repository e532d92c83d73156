//! Finding audit rows: the filters of [`AuditQuery`] as SQL that an index answers.
//!
//! A command search (`text`) is a substring match that ignores case: a row matches when its command, in lower
//! case, contains the term in lower case (Rust's `to_lowercase`, the same rule as the live stream's
//! [`crate::audit::Filter`]). The database narrows the rows by an index and this module keeps those that match
//! by that rule, so every dialect gives the same answer:
//! - SQLite: the FTS5 table `server_history_text` (trigram tokenizer, case folded), a phrase query, for terms of
//!   at least [`INDEXED_TERM_CHARS`] characters;
//! - PostgreSQL: the pg_trgm GIN index over `server_history_text.words` (the command with each run of ASCII
//!   punctuation and spaces made one `q`: [`super::audit_text::PG_WORDS`]) through `ILIKE`, for terms that map
//!   to three ASCII letters or digits in a row (`rm -rf` is `rmqrf`; `ab` and `; |` are too short);
//! - any other term, and every term on MariaDB/MySQL (no trigram index there), reads a bounded window of the
//!   newest rows ([`SCAN_WINDOW`]) and says so in [`AuditFound::scanned`], so the caller can go on from where
//!   it stopped instead of waiting for a read of the whole table.
//!
//! Time filters are range scans: `received_from`/`received_to` on `received_at` (the server's clock),
//! `host_from`/`host_to` on `history_datetime` (the host's own).

use serde::Serialize;

use super::{
    audit::{AuditQuery, AuditRow, COLUMNS},
    audit_reader::{host_table, HostSet},
    audit_search_probes::{names_only_hosts, narrowed_by_hosts_alone, user_binds, users_by_index, NARROW_ROWS},
    audit_text::{fts_phrase, has_ascii_trigram, words, FtsMatch},
    fetch_bound,
    host_set_hints::{HostSetHints, SetNewest},
    on_pool, Bind, Dialect, Store, StoreError,
};

/// The shortest term an index can answer: trigrams.
pub const INDEXED_TERM_CHARS: usize = 3;

/// Rows read, at most, by a search no index can answer, unless [`AuditQuery::scan_rows`] says otherwise.
pub const SCAN_WINDOW: i64 = 100_000;

/// Rows, where the listing goes on, and, when the text search read a window instead of an index, which.
#[derive(Debug, Clone, Default)]
pub struct AuditFound {
    pub rows: Vec<AuditRow>,
    /// Continues the listing (as `before`, or as `after` when paging forward): the last row of a full page, or
    /// past a window read short of the limit; `None` at the end.
    pub next: Option<i64>,
    pub scanned: Option<ScanWindow>,
}

/// The ids a bounded scan read: `first_id..=last_id`, and whether that reached the end of the table in the
/// direction of the listing (no row beyond it left unread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScanWindow {
    pub first_id: i64,
    pub last_id: i64,
    pub complete: bool,
    /// Why no index could answer: `short_term` (under three characters; on PostgreSQL, no three ASCII letters
    /// or digits in a row once punctuation is folded) or `no_text_index` (MariaDB/MySQL).
    pub reason: ScanReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanReason {
    ShortTerm,
    NoTextIndex,
}

/// How the text filter is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextPlan {
    /// By the command index.
    Index,
    /// The rows the other filters give are read and their commands checked: when those leave fewer than
    /// [`NARROW_ROWS`] rows (rather than every row a common word matches, for a rare user), and for the rows
    /// SQLite's index has not reached yet.
    Rows,
    Window(ScanReason),
}

impl TextPlan {
    fn for_term(dialect: Dialect, term: &str) -> TextPlan {
        match dialect {
            Dialect::MySql => TextPlan::Window(ScanReason::NoTextIndex),
            Dialect::Sqlite if term.chars().count() >= INDEXED_TERM_CHARS => TextPlan::Index,
            Dialect::Postgres if has_ascii_trigram(&words(term)) => TextPlan::Index,
            _ => TextPlan::Window(ScanReason::ShortTerm),
        }
    }
}

/// A LIKE pattern (escape character `!`) that every row matching `term` by our rule also matches, wherever
/// LIKE ignores the case of ASCII letters: a character outside ASCII becomes `_` (one character), since the
/// databases disagree on the case of those.
fn window_pattern(term: &str) -> String {
    let mut pattern = String::from("%");
    for c in term.chars() {
        match c {
            '!' | '%' | '_' => {
                pattern.push('!');
                pattern.push(c);
            }
            c if c.is_ascii() => pattern.push(c),
            _ => pattern.push('_'),
        }
    }
    pattern.push('%');
    pattern
}

/// Bounds on the ids a candidate query reads, besides the listing's cursor: a part of the table read one way.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    /// Ids above this.
    above: Option<i64>,
    /// Ids up to this.
    upto: Option<i64>,
    /// A deep set's: only ids above its `top`, or up to its newest (up to `top` when archived rows were put back
    /// since it was looked up).
    newest: Option<SetNewest>,
}

/// Whether a row is one of `users`: its user, or its login user, stored as `name(uid)` when the agent sent the
/// uid and matched by the name before it too. Byte for byte, whatever the database's collation says.
pub fn user_matches(users: &[String], history_user: &str, login_user: Option<&str>) -> bool {
    users.is_empty()
        || users.iter().any(|u| {
            u == history_user
                || login_user
                    .is_some_and(|l| l == u || l.strip_prefix(u.as_str()).is_some_and(|rest| rest.starts_with('(')))
        })
}

/// How the row filters are written for this search.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// The user filter as ids from its indexes ([`users_by_index`]): its users have few rows (SQLite).
    users_by_index: bool,
    /// The user filter kept off the user indexes (MariaDB/MySQL): its users have many rows, and MariaDB read all
    /// of them through both indexes to sort them by id (1.4 s at a million rows) rather than read the newest rows
    /// until enough are theirs.
    users_by_scan: bool,
    /// The host filter kept off the host index (SQLite): its hosts have many rows, and reading all of them to
    /// sort by id costs more than reading the newest rows until enough are theirs.
    hosts_by_scan: bool,
    /// Only with `hosts_by_scan`, on SQLite's reader: the hosts as the reader's table of this key, not an `IN` list.
    hosts_table: Option<u64>,
    /// The one host whose rows are read down its chain (SQLite): the index on `(host_id, chain_seq)` gives them
    /// newest first, as a host's positions grow with the ids. The host index would read all of them to sort by
    /// id (9 ms for 5 000 rows), the table newest first every other host's too.
    chain_host: Option<i64>,
    /// The ids of the first and last rows received in `received_from..=received_to`: the writer never stamps a
    /// row earlier than the one before it, so those are the rows between, and the listing reads them by id.
    received_ids: Option<(i64, i64)>,
}

/// How a search's every statement reads the text filter, decided once: the ids read when no index answers, or what
/// SQLite's command index is asked.
#[derive(Debug, Clone, Copy)]
struct TextRead<'a> {
    window: Option<ScanWindow>,
    fts_match: Option<&'a FtsMatch>,
}

/// Where a candidate query starts the next read: the listing's own cursors.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    after: Option<i64>,
    before: Option<i64>,
    /// With `before`, on the chain host: the position of that row in the host's chain.
    chain_below: Option<i64>,
}

impl Store {
    /// The rows that pass every filter, newest first (oldest first after `after`), at most `limit`.
    pub async fn query_audit(&self, filter: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self.search_audit(filter).await?.rows)
    }

    /// [`Store::query_audit`], saying which window a text search read when no index could answer it.
    pub async fn search_audit(&self, filter: &AuditQuery) -> Result<AuditFound, StoreError> {
        let filter = &*filter.hosts_in_order();
        let mut plan = filter.text.as_deref().map(|term| TextPlan::for_term(self.dialect, term));
        let received_ids = if filter.received_from.is_some() || filter.received_to.is_some() {
            match self.received_ids(filter.received_from, filter.received_to).await? {
                Some(ids) => Some(ids),
                None => return Ok(AuditFound::default()),
            }
        } else {
            None
        };
        let users_rows = if self.dialect != Dialect::Postgres && !filter.users.is_empty() {
            Some(self.users_rows(filter).await?)
        } else {
            None
        };
        let users_by_index = self.dialect == Dialect::Sqlite && users_rows.is_some_and(|n| n < NARROW_ROWS);
        let by_other_index = users_by_index || received_ids.is_some();
        let (chain_host, chain_below) = self.chain_start(filter, by_other_index).await?;
        let hosts = filter.host_ids.as_deref().unwrap_or_default();
        let set_key = (self.dialect == Dialect::Sqlite && !hosts.is_empty() && chain_host.is_none())
            .then(|| HostSetHints::key(hosts));
        let hosts_by_scan = match set_key {
            Some(key) => self.hosts_rows(hosts, key).await? >= NARROW_ROWS,
            None => false,
        };
        // The first page of a set of hosts read newest first through the table: when their newest rows were found
        // deep, it starts at the newest of them ([`Store::set_newest`]) instead of skipping every other host's rows
        // above it.
        let deep_key = set_key.filter(|_| hosts_by_scan && filter.after.is_none() && filter.before.is_none());
        let newest = match deep_key {
            Some(key) if self.host_set_hints.is_deep(key) == Some(true) => Some(self.set_newest(hosts, key).await?),
            _ => None,
        };
        let shape = Shape {
            users_by_index,
            users_by_scan: self.dialect == Dialect::MySql && users_rows.is_some_and(|n| n >= NARROW_ROWS),
            received_ids,
            hosts_by_scan,
            hosts_table: set_key.filter(|_| hosts_by_scan && self.audit_reader.is_some()),
            chain_host,
        };
        if plan == Some(TextPlan::Index)
            && self.dialect == Dialect::Sqlite
            && self.narrowed_below(filter, shape).await?
        {
            plan = Some(TextPlan::Rows);
        }
        let (scanned, fts_match) = match (plan, filter.text.as_deref()) {
            (Some(TextPlan::Window(reason)), _) => (Some(self.scan_window(filter, reason).await?), None),
            (Some(TextPlan::Index), Some(term)) if self.dialect == Dialect::Sqlite => {
                (None, Some(self.fts_match(term).await?))
            }
            _ => (None, None),
        };
        let text = TextRead { window: scanned, fts_match: fts_match.as_ref() };
        // The index covers the ids up to its position; the rows above it are read and checked, in listing order.
        let segments = match plan {
            Some(TextPlan::Index) => {
                let position = self.text_index_position().await?;
                let indexed = (plan, Segment { upto: Some(position), ..Segment::default() });
                let tail = (Some(TextPlan::Rows), Segment { above: Some(position), ..Segment::default() });
                if filter.after.is_some() {
                    vec![indexed, tail]
                } else {
                    vec![tail, indexed]
                }
            }
            _ => vec![(plan, Segment::default())],
        };
        // A deep set's first page: in each segment, the rows that came after its newest was looked up, then the
        // set's newest down (none of its rows lie between). One statement reads both, but the command index's part
        // is two: FTS5 read every match of the term when asked for both parts at once.
        let segments: Vec<_> = segments
            .into_iter()
            .flat_map(|(plan, part)| match newest {
                Some(n) if plan == Some(TextPlan::Index) => {
                    let above = Some(part.above.map_or(n.top, |a| a.max(n.top)));
                    vec![(plan, Segment { above, ..part }), (plan, Segment { newest, ..part })]
                }
                _ => vec![(plan, Segment { newest, ..part })],
            })
            .collect();
        let needle = filter.text.as_deref().map(str::to_lowercase);
        let mut rows = Vec::new();
        let mut cursor = Cursor { after: filter.after, before: filter.before, chain_below };
        // The database's candidates are checked by the rule here; when that drops some of a full page, the next
        // candidates make up the difference.
        for (plan, segment) in segments {
            loop {
                let want = filter.limit - rows.len() as i64;
                if want <= 0 {
                    break;
                }
                let candidates = self.audit_candidates(filter, (plan, segment), text, shape, cursor, want).await?;
                let full = candidates.len() as i64 == want;
                let last = candidates.last().map(|r| (r.id, r.chain_seq));
                rows.extend(candidates.into_iter().filter(|r| {
                    needle.as_deref().is_none_or(|n| r.history_command.to_lowercase().contains(n))
                        && user_matches(&filter.users, &r.history_user, r.login_user.as_deref())
                }));
                match (full, last) {
                    (true, Some((last, _))) if filter.after.is_some() => cursor.after = Some(last),
                    (true, Some((last, position))) => {
                        cursor.before = Some(last);
                        cursor.chain_below = Some(position);
                    }
                    _ => break,
                }
            }
        }
        if let (Some(key), Some(first)) = (deep_key, rows.first()) {
            if newest.is_none() && names_only_hosts(filter) && self.host_set_hints.is_deep(key).is_none() {
                // Reading each host's newest row costs about what reading two rows of the table does.
                let deep = 2 * hosts.len() as i64;
                self.host_set_hints.keep_deep(key, self.rows_above(first.id, deep).await? >= deep);
            }
        }
        let full = rows.len() as i64 >= filter.limit;
        let next = match scanned {
            Some(w) if !full && !w.complete => Some(if filter.after.is_some() { w.last_id } else { w.first_id }),
            _ => full.then(|| rows.last().map(|r| r.id)).flatten(),
        };
        Ok(AuditFound { rows, next, scanned })
    }

    /// The ids a bounded scan reads from the listing's position: the `scan_rows` ids below `before` (or the
    /// newest), or above `after`.
    async fn scan_window(&self, filter: &AuditQuery, reason: ScanReason) -> Result<ScanWindow, StoreError> {
        let size = filter.scan_rows.unwrap_or(SCAN_WINDOW).max(1);
        let newest: Option<i64> =
            on_pool!(self, pool => sqlx::query_scalar("SELECT MAX(id) FROM server_history").fetch_one(pool).await)?;
        let newest = newest.unwrap_or(0);
        Ok(match filter.after {
            Some(after) => {
                let end = after.saturating_add(size);
                let last_id = end.min(newest.max(after));
                ScanWindow { first_id: after.saturating_add(1), last_id, complete: end >= newest, reason }
            }
            None => {
                // Ids start at 1 on every dialect.
                let last_id = filter.before.map_or(newest, |b| b.saturating_sub(1).min(newest));
                let first_id = last_id.saturating_sub(size - 1).max(1);
                ScanWindow { first_id, last_id, complete: first_id <= 1, reason }
            }
        })
    }

    /// Whether filters with an index of their own (hosts, users, session, times) leave fewer than
    /// [`NARROW_ROWS`] rows: counted through those indexes, and never past that many.
    async fn narrowed_below(&self, filter: &AuditQuery, shape: Shape) -> Result<bool, StoreError> {
        let indexed = filter.host_ids.is_some()
            || !filter.users.is_empty()
            || filter.session.is_some()
            || filter.received_from.is_some()
            || filter.received_to.is_some()
            || filter.host_from.is_some()
            || filter.host_to.is_some();
        if !indexed {
            return Ok(false);
        }
        if narrowed_by_hosts_alone(filter) {
            if shape.hosts_by_scan {
                // The hosts alone were counted to that many already.
                return Ok(false);
            }
            if let Some(host) = shape.chain_host {
                // One host: its count is remembered when it is many.
                return Ok(self.hosts_rows(&[host], HostSetHints::key(&[host])).await? < NARROW_ROWS);
            }
        }
        let (mut clauses, mut binds) = (Vec::new(), Vec::new());
        // The count may use the host index, and the one on `received_at` (which holds the ids too), whatever the
        // listing does: it stops at NARROW_ROWS rows.
        let counted = Shape { hosts_by_scan: false, hosts_table: None, received_ids: None, ..shape };
        self.row_clauses(filter, counted, &mut clauses, &mut binds);
        if let Some((first, last)) = shape.received_ids {
            clauses.push("h.id >= ? AND h.id <= ?".to_owned());
            binds.extend([Bind::Int(first), Bind::Int(last)]);
        }
        let query = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM server_history h WHERE {} LIMIT ?) AS probe",
            clauses.join(" AND ")
        );
        binds.push(Bind::Int(NARROW_ROWS));
        let sql = self.sql(&query);
        let counted: Vec<(i64,)> = fetch_bound!(self, (i64,), &sql, &binds)?;
        Ok(counted.first().is_some_and(|(n,)| *n < NARROW_ROWS))
    }

    /// Up to `want` rows that pass every filter but the text, which they pass by the database's looser rule.
    async fn audit_candidates(
        &self,
        filter: &AuditQuery,
        (plan, segment): (Option<TextPlan>, Segment),
        text: TextRead<'_>,
        shape: Shape,
        cursor: Cursor,
        want: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        // The index is a table of its own, joined by id; its id is then the one to order and bound by, so that
        // FTS5 reads its matches newest first and stops at the limit.
        let indexed = plan == Some(TextPlan::Index);
        let fts = indexed && self.dialect == Dialect::Sqlite;
        let (from, id) = match (indexed, self.dialect) {
            (true, Dialect::Sqlite) => (
                "server_history_text JOIN server_history h ON h.id = server_history_text.rowid",
                "server_history_text.rowid",
            ),
            (true, _) => ("server_history_text t JOIN server_history h ON h.id = t.id", "t.id"),
            _ if shape.users_by_scan => {
                ("server_history h IGNORE INDEX (server_history_user_idx, server_history_login_idx)", "h.id")
            }
            _ => ("server_history h", "h.id"),
        };
        if let (Some(term), Some(plan)) = (filter.text.as_deref(), plan) {
            match plan {
                TextPlan::Index if fts => {
                    clauses.push("server_history_text MATCH ?".to_owned());
                    match text.fts_match {
                        Some(FtsMatch::Rare(trigrams)) => {
                            // Rows with those trigrams but not the term are left here, not a page's worth later.
                            clauses.push("h.history_command LIKE ? ESCAPE '!'".to_owned());
                            binds.extend([Bind::Text(trigrams.clone()), Bind::Text(window_pattern(term))]);
                        }
                        Some(FtsMatch::Phrase(phrase)) => binds.push(Bind::Text(phrase.clone())),
                        None => binds.push(Bind::Text(fts_phrase(term))),
                    }
                }
                TextPlan::Index => {
                    clauses.push("t.words ILIKE ?".to_owned());
                    binds.push(Bind::Text(format!("%{}%", words(term))));
                }
                TextPlan::Rows | TextPlan::Window(_) => {
                    let like = if self.dialect == Dialect::Postgres { "ILIKE" } else { "LIKE" };
                    clauses.push(format!("h.history_command {like} ? ESCAPE '!'"));
                    binds.push(Bind::Text(window_pattern(term)));
                }
            }
        }
        // Every bound on the id (the window, the day received, the index's segment, the cursor) as one range, which
        // the planner reads by the primary key (FTS5 by rowid); an empty one is not asked at all. (SQLite does not
        // see that `id > 10000000 AND id <= 6796657` is empty: it read a whole day through `received_at` for it.)
        let (mut low, mut high) = (i64::MIN, i64::MAX);
        let bounds = [
            text.window.map(|w| (w.first_id, w.last_id)),
            shape.received_ids,
            segment.above.map(|above| (above.saturating_add(1), i64::MAX)),
            segment.upto.map(|upto| (i64::MIN, upto)),
            match (cursor.after, cursor.before) {
                (Some(after), _) => Some((after.saturating_add(1), i64::MAX)),
                (None, Some(before)) => Some((i64::MIN, before.saturating_sub(1))),
                (None, None) => None,
            },
        ];
        for (from, to) in bounds.into_iter().flatten() {
            (low, high) = (low.max(from), high.min(to));
        }
        // The command index's part below a deep set's newest never reads above `top` (below), so it is empty here.
        if low > high || (fts && segment.newest.is_some_and(|n| low > n.top)) {
            return Ok(Vec::new());
        }
        // Down the chain host's chain: the bounds on the id stay, as filters (`+`), and the position bounds the read.
        let chain = shape.chain_host.is_some()
            && !indexed
            && low == i64::MIN
            && (cursor.before.is_none() || cursor.chain_below.is_some());
        let (bound, order_by) = if chain { ("+h.id", "h.chain_seq") } else { (id, id) };
        if low > i64::MIN {
            clauses.push(format!("{bound} >= ?"));
            binds.push(Bind::Int(low));
        }
        if high < i64::MAX {
            clauses.push(format!("{bound} <= ?"));
            binds.push(Bind::Int(high));
        }
        if chain {
            clauses.push("h.chain_seq < ?".to_owned());
            binds.push(Bind::Int(cursor.chain_below.unwrap_or(i64::MAX)));
        }
        self.row_clauses(filter, shape, &mut clauses, &mut binds);
        let order = if cursor.after.is_some() { "ASC" } else { "DESC" };
        let columns = COLUMNS.split(", ").map(|c| format!("h.{c}")).collect::<Vec<_>>().join(", ");
        let select = |clauses: &[String]| {
            let filter_sql =
                if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
            format!("SELECT {columns} FROM {from}{filter_sql}")
        };
        // Checked in the statement, against what it reads: archived rows put back since may lie anywhere below `top`.
        let below_newest = format!("{id} <= CASE WHEN (SELECT generation FROM audit_restores) = ? THEN ? ELSE ? END");
        let query = match segment.newest {
            None => format!("{} ORDER BY {order_by} {order} LIMIT ?", select(&clauses)),
            Some(n) if fts => {
                clauses.push(below_newest);
                binds.extend([Bind::Int(n.restores), Bind::Int(n.newest), Bind::Int(n.top)]);
                format!("{} ORDER BY {order_by} {order} LIMIT ?", select(&clauses))
            }
            // Both parts in one statement, merged by id, newest first (a first page). Not `id > top OR id <= newest`:
            // SQLite reads that as one range and checks each row of it.
            Some(n) => {
                let above = [clauses.clone(), vec![format!("{id} > ?")]].concat();
                let mut below = clauses;
                below.push(below_newest);
                let common = binds.clone();
                binds.push(Bind::Int(n.top));
                binds.extend(common);
                binds.extend([Bind::Int(n.restores), Bind::Int(n.newest), Bind::Int(n.top)]);
                format!("{} UNION ALL {} ORDER BY 1 DESC LIMIT ?", select(&above), select(&below))
            }
        };
        binds.push(Bind::Int(want));
        if let Some(reader) = &self.audit_reader {
            let ids = filter.host_ids.as_deref().unwrap_or_default();
            let hosts = shape.hosts_table.map(|key| HostSet { key, ids: ids.into() });
            return reader.rows(query, binds, hosts).await;
        }
        let sql = self.sql(&query);
        Ok(fetch_bound!(self, AuditRow, &sql, &binds)?)
    }

    /// The filters on a row's own columns, each of which an index can answer: hosts, users, source, session,
    /// terminal, times.
    fn row_clauses(&self, filter: &AuditQuery, shape: Shape, clauses: &mut Vec<String>, binds: &mut Vec<Bind>) {
        match (filter.host_ids.as_deref(), shape.hosts_table) {
            (None, _) => {}
            (Some([]), _) => clauses.push("1 = 0".to_owned()),
            // A unary `+` keeps SQLite off the column's indexes.
            (Some(_), Some(key)) => clauses.push(format!("+h.host_id IN {}", host_table(key))),
            (Some(ids), None) => {
                let column = if shape.hosts_by_scan { "+h.host_id" } else { "h.host_id" };
                clauses.push(format!("{column} IN ({})", vec!["?"; ids.len()].join(", ")));
                binds.extend(ids.iter().map(|id| Bind::Int(*id)));
            }
        }
        if !filter.users.is_empty() {
            // A login user is stored as `name(uid)` when the agent sent the uid: the names before it are a range,
            // `name(` up to `name)`, that an index reads (PostgreSQL's in byte order, `COLLATE "C"`: a language's
            // collation may skip the brackets). MariaDB's collation ignores case: `user_matches` decides.
            let login = if self.dialect == Dialect::Postgres { "h.login_user COLLATE \"C\"" } else { "h.login_user" };
            let marks = vec!["?"; filter.users.len()].join(", ");
            let ranges = vec![format!("({login} >= ? AND {login} < ?)"); filter.users.len()].join(" OR ");
            if shape.users_by_index {
                // SQLite's planner reads a rare user's rows by id, newest first, through the whole table: its
                // statistics cannot tell a rare name from a common one. These subqueries name their indexes.
                clauses.push(format!("h.id IN ({})", users_by_index(self.dialect, filter.users.len())));
            } else {
                clauses.push(format!("(h.history_user IN ({marks}) OR {login} IN ({marks}) OR {ranges})"));
            }
            binds.extend(user_binds(&filter.users));
        }
        if !filter.sources.is_empty() {
            clauses.push(format!("h.source IN ({})", vec!["?"; filter.sources.len()].join(", ")));
            binds.extend(filter.sources.iter().map(|s| Bind::Text(s.clone())));
        }
        if let Some(session) = filter.session {
            clauses.push("h.session = ?".to_owned());
            binds.push(Bind::Int(session));
        }
        if let Some(tty) = &filter.tty {
            clauses.push("h.tty = ?".to_owned());
            binds.push(Bind::Text(tty.clone()));
        }
        // Once the times received are an id range (`shape.received_ids`), SQLite reads that range by the primary
        // key; left free to, it chose the index on `received_at` and read the whole range there.
        let received = if self.dialect == Dialect::Sqlite && shape.received_ids.is_some() {
            "+h.received_at"
        } else {
            "h.received_at"
        };
        if let Some(from) = filter.received_from {
            clauses.push(format!("{received} >= ?"));
            binds.push(Bind::Int(from));
        }
        if let Some(to) = filter.received_to {
            clauses.push(format!("{received} <= ?"));
            binds.push(Bind::Int(to));
        }
        if let Some(from) = &filter.host_from {
            clauses.push("h.history_datetime >= ?".to_owned());
            binds.push(Bind::Text(from.clone()));
        }
        if let Some(to) = &filter.host_to {
            // A prefix bound ("2026-11-24") includes the whole of that day. Pad the prefix with the highest digits
            // rather than a high code point: collations disagree on how code points sort, never on digits.
            clauses.push("h.history_datetime <= ?".to_owned());
            let pad = "9999-99-99 99:99:99".get(to.len()..).unwrap_or_default();
            binds.push(Bind::Text(format!("{to}{pad}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_escape_wildcards_and_loosen_what_databases_fold_differently() {
        assert_eq!(window_pattern("100%"), "%100!%%");
        assert_eq!(window_pattern("a_b!"), "%a!_b!!%");
        assert_eq!(window_pattern("Ünï x"), "%_n_ x%");
    }

    #[test]
    fn an_index_answers_the_terms_it_can() {
        assert_eq!(TextPlan::for_term(Dialect::Sqlite, "abc"), TextPlan::Index);
        assert_eq!(TextPlan::for_term(Dialect::Sqlite, "; |"), TextPlan::Index);
        assert_eq!(TextPlan::for_term(Dialect::Sqlite, "ab"), TextPlan::Window(ScanReason::ShortTerm));
        assert_eq!(TextPlan::for_term(Dialect::Sqlite, "ü✓"), TextPlan::Window(ScanReason::ShortTerm));
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "rm -rf /"), TextPlan::Index);
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "-rf"), TextPlan::Index);
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "-r"), TextPlan::Window(ScanReason::ShortTerm));
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "10.1.7.17"), TextPlan::Index);
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "ab"), TextPlan::Window(ScanReason::ShortTerm));
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "; |"), TextPlan::Window(ScanReason::ShortTerm));
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "x /etc/passwd"), TextPlan::Index);
        // Whether ü and ï are letters to pg_trgm depends on the database's locale.
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "ünï"), TextPlan::Window(ScanReason::ShortTerm));
        assert_eq!(TextPlan::for_term(Dialect::Postgres, "ünïcode"), TextPlan::Index);
        assert_eq!(TextPlan::for_term(Dialect::MySql, "passwd"), TextPlan::Window(ScanReason::NoTextIndex));
    }
}
