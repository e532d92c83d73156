//! The counts the console's home page draws: jobs by day and status, audit events by hour, each host's newest
//! audit event. Counting rows when the page asks read hundreds of thousands of them (BENCHMARKS.md § Home page),
//! so the counts are kept where the facts are written: `job_days` by the transaction that ends a job,
//! `audit_hours` by the audit writer's batch transaction (migration 0013). Only queued and running jobs, which
//! change, are counted from `jobs` itself, through its status index.

use std::borrow::Cow;

use super::{audit::AuditRow, on_pool, Dialect, Store, StoreError};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// Counts an ending job on its creation day, under the status it ends with (bound first, then the job id). Run
/// before the job's own UPDATE, and only while the job is still queued or running, so that a job is counted once.
const COUNT_ENDING_JOB: &str = "INSERT INTO job_days (day, status, jobs) \
     SELECT created_at - (created_at % 86400000), ?, 1 FROM jobs \
     WHERE id = ? AND status IN ('pending_approval', 'queued', 'running') \
     ON CONFLICT (day, status) DO UPDATE SET jobs = job_days.jobs + 1";
const COUNT_ENDING_JOB_MYSQL: &str = "INSERT INTO job_days (day, status, jobs) \
     SELECT created_at - (created_at % 86400000), ?, 1 FROM jobs \
     WHERE id = ? AND status IN ('pending_approval', 'queued', 'running') \
     ON DUPLICATE KEY UPDATE jobs = jobs + 1";

/// Adds a batch's count to an hour (bound: the hour's start in ms, the count).
pub(super) const COUNT_AUDIT_HOUR: &str = "INSERT INTO audit_hours (hour, events) VALUES (?, ?) \
     ON CONFLICT (hour) DO UPDATE SET events = audit_hours.events + excluded.events";
const COUNT_AUDIT_HOUR_MYSQL: &str =
    "INSERT INTO audit_hours (hour, events) VALUES (?, ?) ON DUPLICATE KEY UPDATE events = events + VALUES(events)";

/// A batch's rows by the hour they were received: (hour start in ms, rows). A batch is stamped with one arrival
/// time, so this is nearly always one pair.
pub(super) fn audit_hours_of(rows: &[AuditRow]) -> Vec<(i64, i64)> {
    let mut hours: Vec<(i64, i64)> = Vec::new();
    for row in rows {
        let hour = row.received_at - row.received_at.rem_euclid(HOUR_MS);
        match hours.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, count)) => *count += 1,
            None => hours.push((hour, 1)),
        }
    }
    hours
}

impl Store {
    /// The statement that counts a job as it ends (see `COUNT_ENDING_JOB`), in this database's SQL.
    pub(super) fn count_ending_job_sql(&self) -> Cow<'static, str> {
        self.sql(if self.dialect == Dialect::MySql { COUNT_ENDING_JOB_MYSQL } else { COUNT_ENDING_JOB })
    }

    /// The statement that adds to an hour's audit count (see `COUNT_AUDIT_HOUR`).
    pub(super) fn count_audit_hour_sql(&self) -> Cow<'static, str> {
        self.sql(if self.dialect == Dialect::MySql { COUNT_AUDIT_HOUR_MYSQL } else { COUNT_AUDIT_HOUR })
    }

    /// Jobs created since `since_ms`: (start of the UTC day in ms, status, how many), ordered by day and status.
    /// The two reads are not one snapshot: a job that ends between them is counted twice, or not at all, until
    /// the page's next refresh.
    pub async fn jobs_per_day(&self, since_ms: i64) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let ended = self.sql("SELECT day, status, jobs FROM job_days WHERE day >= ?");
        // The width is a constant in the text, not a parameter: PostgreSQL matches GROUP BY expressions
        // textually, and two parameters would be two different expressions.
        let live = format!(
            "SELECT created_at - (created_at % {DAY_MS}) AS day, status, COUNT(*) FROM jobs \
             WHERE status IN ('pending_approval', 'queued', 'running') AND created_at >= ? GROUP BY 1, 2"
        );
        let live = self.sql(&live);
        let mut counts = on_pool!(self, pool => sqlx::query_as::<_, (i64, String, i64)>(&ended).bind(since_ms)
            .fetch_all(pool).await)?;
        counts.extend(on_pool!(self, pool => sqlx::query_as::<_, (i64, String, i64)>(&live).bind(since_ms)
            .fetch_all(pool).await)?);
        counts.sort();
        Ok(counts)
    }

    /// Audit events received since `since_ms`: (start of the hour in ms, how many).
    pub async fn audit_per_hour(&self, since_ms: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let sql = self.sql("SELECT hour, events FROM audit_hours WHERE hour >= ? ORDER BY hour");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (i64, i64)>(&sql).bind(since_ms).fetch_all(pool).await)?)
    }

    /// Each inventory host's newest audit event: (host id, its received_at in ms), hosts without events left out.
    /// The newest is the host's last chain position, found through the (host_id, chain_seq) unique index: one
    /// index probe per host, where `MAX(received_at) … GROUP BY host_id` reads every row (40 s for 10 million rows
    /// on SQLite, against 1 ms). The writer gives chain positions in commit order, so this is the last one stored.
    pub async fn newest_audit_per_host(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let sql = self.sql(
            "SELECT h.id, (SELECT s.received_at FROM server_history s WHERE s.host_id = h.id \
             ORDER BY s.chain_seq DESC LIMIT 1) FROM server_list h",
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, (i64, Option<i64>)>(&sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().filter_map(|(host, newest)| Some((host, newest?))).collect())
    }
}
