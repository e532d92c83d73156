//! The counts the console's home page draws: jobs by day and status, audit events by hour, each host's newest
//! audit event. Buckets are computed in SQL (`t - t % width`, the same in the three dialects) so that only
//! one row per bucket leaves the database.

use super::{on_pool, Store, StoreError};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

impl Store {
    /// Jobs created since `since_ms`: (start of the UTC day in ms, status, how many).
    pub async fn jobs_per_day(&self, since_ms: i64) -> Result<Vec<(i64, String, i64)>, StoreError> {
        // The width is a constant in the text, not a parameter: PostgreSQL matches GROUP BY expressions
        // textually, and two parameters would be two different expressions.
        let query = format!(
            "SELECT created_at - (created_at % {DAY_MS}) AS day, status, COUNT(*) FROM jobs WHERE created_at >= ? \
             GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (i64, String, i64)>(&sql).bind(since_ms).fetch_all(pool).await)?)
    }

    /// Audit events received since `since_ms`: (start of the hour in ms, how many).
    pub async fn audit_per_hour(&self, since_ms: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let query = format!(
            "SELECT received_at - (received_at % {HOUR_MS}) AS hour, COUNT(*) FROM server_history \
             WHERE received_at >= ? GROUP BY 1 ORDER BY 1"
        );
        let sql = self.sql(&query);
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
