//! Console sessions. Only a keyed hash of each session id is stored (like tokens): a copy of the table does not
//! let anyone in. Expiry is decided by the caller from `created_at` and `last_seen_at`.

use super::{insert_id, on_pool, Store, StoreError};

/// A live session with its user, as the session check needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub user_name: String,
    pub user_role: String,
    pub user_disabled_at: Option<i64>,
}

impl Store {
    /// Stores a new session for `user_id`, created and last seen `now`.
    pub async fn insert_session(
        &self,
        session_hash: &str,
        user_id: i64,
        csrf_token: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        insert_id!(
            self,
            "INSERT INTO sessions (session_hash, user_id, csrf_token, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?)",
            session_hash,
            user_id,
            csrf_token,
            now,
            now
        )
        .map_err(|e| StoreError::conflict_or(e, || "a session with this hash exists already".to_owned()))
    }

    /// The session with this hash and its user, whatever its age.
    pub async fn session_by_hash(&self, session_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        let sql = self.sql(
            "SELECT s.id, s.user_id, s.csrf_token, s.created_at, s.last_seen_at, u.name AS user_name, \
             u.role AS user_role, u.disabled_at AS user_disabled_at \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.session_hash = ?",
        );
        Ok(on_pool!(self, pool =>
            sqlx::query_as::<_, SessionRow>(&sql).bind(session_hash).fetch_optional(pool).await)?)
    }

    /// Records that the session was used at `now`.
    pub async fn touch_session(&self, id: i64, now: i64) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE sessions SET last_seen_at = ? WHERE id = ?");
        on_pool!(self, pool => sqlx::query(&sql).bind(now).bind(id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Ends the session with this hash, if there is one. True when one was ended.
    pub async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM sessions WHERE session_hash = ?");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(session_hash).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Deletes sessions last seen before `idle_before` or created before `created_before` (both Unix ms); returns
    /// how many.
    pub async fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64, StoreError> {
        let sql = self.sql("DELETE FROM sessions WHERE last_seen_at < ? OR created_at < ?");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(idle_before).bind(created_before).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done)
    }

    /// How many sessions are stored (live or not yet swept).
    pub async fn session_count(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool =>
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions").fetch_one(pool).await)?)
    }
}
