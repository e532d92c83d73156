//! API tokens. Only a keyed hash of each token is stored; the token itself is shown once, when created.

use serde::Serialize;

use super::{insert_id, now_ms, on_pool, Store, StoreError};

/// A live token as authentication needs it: with its user's name, role and state when it belongs to one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// The host an agent token speaks for; `None` for people's tokens.
    pub host_id: Option<i64>,
    /// The user the token belongs to; `None` for tokens without one (all made before users existed).
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub user_role: Option<String>,
    pub user_disabled_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A token as listed: never its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenListing {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// The user it belongs to, if any.
    pub user: Option<String>,
    /// The host, for agent tokens.
    pub host: Option<String>,
    pub created_at: i64,
    /// Updated at most once a minute.
    pub last_used_at: Option<i64>,
}

/// Which tokens to list.
#[derive(Debug, Clone, Copy)]
pub enum TokenScope {
    All,
    /// The tokens of one user.
    User(i64),
    /// One token (the caller's own, when it belongs to no user).
    Token(i64),
}

impl Store {
    /// Stores the hash of a token that belongs to no user. A hash stored already is a `Conflict`.
    pub async fn insert_token(&self, name: &str, token_hash: &str, role: &str) -> Result<i64, StoreError> {
        self.insert_user_token(name, token_hash, role, None).await
    }

    /// Stores a token's hash owned by `user_id` (or by no one). A hash stored already is a `Conflict`.
    pub async fn insert_user_token(
        &self,
        name: &str,
        token_hash: &str,
        role: &str,
        user_id: Option<i64>,
    ) -> Result<i64, StoreError> {
        insert_id!(
            self,
            "INSERT INTO api_tokens (name, token_hash, role, user_id, created_at) VALUES (?, ?, ?, ?, ?)",
            name,
            token_hash,
            role,
            user_id,
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

    /// The live (not revoked) token with this hash, with its user's state.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let sql = self.sql(
            "SELECT t.id, t.name, t.role, t.host_id, t.user_id, u.name AS user_name, u.role AS user_role, \
             u.disabled_at AS user_disabled_at, t.last_used_at \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = ? AND t.revoked_at IS NULL",
        );
        Ok(on_pool!(self, pool => sqlx::query_as::<_, TokenRow>(&sql).bind(token_hash).fetch_optional(pool).await)?)
    }

    /// Records a use of token `id` at `now` unless one after `unless_after` is recorded already (so that racing
    /// requests write once).
    pub async fn touch_token(&self, id: i64, now: i64, unless_after: i64) -> Result<(), StoreError> {
        let sql = self
            .sql("UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)");
        on_pool!(self, pool => sqlx::query(&sql).bind(now).bind(id).bind(unless_after).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Live tokens in `scope`, oldest first.
    pub async fn list_tokens(&self, scope: TokenScope) -> Result<Vec<TokenListing>, StoreError> {
        let filter = match scope {
            TokenScope::All => "",
            TokenScope::User(_) => " AND t.user_id = ?",
            TokenScope::Token(_) => " AND t.id = ?",
        };
        let query = format!(
            "SELECT t.id, t.name, t.role, u.name AS user, h.server_name AS host, t.created_at, t.last_used_at \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id LEFT JOIN server_list h ON h.id = t.host_id \
             WHERE t.revoked_at IS NULL{filter} ORDER BY t.id"
        );
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => {
            let q = sqlx::query_as::<_, TokenListing>(&sql);
            match scope {
                TokenScope::All => q.fetch_all(pool).await,
                TokenScope::User(id) | TokenScope::Token(id) => q.bind(id).fetch_all(pool).await,
            }
        })?)
    }

    /// The live token `id` with its owner, whatever its owner's state (for revoking).
    pub async fn token_by_id(&self, id: i64) -> Result<Option<TokenRow>, StoreError> {
        let sql = self.sql(
            "SELECT t.id, t.name, t.role, t.host_id, t.user_id, u.name AS user_name, u.role AS user_role, \
             u.disabled_at AS user_disabled_at, t.last_used_at \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.id = ? AND t.revoked_at IS NULL",
        );
        Ok(on_pool!(self, pool => sqlx::query_as::<_, TokenRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// Revokes token `id`. False when it does not exist or is revoked already.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(now_ms()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    pub async fn token_count(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM api_tokens").fetch_one(pool).await)?,
        )
    }
}
