//! Users' grants as stored: a role and a selector (JSON) per row. What a grant means is `crate::access`'s.

/// The selector of a grant on every host, with every module: what each user is given when created.
pub const EVERYTHING: &str = "{}";

use super::{insert_id, now_ms, on_pool, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub id: i64,
    pub user_id: i64,
    /// `None`: the user's own role.
    pub role: Option<String>,
    /// The selector: `{"functions", "apps", "tags", "modules", "templates"}`.
    pub spec: String,
    pub created_by: String,
    pub created_at: i64,
}

const SELECT_GRANTS: &str = "SELECT id, user_id, role, spec, created_by, created_at FROM user_grants";

impl Store {
    /// A user's grants, oldest first.
    pub async fn grants_of(&self, user_id: i64) -> Result<Vec<GrantRow>, StoreError> {
        let query = format!("{SELECT_GRANTS} WHERE user_id = ? ORDER BY id");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, GrantRow>(&sql).bind(user_id).fetch_all(pool).await)?)
    }

    pub async fn insert_grant(
        &self,
        user_id: i64,
        role: Option<&str>,
        spec: &str,
        by: &str,
    ) -> Result<GrantRow, StoreError> {
        let created_at = now_ms();
        let id = insert_id!(
            self,
            "INSERT INTO user_grants (user_id, role, spec, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
            user_id,
            role,
            spec,
            by,
            created_at
        )?;
        Ok(GrantRow {
            id,
            user_id,
            role: role.map(str::to_owned),
            spec: spec.to_owned(),
            created_by: by.to_owned(),
            created_at,
        })
    }

    /// Deletes grant `id` of user `user_id`. False when that user has no such grant.
    pub async fn delete_grant(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM user_grants WHERE id = ? AND user_id = ?");
        Ok(on_pool!(self, pool => sqlx::query(&sql).bind(id).bind(user_id).execute(pool).await
            .map(|done| done.rows_affected() > 0))?)
    }
}
