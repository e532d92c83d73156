//! API tokens. Only a keyed hash of each token is stored; the token itself is shown once, when created.

use super::{insert_id, now_ms, on_pool, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// The host an agent token speaks for; `None` for people's tokens.
    pub host_id: Option<i64>,
}

impl Store {
    /// Stores a token's hash. A hash stored already is a `Conflict`.
    pub async fn insert_token(&self, name: &str, token_hash: &str, role: &str) -> Result<i64, StoreError> {
        insert_id!(
            self,
            "INSERT INTO api_tokens (name, token_hash, role, created_at) VALUES (?, ?, ?, ?)",
            name,
            token_hash,
            role,
            now_ms()
        )
        .map_err(|e| StoreError::conflict_or(e, || "a token with this hash exists already".to_owned()))
    }

    /// Stores the hash of an agent token bound to `host_id` (role `agent`).
    pub async fn insert_host_token(&self, name: &str, token_hash: &str, host_id: i64) -> Result<i64, StoreError> {
        insert_id!(
            self,
            "INSERT INTO api_tokens (name, token_hash, role, host_id, created_at) VALUES (?, ?, 'agent', ?, ?)",
            name,
            token_hash,
            host_id,
            now_ms()
        )
        .map_err(|e| StoreError::conflict_or(e, || "a token with this hash exists already".to_owned()))
    }

    /// The live (not revoked) token with this hash.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let sql =
            self.sql("SELECT id, name, role, host_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, TokenRow>(&sql).bind(token_hash).fetch_optional(pool).await)?)
    }

    pub async fn token_count(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM api_tokens").fetch_one(pool).await)?,
        )
    }
}
