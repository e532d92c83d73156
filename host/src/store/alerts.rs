//! Audit alert rules, as stored. Their meaning (compiling, matching, counting) is `audit::alerts`.

use super::{insert_id, now_ms, on_pool, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AlertRuleRow {
    pub id: i64,
    pub name: String,
    pub pattern: String,
    /// Only events of this inventory host; `None`: every host.
    pub host_id: Option<i64>,
    /// That host's inventory name (`None` for every host, or when the host has been deleted since).
    pub host: Option<String>,
    /// Only events whose history user or login user is this; `None`: every user.
    pub user_name: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// A rule to store (already checked by `audit::alerts`).
#[derive(Debug, Clone)]
pub struct NewAlertRule<'a> {
    pub name: &'a str,
    pub pattern: &'a str,
    pub host_id: Option<i64>,
    pub user_name: Option<&'a str>,
    pub created_by: &'a str,
}

impl Store {
    pub async fn alert_rules(&self) -> Result<Vec<AlertRuleRow>, StoreError> {
        let sql = "SELECT r.id, r.name, r.pattern, r.host_id, h.server_name AS host, r.user_name, r.created_by, \
                   r.created_at FROM audit_alert_rules r LEFT JOIN server_list h ON h.id = r.host_id ORDER BY r.id";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, AlertRuleRow>(sql).fetch_all(pool).await)?)
    }

    /// A rule whose name is taken already is a `Conflict`.
    pub async fn add_alert_rule(&self, rule: &NewAlertRule<'_>) -> Result<i64, StoreError> {
        insert_id!(
            self,
            "INSERT INTO audit_alert_rules (name, pattern, host_id, user_name, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            rule.name,
            rule.pattern,
            rule.host_id,
            rule.user_name,
            rule.created_by,
            now_ms()
        )
        .map_err(|e| StoreError::conflict_or(e, || format!("a rule named {} exists already", rule.name)))
    }

    /// False when there was no such rule.
    pub async fn delete_alert_rule(&self, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM audit_alert_rules WHERE id = ?");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }
}
