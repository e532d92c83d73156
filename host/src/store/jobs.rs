//! Jobs and their per-host results.

use serde::Serialize;

use super::{fetch_bound, insert_id, notify::INSERT_EVENT, now_ms, on_pool, Bind, Store, StoreError};

/// The notifier's name for the fact that a job ended (`crate::notify` reads it back).
pub const JOB_FINISHED: &str = "job.finished";
/// The notification fact of a job that waits for approval ([`Store::insert_approval`]).
pub const JOB_APPROVAL: &str = "job.approval";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub module_id: i64,
    pub module_version: String,
    pub backend: String,
    /// JSON object of the validated parameters.
    pub params: String,
    /// JSON array of the target hosts' names.
    pub hosts: String,
    pub status: String,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// JSON of the rollout, when the job rolls out in batches.
    pub rollout: Option<String>,
    /// The job this one re-runs.
    pub rerun_of: Option<i64>,
    /// The saved job (template) it was run from, and that template's definition as it ran (JSON).
    pub template_id: Option<i64>,
    pub definition: Option<String>,
}

/// One batch of a job: its hosts, in order, and when it ran.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub batch_no: i64,
    /// JSON array of the batch's host names.
    pub hosts: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A host's result. `status` is `ok`, `failed` or `unreachable` as the backend reported it, `cancelled` (it was
/// running when the job was cancelled or timed out) or `skipped` (it never started); `stderr` says why.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ResultRow {
    pub host: String,
    pub status: String,
    pub rc: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: i64,
}

/// Filters for the job history. Every field narrows; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Who submitted it, exactly.
    pub created_by: Option<String>,
    pub module_id: Option<i64>,
    pub status: Option<String>,
    /// A host among its targets, by name, exactly.
    pub host: Option<String>,
    /// `created_at` bounds in ms, inclusive.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Jobs with an id below this (the next page), newest first.
    pub before: Option<i64>,
    pub limit: i64,
}

pub struct NewJob<'a> {
    pub module_id: u32,
    pub module_version: &'a str,
    pub backend: &'a str,
    pub params: &'a str,
    pub hosts: &'a str,
    pub created_by: &'a str,
    pub rollout: Option<&'a str>,
    pub rerun_of: Option<i64>,
    pub template_id: Option<i64>,
    pub definition: Option<&'a str>,
    /// Stored `pending_approval` rather than `queued`: it waits for an approval (`crate::approvals`).
    pub pending_approval: bool,
    /// The server that accepted it (`node_name`).
    pub node: &'a str,
}

const JOB_COLUMNS: &str = "id, module_id, module_version, backend, params, hosts, status, error, created_by, \
                           created_at, started_at, finished_at, rollout, rerun_of, template_id, definition";

/// Inserts host results inside a transaction of whichever dialect `on_pool!` picked.
macro_rules! insert_results {
    ($tx:ident, $sql:ident, $job_id:expr, $results:expr) => {
        for r in $results {
            sqlx::query(&$sql)
                .bind($job_id)
                .bind(&r.host)
                .bind(&r.status)
                .bind(r.rc)
                .bind(&r.stdout)
                .bind(&r.stderr)
                .bind(r.duration_ms)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

const INSERT_RESULT: &str =
    "INSERT INTO job_results (job_id, host, status, rc, stdout, stderr, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?)";

impl Store {
    /// Records a new job as `queued` (or `pending_approval`) and returns its id.
    pub async fn insert_job(&self, job: &NewJob<'_>) -> Result<i64, StoreError> {
        Ok(insert_id!(
            self,
            "INSERT INTO jobs (module_id, module_version, backend, params, hosts, status, created_by, created_at, \
             rollout, rerun_of, template_id, definition, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            i64::from(job.module_id),
            job.module_version,
            job.backend,
            job.params,
            job.hosts,
            if job.pending_approval { "pending_approval" } else { "queued" },
            job.created_by,
            now_ms(),
            job.rollout,
            job.rerun_of,
            job.template_id,
            job.definition,
            job.node
        )?)
    }

    /// Job `id` runs now, on server `node`.
    pub async fn mark_job_running(&self, id: i64, node: &str) -> Result<(), StoreError> {
        let sql =
            self.sql("UPDATE jobs SET status = 'running', started_at = ?, node = ? WHERE id = ? AND status = 'queued'");
        on_pool!(self, pool => sqlx::query(&sql).bind(now_ms()).bind(node).bind(id).execute(pool).await
            .map(|_| ()))?;
        Ok(())
    }

    /// Records that batch `batch_no` (0-based) of a job starts now on `hosts` (a JSON array of names).
    pub async fn start_batch(&self, job_id: i64, batch_no: usize, hosts: &str) -> Result<(), StoreError> {
        let sql = self.sql("INSERT INTO job_batches (job_id, batch_no, hosts, started_at) VALUES (?, ?, ?, ?)");
        let batch_no = i64::try_from(batch_no).unwrap_or(i64::MAX);
        on_pool!(self, pool => sqlx::query(&sql).bind(job_id).bind(batch_no).bind(hosts).bind(now_ms())
            .execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Stores a finished batch's host results and its end in one transaction, so that a batch's results are kept
    /// even if the server stops before the job ends.
    pub async fn finish_batch(&self, job_id: i64, batch_no: usize, results: &[ResultRow]) -> Result<(), StoreError> {
        let batch_no = i64::try_from(batch_no).unwrap_or(i64::MAX);
        let update = self.sql("UPDATE job_batches SET finished_at = ? WHERE job_id = ? AND batch_no = ?");
        let insert = self.sql(INSERT_RESULT);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_results!(tx, insert, job_id, results);
            sqlx::query(&update).bind(now_ms()).bind(job_id).bind(batch_no).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn job_batches(&self, job_id: i64) -> Result<Vec<BatchRow>, StoreError> {
        let sql = self
            .sql("SELECT batch_no, hosts, started_at, finished_at FROM job_batches WHERE job_id = ? ORDER BY batch_no");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, BatchRow>(&sql).bind(job_id).fetch_all(pool).await)?)
    }

    /// The ids of the jobs that re-run this one, oldest first.
    pub async fn reruns_of(&self, job_id: i64) -> Result<Vec<i64>, StoreError> {
        let sql = self.sql("SELECT id FROM jobs WHERE rerun_of = ? ORDER BY id");
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(&sql).bind(job_id).fetch_all(pool).await)?)
    }

    /// Stores the final status and the results of hosts not stored with a batch (skipped ones), and records the
    /// fact for the notifier and the home page's counts, in one transaction.
    pub async fn finish_job(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        results: &[ResultRow],
    ) -> Result<(), StoreError> {
        let update = self.sql("UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ?");
        let insert = self.sql(INSERT_RESULT);
        let event = self.sql(INSERT_EVENT);
        let count = self.count_ending_job_sql();
        let now = now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_results!(tx, insert, id, results);
            sqlx::query(&count).bind(status).bind(id).execute(&mut *tx).await?;
            sqlx::query(&update).bind(status).bind(error).bind(now).bind(id).execute(&mut *tx).await?;
            sqlx::query(&event).bind(JOB_FINISHED).bind(id).bind(None::<&str>).bind(now).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let query = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, JobRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// The newest matching jobs first.
    pub async fn query_jobs(&self, filter: &JobQuery) -> Result<Vec<JobRow>, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(user) = &filter.created_by {
            clauses.push(self.equals("created_by"));
            binds.push(Bind::Text(user.clone()));
        }
        if let Some(module) = filter.module_id {
            clauses.push("module_id = ?".to_owned());
            binds.push(Bind::Int(module));
        }
        if let Some(status) = &filter.status {
            clauses.push(self.equals("status"));
            binds.push(Bind::Text(status.clone()));
        }
        if let Some(host) = &filter.host {
            // `hosts` is a JSON array of names: look for the name as JSON writes it, quotes included, so that
            // `web1` does not match `web10`.
            clauses.push(format!("{} > 0", self.position("hosts")));
            binds.push(Bind::Text(serde_json::Value::from(host.as_str()).to_string()));
        }
        if let Some(from) = filter.from_ms {
            clauses.push("created_at >= ?".to_owned());
            binds.push(Bind::Int(from));
        }
        if let Some(to) = filter.to_ms {
            clauses.push("created_at <= ?".to_owned());
            binds.push(Bind::Int(to));
        }
        if let Some(before) = filter.before {
            clauses.push("id < ?".to_owned());
            binds.push(Bind::Int(before));
        }
        let filter_sql = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let query = format!("SELECT {JOB_COLUMNS} FROM jobs{filter_sql} ORDER BY id DESC LIMIT ?");
        binds.push(Bind::Int(filter.limit));
        let sql = self.sql(&query);
        Ok(fetch_bound!(self, JobRow, &sql, &binds)?)
    }

    pub async fn job_results(&self, job_id: i64) -> Result<Vec<ResultRow>, StoreError> {
        let sql = self
            .sql("SELECT host, status, rc, stdout, stderr, duration_ms FROM job_results WHERE job_id = ? ORDER BY id");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ResultRow>(&sql).bind(job_id).fetch_all(pool).await)?)
    }

    /// Jobs left queued or running by a previous process of server `node` can never finish: fail them at start-up,
    /// and close the batch that was running (the batches that ended keep their results). Jobs of other servers are
    /// theirs; a job of no server is from before servers had names.
    pub async fn fail_interrupted_jobs(&self, node: &str) -> Result<u64, StoreError> {
        let batches = self.sql(
            "UPDATE job_batches SET finished_at = ? WHERE finished_at IS NULL \
             AND job_id IN (SELECT id FROM jobs WHERE status IN ('queued', 'running') AND (node = ? OR node IS NULL))",
        );
        let events = self.sql(
            "INSERT INTO notify_events (kind, subject_id, created_at) \
             SELECT ?, id, ? FROM jobs WHERE status IN ('queued', 'running') AND (node = ? OR node IS NULL)",
        );
        let count = self.count_interrupted_jobs_sql();
        let jobs = self.sql(
            "UPDATE jobs SET status = 'failed', error = 'interrupted: the server stopped before the job finished', \
             finished_at = ? WHERE status IN ('queued', 'running') AND (node = ? OR node IS NULL)",
        );
        let now = now_ms();
        let done = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&batches).bind(now).bind(node).execute(&mut *tx).await?;
            sqlx::query(&events).bind(JOB_FINISHED).bind(now).bind(node).execute(&mut *tx).await?;
            sqlx::query(&count).bind(node).execute(&mut *tx).await?;
            let done = sqlx::query(&jobs).bind(now).bind(node).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(done)
        }
        .await)?;
        Ok(done)
    }
}
