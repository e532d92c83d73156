//! Approval policies and the approval of each job that waits for one, as stored. What a policy matches and who
//! may decide is `crate::approvals`'.

use super::{insert_id, jobs::JOB_APPROVAL, notify::INSERT_EVENT, now_ms, on_pool, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub id: i64,
    pub name: String,
    /// The selector, as a grant's: `{"functions", "apps", "tags", "modules", "templates"}`.
    pub spec: String,
    pub expire_secs: i64,
    /// 1: a schedule's runs do not wait.
    pub exempt_schedules: i64,
    pub created_by: String,
    pub created_at: i64,
}

/// A job's approval: who asked under which policy, until when, and once decided, the decision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApprovalRow {
    pub job_id: i64,
    pub policy_id: i64,
    pub policy_name: String,
    pub requested_by: String,
    pub requested_at: i64,
    pub expires_at: i64,
    /// `approved`, `rejected`, `expired` or `withdrawn`; `None` while it waits.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    pub decided_at: Option<i64>,
}

const POLICY_COLUMNS: &str = "id, name, spec, expire_secs, exempt_schedules, created_by, created_at";
const APPROVAL_COLUMNS: &str = "job_id, policy_id, policy_name, requested_by, requested_at, expires_at, decision, \
                                decided_by, comment, decided_at";

impl Store {
    /// Every policy, by name.
    pub async fn approval_policies(&self) -> Result<Vec<PolicyRow>, StoreError> {
        let query = format!("SELECT {POLICY_COLUMNS} FROM approval_policies ORDER BY name");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, PolicyRow>(&sql).fetch_all(pool).await)?)
    }

    /// A policy whose name is taken already is a `Conflict`.
    pub async fn insert_policy(
        &self,
        name: &str,
        spec: &str,
        expire_secs: i64,
        exempt_schedules: bool,
        by: &str,
    ) -> Result<PolicyRow, StoreError> {
        let created_at = now_ms();
        let id = insert_id!(
            self,
            "INSERT INTO approval_policies (name, spec, expire_secs, exempt_schedules, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            name,
            spec,
            expire_secs,
            i64::from(exempt_schedules),
            by,
            created_at
        )
        .map_err(|e| StoreError::conflict_or(e, || format!("an approval policy named {name} exists already")))?;
        let row = PolicyRow {
            id,
            name: name.to_owned(),
            spec: spec.to_owned(),
            expire_secs,
            exempt_schedules: i64::from(exempt_schedules),
            created_by: by.to_owned(),
            created_at,
        };
        Ok(row)
    }

    /// False when there is no such policy. The jobs it held keep their approval rows (and its name).
    pub async fn delete_policy(&self, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM approval_policies WHERE id = ?");
        Ok(on_pool!(self, pool => sqlx::query(&sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))? > 0)
    }

    /// Records that job `job_id` (stored `pending_approval`) waits under `policy` until `expires_at`, and the fact
    /// for the notifier, in one transaction.
    pub async fn insert_approval(
        &self,
        job_id: i64,
        policy: &PolicyRow,
        requested_by: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO job_approvals (job_id, policy_id, policy_name, requested_by, requested_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        let event = self.sql(INSERT_EVENT);
        let now = now_ms();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&sql).bind(job_id).bind(policy.id).bind(&policy.name).bind(requested_by).bind(now)
                .bind(expires_at).execute(&mut *tx).await?;
            sqlx::query(&event).bind(JOB_APPROVAL).bind(job_id).bind(None::<&str>).bind(now).execute(&mut *tx).await?;
            tx.commit().await
        }.await)?;
        Ok(())
    }

    pub async fn approval(&self, job_id: i64) -> Result<Option<ApprovalRow>, StoreError> {
        let query = format!("SELECT {APPROVAL_COLUMNS} FROM job_approvals WHERE job_id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ApprovalRow>(&sql).bind(job_id).fetch_optional(pool).await)?)
    }

    /// Decides job `job_id`'s open approval. True when this call decided it (once, whoever else tries: another
    /// approver, the expiry sweep, another server). An approval also moves the job to `queued`, in the same
    /// transaction; the other decisions end the job afterwards ([`Store::finish_job`]).
    pub async fn decide_approval(
        &self,
        job_id: i64,
        decision: &str,
        by: &str,
        comment: &str,
    ) -> Result<bool, StoreError> {
        let decide = self.sql(
            "UPDATE job_approvals SET decision = ?, decided_by = ?, comment = ?, decided_at = ? \
             WHERE job_id = ? AND decision IS NULL",
        );
        let queue = self.sql("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'pending_approval'");
        let approved = decision == "approved";
        let decided = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let decided = sqlx::query(&decide).bind(decision).bind(by).bind(comment).bind(now_ms()).bind(job_id)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if decided && approved {
                sqlx::query(&queue).bind(job_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(decided)
        }.await)?;
        Ok(decided)
    }

    /// The jobs whose approval is still open at `now` but past its time.
    pub async fn expired_approvals(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        let sql =
            self.sql("SELECT job_id FROM job_approvals WHERE decision IS NULL AND expires_at <= ? ORDER BY job_id");
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(&sql).bind(now).fetch_all(pool).await)?)
    }
}
