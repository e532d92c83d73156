//! Schedules of saved jobs, and their fires. A fire is claimed by inserting its row, unique on (schedule, slot),
//! before its job is created: whoever inserts it fires it, and nobody else ever does.

use super::{insert_id, notify::INSERT_EVENT, now_ms, on_pool, Dialect, Store, StoreError};

/// The notifier's name for a fire that was missed or failed (`crate::notify` reads it back).
pub const SCHEDULE_FIRE: &str = "schedule.fire";

/// Outcomes someone is told about: the others are the schedule doing its job.
fn notified(outcome: &str) -> bool {
    matches!(outcome, "missed" | "failed")
}

/// The notifier's detail of a fire: which slot (the schedule is the event's subject).
fn fire_detail(slot: i64) -> String {
    format!("{{\"slot\":{slot}}}")
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: i64,
    pub name: String,
    pub template_id: i64,
    pub cron: String,
    pub timezone: String,
    pub enabled: i64,
    /// `skip` or `queue`.
    pub overlap: String,
    pub catch_up_secs: i64,
    /// When it last became active (created, enabled, or its timing edited): earlier slots are not missed ones.
    pub active_from: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// A schedule's fields as written by a create or an edit.
pub struct NewSchedule<'a> {
    pub name: &'a str,
    pub template_id: i64,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub enabled: bool,
    pub overlap: &'a str,
    pub catch_up_secs: i64,
    pub active_from: i64,
    pub actor: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct FireRow {
    /// The slot (Unix ms) this fire is for.
    pub slot: i64,
    /// `claimed` (being started), `queued` (waiting for the previous run), `fired`, `skipped`, `missed`, `failed`.
    pub outcome: String,
    /// The job it started.
    #[serde(rename = "job")]
    pub job_id: Option<i64>,
    /// Why it was skipped, missed or failed.
    pub reason: Option<String>,
    pub recorded_at: i64,
}

const SCHEDULE_COLUMNS: &str = "id, name, template_id, cron, timezone, enabled, overlap, catch_up_secs, active_from, \
                                created_by, created_at, updated_by, updated_at";

impl Store {
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ScheduleRow>(&sql).fetch_all(pool).await)?)
    }

    pub async fn schedule(&self, id: i64) -> Result<Option<ScheduleRow>, StoreError> {
        let query = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ScheduleRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// A taken name is a `Conflict`.
    pub async fn add_schedule(&self, s: &NewSchedule<'_>) -> Result<i64, StoreError> {
        let now = now_ms();
        insert_id!(
            self,
            "INSERT INTO schedules (name, template_id, cron, timezone, enabled, overlap, catch_up_secs, active_from, \
             created_by, created_at, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            s.name,
            s.template_id,
            s.cron,
            s.timezone,
            i64::from(s.enabled),
            s.overlap,
            s.catch_up_secs,
            s.active_from,
            s.actor,
            now,
            s.actor,
            now
        )
        .map_err(|e| StoreError::conflict_or(e, || format!("a schedule named {} exists already", s.name)))
    }

    /// False when there is no such schedule; a taken name is a `Conflict`.
    pub async fn update_schedule(&self, id: i64, s: &NewSchedule<'_>) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE schedules SET name = ?, template_id = ?, cron = ?, timezone = ?, enabled = ?, overlap = ?, \
             catch_up_secs = ?, active_from = ?, updated_by = ?, updated_at = ? WHERE id = ?",
        );
        let done = on_pool!(self, pool => sqlx::query(&sql)
            .bind(s.name)
            .bind(s.template_id)
            .bind(s.cron)
            .bind(s.timezone)
            .bind(i64::from(s.enabled))
            .bind(s.overlap)
            .bind(s.catch_up_secs)
            .bind(s.active_from)
            .bind(s.actor)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(|e| StoreError::conflict_or(e, || format!("a schedule named {} exists already", s.name)))?;
        Ok(done > 0)
    }

    /// Deletes a schedule and its fires (one transaction). False when there was no such schedule.
    pub async fn delete_schedule(&self, id: i64) -> Result<bool, StoreError> {
        let (fires, schedule) = (
            self.sql("DELETE FROM schedule_fires WHERE schedule_id = ?"),
            self.sql("DELETE FROM schedules WHERE id = ?"),
        );
        let done = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&fires).bind(id).execute(&mut *tx).await?;
            let done = sqlx::query(&schedule).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await)?;
        Ok(done > 0)
    }

    /// Claims a slot of a schedule with the outcome it starts with. False when it was claimed already (by an
    /// earlier run of this server, or by another server on the same database): then it must not fire.
    pub async fn claim_fire(
        &self,
        schedule_id: i64,
        slot: i64,
        outcome: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = self
            .sql("INSERT INTO schedule_fires (schedule_id, slot, outcome, reason, recorded_at) VALUES (?, ?, ?, ?, ?)");
        let event = self.sql(INSERT_EVENT);
        let now = now_ms();
        let detail = fire_detail(slot);
        let inserted = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&sql).bind(schedule_id).bind(slot).bind(outcome).bind(reason).bind(now)
                .execute(&mut *tx).await?;
            if notified(outcome) {
                sqlx::query(&event).bind(SCHEDULE_FIRE).bind(schedule_id).bind(&detail).bind(now)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await);
        match inserted.map_err(|e| StoreError::conflict_or(e, String::new)) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records how a claimed fire ended.
    pub async fn settle_fire(
        &self,
        schedule_id: i64,
        slot: i64,
        outcome: &str,
        job_id: Option<i64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "UPDATE schedule_fires SET outcome = ?, job_id = ?, reason = ?, recorded_at = ? \
             WHERE schedule_id = ? AND slot = ?",
        );
        let event = self.sql(INSERT_EVENT);
        let now = now_ms();
        let detail = fire_detail(slot);
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&sql).bind(outcome).bind(job_id).bind(reason).bind(now).bind(schedule_id).bind(slot)
                .execute(&mut *tx).await?;
            if notified(outcome) {
                sqlx::query(&event).bind(SCHEDULE_FIRE).bind(schedule_id).bind(&detail).bind(now)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// One fire of a schedule.
    pub async fn schedule_fire(&self, schedule_id: i64, slot: i64) -> Result<Option<FireRow>, StoreError> {
        let sql = self.sql(
            "SELECT slot, outcome, job_id, reason, recorded_at FROM schedule_fires WHERE schedule_id = ? AND slot = ?",
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, FireRow>(&sql).bind(schedule_id).bind(slot).fetch_optional(pool).await)?,
        )
    }

    /// A schedule's fires, newest slot first.
    pub async fn schedule_fires(&self, schedule_id: i64, limit: i64) -> Result<Vec<FireRow>, StoreError> {
        let sql = self.sql(
            "SELECT slot, outcome, job_id, reason, recorded_at FROM schedule_fires WHERE schedule_id = ? \
             ORDER BY slot DESC LIMIT ?",
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, FireRow>(&sql).bind(schedule_id).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// The newest slot recorded for each schedule that has fires, whatever their outcome, in one query.
    pub async fn last_fire_slots(&self) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        let sql = "SELECT schedule_id, MAX(slot) FROM schedule_fires GROUP BY schedule_id";
        let rows = on_pool!(self, pool => sqlx::query_as::<_, (i64, i64)>(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().collect())
    }

    /// Fires a previous process claimed (or queued) but never settled: it stopped before their jobs started.
    pub async fn fail_unsettled_fires(&self) -> Result<u64, StoreError> {
        let events = format!(
            "INSERT INTO notify_events (kind, subject_id, detail, created_at) \
             SELECT ?, schedule_id, {}, ? FROM schedule_fires WHERE outcome IN ('claimed', 'queued')",
            self.fire_detail_sql()
        );
        let events = self.sql(&events);
        let sql = self.sql(
            "UPDATE schedule_fires SET outcome = 'failed', \
             reason = 'the server stopped before this fire started its job', recorded_at = ? \
             WHERE outcome IN ('claimed', 'queued')",
        );
        let now = now_ms();
        Ok(on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&events).bind(SCHEDULE_FIRE).bind(now).execute(&mut *tx).await?;
            let done = sqlx::query(&sql).bind(now).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await)?)
    }

    /// The newest queued or running job of a saved job, if any.
    pub async fn running_job_of_template(&self, template_id: i64) -> Result<Option<i64>, StoreError> {
        let sql = self.sql("SELECT MAX(id) FROM jobs WHERE template_id = ? AND status IN ('queued', 'running')");
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, Option<i64>>(&sql).bind(template_id).fetch_one(pool).await)?)
    }

    /// SQL building [`fire_detail`] from a row's `slot` column.
    fn fire_detail_sql(&self) -> &'static str {
        match self.dialect {
            Dialect::MySql => "CONCAT('{\"slot\":', slot, '}')",
            Dialect::Sqlite | Dialect::Postgres => "'{\"slot\":' || slot || '}'",
        }
    }
}
