//! Saved jobs (templates): what to run, where and how, kept to be run again by hand or by a schedule.

use super::{insert_id, now_ms, on_pool, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub module_id: i64,
    /// JSON object of the parameters as saved (checked against the module's schema when saved and at each run).
    pub params: String,
    /// JSON of the target selector.
    pub targets: String,
    pub backend: Option<String>,
    /// JSON of the rollout.
    pub rollout: Option<String>,
    pub timeout_secs: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// A template's fields as written by a create or an edit.
pub struct NewTemplate<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub module_id: u32,
    pub params: &'a str,
    pub targets: &'a str,
    pub backend: Option<&'a str>,
    pub rollout: Option<&'a str>,
    pub timeout_secs: Option<i64>,
    /// Who creates or edits it.
    pub actor: &'a str,
}

const TEMPLATE_COLUMNS: &str = "id, name, description, module_id, params, targets, backend, rollout, timeout_secs, \
                                created_by, created_at, updated_by, updated_at";

impl Store {
    pub async fn list_templates(&self) -> Result<Vec<TemplateRow>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM job_templates ORDER BY name");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, TemplateRow>(&sql).fetch_all(pool).await)?)
    }

    pub async fn template(&self, id: i64) -> Result<Option<TemplateRow>, StoreError> {
        let query = format!("SELECT {TEMPLATE_COLUMNS} FROM job_templates WHERE id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, TemplateRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// A template whose name is taken already is a `Conflict`.
    pub async fn add_template(&self, t: &NewTemplate<'_>) -> Result<i64, StoreError> {
        let now = now_ms();
        insert_id!(
            self,
            "INSERT INTO job_templates (name, description, module_id, params, targets, backend, rollout, \
             timeout_secs, created_by, created_at, updated_by, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            t.name,
            t.description,
            i64::from(t.module_id),
            t.params,
            t.targets,
            t.backend,
            t.rollout,
            t.timeout_secs,
            t.actor,
            now,
            t.actor,
            now
        )
        .map_err(|e| StoreError::conflict_or(e, || format!("a saved job named {} exists already", t.name)))
    }

    /// Replaces a template's definition. False when there is no such template; a taken name is a `Conflict`.
    pub async fn update_template(&self, id: i64, t: &NewTemplate<'_>) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE job_templates SET name = ?, description = ?, module_id = ?, params = ?, targets = ?, \
             backend = ?, rollout = ?, timeout_secs = ?, updated_by = ?, updated_at = ? WHERE id = ?",
        );
        let done = on_pool!(self, pool => sqlx::query(&sql)
            .bind(t.name)
            .bind(t.description)
            .bind(i64::from(t.module_id))
            .bind(t.params)
            .bind(t.targets)
            .bind(t.backend)
            .bind(t.rollout)
            .bind(t.timeout_secs)
            .bind(t.actor)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(|e| StoreError::conflict_or(e, || format!("a saved job named {} exists already", t.name)))?;
        // sqlx asks MySQL for matched rows (FOUND_ROWS), so an edit that changes nothing still counts.
        Ok(done > 0)
    }

    /// False when there was no such template. Its past jobs keep their copy of the definition; a template that
    /// schedules still run is kept (`Conflict`).
    pub async fn delete_template(&self, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM job_templates WHERE id = ?");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(id).execute(pool).await.map(|r| r.rows_affected()));
        match done {
            Ok(done) => Ok(done > 0),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::Conflict(format!("saved job {id} has schedules: delete or move them first")))
            }
            Err(e) => Err(e.into()),
        }
    }
}
