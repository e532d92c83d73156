//! Console users. Names reach the database only as a [`UserName`]: trimmed, lower case and checked, so that
//! `Admin` and `admin` are one user on every database (MariaDB's default collation ignores case, SQLite's and
//! PostgreSQL's do not; with one spelling stored, the unique constraint means the same everywhere).

use std::fmt;

use serde::Serialize;

use super::{insert_id, now_ms, on_pool, Store, StoreError};

/// A user name as stored: 1–64 of ASCII letters, digits, `.`, `_`, `-`, in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

/// Why a text is not a user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a user name is 1-64 of letters, digits, '.', '_' or '-'")]
pub struct InvalidUserName;

impl UserName {
    /// Normalises (trims, lower-cases) and checks `text`.
    pub fn parse(text: &str) -> Result<UserName, InvalidUserName> {
        let name = text.trim().to_ascii_lowercase();
        let ok = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(UserName(name))
        } else {
            Err(InvalidUserName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user as stored. The password hash is not serialised: it never leaves the server.
#[derive(Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    #[serde(skip)]
    pub password_hash: String,
    pub role: String,
    /// When the user was disabled; a disabled user can neither log in nor use its tokens.
    pub disabled_at: Option<i64>,
    pub created_at: i64,
}

impl fmt::Debug for UserRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

const SELECT_USERS: &str = "SELECT id, name, password_hash, role, disabled_at, created_at FROM users";

impl Store {
    /// Adds a user. A taken name is a `Conflict`.
    pub async fn insert_user(&self, name: &UserName, password_hash: &str, role: &str) -> Result<UserRow, StoreError> {
        let id = insert_id!(
            self,
            "INSERT INTO users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
            name.as_str(),
            password_hash,
            role,
            now_ms()
        )
        .map_err(|e| StoreError::conflict_or(e, || format!("a user named {:?} exists already", name.as_str())))?;
        // Its role on every host, as every user had before grants: an admin narrows it by replacing this grant.
        // Were this insert to fail, the user would exist with no grant, so reach nothing: the safe side.
        self.insert_grant(id, None, super::grants::EVERYTHING, "created with the user").await?;
        let query = format!("{SELECT_USERS} WHERE id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql).bind(id).fetch_one(pool).await)?)
    }

    pub async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRow>, StoreError> {
        let query = format!("{SELECT_USERS} WHERE name = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool =>
            sqlx::query_as::<_, UserRow>(&sql).bind(name.as_str()).fetch_optional(pool).await)?)
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        let query = format!("{SELECT_USERS} WHERE id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let query = format!("{SELECT_USERS} ORDER BY name");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql).fetch_all(pool).await)?)
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users").fetch_one(pool).await)?)
    }

    /// Replaces a user's password hash and ends its sessions, in one transaction. False when there is no such user.
    pub async fn set_user_password(&self, name: &UserName, password_hash: &str) -> Result<bool, StoreError> {
        let update = self.sql("UPDATE users SET password_hash = ? WHERE name = ?");
        let end = self.sql("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = ?)");
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(&update).bind(password_hash).bind(name.as_str()).execute(&mut *tx).await?;
            sqlx::query(&end).bind(name.as_str()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(changed.rows_affected() > 0)
        })?)
    }

    /// Changes a user's role; sessions and tokens follow at their next request (both are capped by the user's
    /// role when used). False when there is no such user.
    pub async fn set_user_role(&self, name: &UserName, role: &str) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE users SET role = ? WHERE name = ?");
        Ok(on_pool!(self, pool => sqlx::query(&sql).bind(role).bind(name.as_str()).execute(pool).await
            .map(|done| done.rows_affected() > 0))?)
    }

    /// Lets a disabled user log in again (its tokens work again too). False when there is no such user.
    pub async fn enable_user(&self, name: &UserName) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE users SET disabled_at = NULL WHERE name = ?");
        Ok(on_pool!(self, pool => sqlx::query(&sql).bind(name.as_str()).execute(pool).await
            .map(|done| done.rows_affected() > 0))?)
    }

    /// Disables a user and ends its sessions, in one transaction (its tokens are refused from then on, see
    /// [`Store::token_by_hash`]). False when there is no such user; disabling twice keeps the first time.
    pub async fn disable_user(&self, name: &UserName) -> Result<bool, StoreError> {
        let update = self.sql("UPDATE users SET disabled_at = COALESCE(disabled_at, ?) WHERE name = ?");
        let end = self.sql("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = ?)");
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(&update).bind(now_ms()).bind(name.as_str()).execute(&mut *tx).await?;
            sqlx::query(&end).bind(name.as_str()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(found.rows_affected() > 0)
        })?)
    }
}
