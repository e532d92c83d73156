//! Failed-login counts (`login_throttle`, migration 0021), shared by every server of the database. Only the counts
//! live here; what they mean (who waits, how long, when a count is forgotten) is `crate::users::throttle`'s.
//!
//! A subject is an opaque string of at most 64 characters that the caller made (a keyed hash of a user name or an
//! address). A failure is counted by one upsert that increments the row in the database, so two servers counting
//! the same subject at once both count; rows are locked in the order of their subjects, so two counts never wait
//! on each other in a cycle.

use super::{on_pool, Dialect, Store, StoreError};

/// One subject's failures as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FailureRow {
    pub subject: String,
    pub failures: i64,
    /// Unix ms of the newest failure.
    pub last_failed_at: i64,
}

/// The upsert's conflict clause (bound: the forgetting cutoff). A count whose last failure is older than the cutoff
/// starts again at 1; the last failure never moves back, whichever server's clock is behind.
const COUNT_CONFLICT: &str = "ON CONFLICT (subject) DO UPDATE SET \
     failures = CASE WHEN login_throttle.last_failed_at < ? THEN 1 ELSE login_throttle.failures + 1 END, \
     last_failed_at = CASE WHEN login_throttle.last_failed_at > excluded.last_failed_at \
         THEN login_throttle.last_failed_at ELSE excluded.last_failed_at END";
/// MySQL assigns left to right, each assignment seeing the ones before it: `failures` goes first, so that it reads
/// the row's old `last_failed_at`.
const COUNT_CONFLICT_MYSQL: &str = "ON DUPLICATE KEY UPDATE \
     failures = CASE WHEN last_failed_at < ? THEN 1 ELSE failures + 1 END, \
     last_failed_at = CASE WHEN last_failed_at > VALUES(last_failed_at) \
         THEN last_failed_at ELSE VALUES(last_failed_at) END";

/// How often a count that the database broke off as a deadlock (MariaDB's gap locks can, under concurrent inserts)
/// is tried, in all. Nothing was written by an attempt that was broken off.
const COUNT_ATTEMPTS: usize = 3;

impl Store {
    /// The stored failures of those of `subjects` that have any, forgotten or not.
    pub async fn login_failures(&self, subjects: &[&str]) -> Result<Vec<FailureRow>, StoreError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT subject, failures, last_failed_at FROM login_throttle WHERE subject IN ({})",
            vec!["?"; subjects.len()].join(", ")
        );
        let sql = self.sql(&sql);
        Ok(on_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, FailureRow>(&sql);
            for subject in subjects {
                query = query.bind(*subject);
            }
            query.fetch_all(pool).await
        })?)
    }

    /// Counts one failure at `now` (ms) against each of `subjects`, in one statement. A count whose last failure
    /// was before `forgotten_before` (ms) starts again at 1.
    pub async fn count_login_failure(
        &self,
        subjects: &[&str],
        now: i64,
        forgotten_before: i64,
    ) -> Result<(), StoreError> {
        let mut subjects = subjects.to_vec();
        subjects.sort_unstable();
        subjects.dedup();
        if subjects.is_empty() {
            return Ok(());
        }
        let conflict = if self.dialect == Dialect::MySql { COUNT_CONFLICT_MYSQL } else { COUNT_CONFLICT };
        let sql = format!(
            "INSERT INTO login_throttle (subject, failures, last_failed_at) VALUES {} {conflict}",
            vec!["(?, 1, ?)"; subjects.len()].join(", ")
        );
        let sql = self.sql(&sql);
        let mut attempt = 1;
        loop {
            let done = on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for subject in &subjects {
                    query = query.bind(*subject).bind(now);
                }
                query.bind(forgotten_before).execute(pool).await.map(|_| ())
            });
            match done {
                Err(err) if is_deadlock(&err) && attempt < COUNT_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "failed-login count broken off as a deadlock; counting again");
                    attempt += 1;
                }
                done => return Ok(done?),
            }
        }
    }

    /// Forgets `subject`'s failures (a successful login).
    pub async fn forget_login_failures(&self, subject: &str) -> Result<(), StoreError> {
        let sql = self.sql("DELETE FROM login_throttle WHERE subject = ?");
        on_pool!(self, pool => sqlx::query(&sql).bind(subject).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Deletes the counts whose last failure was before `before` (ms): those nobody remembers any more.
    pub async fn delete_login_failures_before(&self, before: i64) -> Result<u64, StoreError> {
        let sql = self.sql("DELETE FROM login_throttle WHERE last_failed_at < ?");
        Ok(on_pool!(self, pool => sqlx::query(&sql).bind(before).execute(pool).await.map(|d| d.rows_affected()))?)
    }
}

/// The database broke the statement off to resolve a deadlock (SQLSTATE 40001 on MySQL, 40P01 on PostgreSQL);
/// it did nothing and may simply run again.
fn is_deadlock(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}
