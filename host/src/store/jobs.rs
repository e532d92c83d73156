//! Jobs and their per-host results.

use serde::Serialize;

use super::{fetch_bound, insert_id, now_ms, on_pool, Bind, Store, StoreError};

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
}

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
}

const JOB_COLUMNS: &str = "id, module_id, module_version, backend, params, hosts, status, error, created_by, \
                           created_at, started_at, finished_at";

impl Store {
    /// Records a new job as `queued` and returns its id.
    pub async fn insert_job(&self, job: &NewJob<'_>) -> Result<i64, StoreError> {
        Ok(insert_id!(
            self,
            "INSERT INTO jobs (module_id, module_version, backend, params, hosts, status, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            i64::from(job.module_id),
            job.module_version,
            job.backend,
            job.params,
            job.hosts,
            job.created_by,
            now_ms()
        )?)
    }

    pub async fn mark_job_running(&self, id: i64) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'");
        on_pool!(self, pool => sqlx::query(&sql).bind(now_ms()).bind(id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Stores the final status and every host's result in one transaction.
    pub async fn finish_job(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        results: &[ResultRow],
    ) -> Result<(), StoreError> {
        let update = self.sql("UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ?");
        let insert = self.sql(
            "INSERT INTO job_results (job_id, host, status, rc, stdout, stderr, duration_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in results {
                sqlx::query(&insert)
                    .bind(id)
                    .bind(&r.host)
                    .bind(&r.status)
                    .bind(r.rc)
                    .bind(&r.stdout)
                    .bind(&r.stderr)
                    .bind(r.duration_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(&update).bind(status).bind(error).bind(now_ms()).bind(id).execute(&mut *tx).await?;
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

    /// Jobs left queued or running by a previous process can never finish: fail them at start-up.
    pub async fn fail_interrupted_jobs(&self) -> Result<u64, StoreError> {
        let sql = self.sql(
            "UPDATE jobs SET status = 'failed', error = 'interrupted: the server stopped before the job finished', \
             finished_at = ? WHERE status IN ('queued', 'running')",
        );
        let done =
            on_pool!(self, pool => sqlx::query(&sql).bind(now_ms()).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done)
    }
}
