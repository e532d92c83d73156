//! Jobs across the servers that share a database (PostgreSQL): queued jobs that any server with the job's module
//! and a free slot takes (`FOR UPDATE SKIP LOCKED`), a running job's progress copied into `job_progress` for job
//! pages on other servers, cancels asked on a server that does not run the job, and the signals that tell the
//! other servers to read (`omserver_queued`, `omserver_job` and `omserver_cancel`, each with a job id). Where one
//! server serves the database (SQLite, MariaDB) none of this is needed and these do nothing.

use super::{now_ms, Pool, ResultRow, Store, StoreError};

/// Signalled with a job id when its progress grows or it ends.
pub const JOB_CHANNEL: &str = "omserver_job";
/// Signalled with a job id when a cancel is asked for it on a server that does not run it.
pub const CANCEL_CHANNEL: &str = "omserver_cancel";
/// Signalled with a job id when a job is queued for whichever server takes it.
pub const QUEUED_CHANNEL: &str = "omserver_queued";

/// A queued job a server took ([`Store::claim_queued_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    /// The content hash of the module it was accepted with.
    pub module_sha256: String,
    /// A cancel was asked before it started: it ends without running.
    pub cancel_asked: bool,
}

impl Store {
    /// Whether several servers may serve this database at once (PostgreSQL): then what one server does, the
    /// others learn from the database.
    pub fn shared_by_servers(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Appends entries `from_seq..` of job `job_id`'s progress and signals them, in one transaction.
    pub async fn record_progress(&self, job_id: i64, from_seq: i64, entries: &[ResultRow]) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(()) };
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO job_progress (job_id, seq, host, status, rc, stdout, stderr, duration_ms) ",
        );
        insert.push_values(entries.iter().zip(from_seq..), |mut row, (r, seq)| {
            row.push_bind(job_id)
                .push_bind(seq)
                .push_bind(&r.host)
                .push_bind(&r.status)
                .push_bind(r.rc)
                .push_bind(&r.stdout)
                .push_bind(&r.stderr)
                .push_bind(r.duration_ms);
        });
        // A copy written again after a lost answer is the same entry.
        insert.push(" ON CONFLICT (job_id, seq) DO NOTHING");
        insert.build().execute(&mut *tx).await?;
        signal(&mut tx, JOB_CHANNEL, job_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Job `job_id`'s copied progress from entry `from_seq` on, in order.
    pub async fn job_progress(&self, job_id: i64, from_seq: i64) -> Result<Vec<ResultRow>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(Vec::new()) };
        Ok(sqlx::query_as::<_, ResultRow>(
            "SELECT host, status, rc, stdout, stderr, duration_ms FROM job_progress \
             WHERE job_id = $1 AND seq >= $2 ORDER BY seq",
        )
        .bind(job_id)
        .bind(from_seq)
        .fetch_all(pool)
        .await?)
    }

    /// Forgets job `job_id`'s copied progress (it has ended: its results are stored).
    pub async fn drop_progress(&self, job_id: i64) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(()) };
        sqlx::query("DELETE FROM job_progress WHERE job_id = $1").bind(job_id).execute(pool).await?;
        Ok(())
    }

    /// Asks the server running job `job_id` to cancel it. False when the job is not queued or running, or when
    /// no other server could be running it.
    pub async fn request_cancel(&self, job_id: i64) -> Result<bool, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(false) };
        let mut tx = pool.begin().await?;
        let asked =
            sqlx::query("UPDATE jobs SET cancel_requested_at = $1 WHERE id = $2 AND status IN ('queued', 'running')")
                .bind(now_ms())
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        if asked.rows_affected() == 0 {
            return Ok(false);
        }
        signal(&mut tx, CANCEL_CHANNEL, job_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Takes the oldest queued job that no server has taken and whose module is one of `modules` (content
    /// hashes): it is `node`'s now, still `queued` until it starts. Servers taking at once skip each other's rows.
    pub async fn claim_queued_job(&self, node: &str, modules: &[String]) -> Result<Option<ClaimedJob>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let mut tx = pool.begin().await?;
        let found: Option<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, module_sha256, cancel_requested_at FROM jobs \
             WHERE status = 'queued' AND node IS NULL AND module_sha256 = ANY($1) \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(modules)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, module_sha256, cancel_requested_at)) = found else { return Ok(None) };
        sqlx::query("UPDATE jobs SET node = $1 WHERE id = $2").bind(node).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(ClaimedJob { id, module_sha256, cancel_asked: cancel_requested_at.is_some() }))
    }

    /// Gives back a job `node` took and cannot run (its module changed meanwhile): another server may take it.
    pub async fn release_claim(&self, id: i64, node: &str) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(()) };
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE jobs SET node = NULL WHERE id = $1 AND node = $2 AND status = 'queued'")
            .bind(id)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        signal(&mut tx, QUEUED_CHANNEL, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The queued jobs that no server has taken since before `cutoff` (Unix ms), oldest first.
    pub async fn untaken_since(&self, cutoff: i64) -> Result<Vec<i64>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(Vec::new()) };
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'queued' AND node IS NULL AND created_at < $1 ORDER BY id LIMIT 100",
        )
        .bind(cutoff)
        .fetch_all(pool)
        .await?)
    }

    /// Tells the servers that job `id` is queued for whichever takes it.
    pub async fn signal_queued(&self, id: i64) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(()) };
        let mut tx = pool.begin().await?;
        signal(&mut tx, QUEUED_CHANNEL, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The queued or running jobs of server `node` whose cancel was asked elsewhere: what a server reads when
    /// it may have missed a signal.
    pub async fn cancels_asked(&self, node: &str) -> Result<Vec<i64>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(Vec::new()) };
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE node = $1 AND status IN ('queued', 'running') \
             AND cancel_requested_at IS NOT NULL",
        )
        .bind(node)
        .fetch_all(pool)
        .await?)
    }
}

/// Signals `channel` with `id` (a job's, a row's) at the transaction's commit.
pub(super) async fn signal(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    channel: &str,
    id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(id.to_string()).execute(&mut **tx).await?;
    Ok(())
}
