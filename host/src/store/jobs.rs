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
    /// The server that runs it (`node_name`); `None`: queued for whichever server of the database takes it
    /// ([`Store::claim_queued_job`]).
    pub node: Option<&'a str>,
    /// The content hash of the module it was accepted with: a server takes it only with that very module.
    pub module_sha256: &'a str,
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

/// A job's end (or a batch's) arrived after the job had been ended for it: its server was taken for gone
/// ([`Store::fail_unfinished_jobs`]) while it still ran. The first end stands; one result per host.
fn already_ended(id: i64) -> StoreError {
    StoreError::Conflict(format!("job {id} had already been ended (its server was taken for gone)"))
}

impl Store {
    /// Records a new job as `queued` (or `pending_approval`) and returns its id.
    pub async fn insert_job(&self, job: &NewJob<'_>) -> Result<i64, StoreError> {
        Ok(insert_id!(
            self,
            "INSERT INTO jobs (module_id, module_version, backend, params, hosts, status, created_by, created_at, \
             rollout, rerun_of, template_id, definition, node, module_sha256) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            job.node,
            job.module_sha256
        )?)
    }

    /// Job `id` runs now, on server `node`. A `Conflict` when it is no longer queued (cancelled, or ended for a
    /// server taken for gone, meanwhile): it must not run.
    pub async fn mark_job_running(&self, id: i64, node: &str) -> Result<(), StoreError> {
        let sql =
            self.sql("UPDATE jobs SET status = 'running', started_at = ?, node = ? WHERE id = ? AND status = 'queued'");
        let marked = on_pool!(self, pool => sqlx::query(&sql).bind(now_ms()).bind(node).bind(id).execute(pool).await
            .map(|done| done.rows_affected()))?;
        if marked == 0 {
            return Err(StoreError::Conflict(format!("job {id} is no longer queued")));
        }
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
    /// even if the server stops before the job ends. A batch closed already (its job was ended for a server taken
    /// for gone) is left as it is: a `Conflict`.
    pub async fn finish_batch(&self, job_id: i64, batch_no: usize, results: &[ResultRow]) -> Result<(), StoreError> {
        let batch_no = i64::try_from(batch_no).unwrap_or(i64::MAX);
        let update = self
            .sql("UPDATE job_batches SET finished_at = ? WHERE job_id = ? AND batch_no = ? AND finished_at IS NULL");
        let insert = self.sql(INSERT_RESULT);
        let closed = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let closed = sqlx::query(&update).bind(now_ms()).bind(job_id).bind(batch_no).execute(&mut *tx).await?;
            if closed.rows_affected() == 0 {
                return Ok(false);
            }
            insert_results!(tx, insert, job_id, results);
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        }
        .await)?;
        if !closed {
            return Err(already_ended(job_id));
        }
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
    /// fact for the notifier and the home page's counts, in one transaction. A job ended already (another server
    /// took its server for gone) is left as it is: a `Conflict`.
    pub async fn finish_job(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        results: &[ResultRow],
    ) -> Result<(), StoreError> {
        self.end_job(id, status, error, results, "status IN ('pending_approval', 'queued', 'running')").await
    }

    /// Ends job `id` as `status` if it is queued and no server has taken it yet (`Conflict` otherwise): a cancel
    /// asked before any server of a shared database took the job.
    pub async fn end_untaken_job(
        &self,
        id: i64,
        status: &str,
        error: &str,
        results: &[ResultRow],
    ) -> Result<(), StoreError> {
        self.end_job(id, status, Some(error), results, "status = 'queued' AND node IS NULL").await
    }

    /// [`Store::finish_job`] for a job in the state `ending` says (an SQL condition on its row).
    async fn end_job(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        results: &[ResultRow],
        ending: &str,
    ) -> Result<(), StoreError> {
        let update = format!("UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND {ending}");
        let update = self.sql(&update);
        let insert = self.sql(INSERT_RESULT);
        let event = self.sql(INSERT_EVENT);
        let count = self.count_ending_job_sql();
        let signal = self.shared_by_servers().then_some("SELECT pg_notify($1, $2)");
        let now = now_ms();
        let ended = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&count).bind(status).bind(id).execute(&mut *tx).await?;
            let ended = sqlx::query(&update).bind(status).bind(error).bind(now).bind(id).execute(&mut *tx).await?;
            if ended.rows_affected() == 0 {
                return Ok(false);
            }
            insert_results!(tx, insert, id, results);
            sqlx::query(&event).bind(JOB_FINISHED).bind(id).bind(None::<&str>).bind(now).execute(&mut *tx).await?;
            if let Some(signal) = &signal {
                // Job pages on other servers read the end.
                sqlx::query(signal).bind(super::JOB_CHANNEL).bind(id.to_string()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        }
        .await)?;
        if !ended {
            return Err(already_ended(id));
        }
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

    /// Ends every job server `node` left queued or running, which it can never finish: its previous process
    /// stopped (a restart calls this, `unnamed` too: jobs from before servers had names), or it stopped answering
    /// and another server took its name's lock (`crate::cluster`). Each job ends `failed` with `error`; its
    /// running batch is closed; the results stored with its finished batches stay, and every other host is stored
    /// `lost`, saying `error`. Where servers share the database, the queued jobs it had taken and not started go
    /// back to the queue instead, for another server. One transaction: a job is ended whole or not at all. Returns
    /// the jobs ended.
    pub async fn fail_unfinished_jobs(&self, node: &str, unnamed: bool, error: &str) -> Result<Vec<i64>, StoreError> {
        // Without a node: a job from before servers had names, or (with a module hash, queued) one queued for any
        // server of a shared database, which is nobody's to fail.
        let owned = if unnamed {
            "(node = ? OR (node IS NULL AND (status = 'running' OR module_sha256 IS NULL)))"
        } else {
            "node = ?"
        };
        // What the server took from the queue and had not started goes back to it, for another to run.
        let release =
            self.sql("UPDATE jobs SET node = NULL WHERE node = ? AND status = 'queued' AND module_sha256 IS NOT NULL");
        let jobs = format!("SELECT id, hosts FROM jobs WHERE status IN ('queued', 'running') AND {owned}");
        let jobs = self.sql(&jobs);
        let stored = self.sql("SELECT host FROM job_results WHERE job_id = ?");
        let insert = self.sql(INSERT_RESULT);
        let batches = self.sql("UPDATE job_batches SET finished_at = ? WHERE job_id = ? AND finished_at IS NULL");
        let count = self.count_ending_job_sql();
        let end = self.sql(
            "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
        );
        let event = self.sql(INSERT_EVENT);
        let shared = self
            .shared_by_servers()
            .then_some(("DELETE FROM job_progress WHERE job_id = $1", "SELECT pg_notify($1, $2)"));
        let now = now_ms();
        let ended = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            if shared.is_some() {
                sqlx::query(&release).bind(node).execute(&mut *tx).await?;
            }
            let unfinished: Vec<(i64, String)> =
                sqlx::query_as(&jobs).bind(node).fetch_all(&mut *tx).await?;
            for (id, hosts) in &unfinished {
                let have: Vec<String> = sqlx::query_scalar(&stored).bind(id).fetch_all(&mut *tx).await?;
                let lost: Vec<ResultRow> = serde_json::from_str::<Vec<String>>(hosts)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|host| !have.contains(host))
                    .map(|host| ResultRow {
                        host,
                        status: "lost".to_owned(),
                        rc: None,
                        stdout: String::new(),
                        stderr: error.to_owned(),
                        duration_ms: 0,
                    })
                    .collect();
                insert_results!(tx, insert, *id, &lost);
                sqlx::query(&batches).bind(now).bind(id).execute(&mut *tx).await?;
                sqlx::query(&count).bind("failed").bind(id).execute(&mut *tx).await?;
                sqlx::query(&end).bind(error).bind(now).bind(id).execute(&mut *tx).await?;
                sqlx::query(&event).bind(JOB_FINISHED).bind(id).bind(None::<&str>).bind(now).execute(&mut *tx).await?;
                if let Some((forget, signal)) = &shared {
                    // The progress its server copied goes, and job pages on other servers read the end.
                    sqlx::query(forget).bind(id).execute(&mut *tx).await?;
                    sqlx::query(signal).bind(super::JOB_CHANNEL).bind(id.to_string()).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(unfinished.into_iter().map(|(id, _)| id).collect())
        }
        .await)?;
        Ok(ended)
    }
}
