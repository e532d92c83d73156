//! Users' grants as stored: a role and a selector (JSON) per row. What a grant means is `crate::access`'s.

/// The selector of a grant on every host, with every module: what each user is given when created.
pub const EVERYTHING: &str = "{}";

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{insert_id, now_ms, on_pool, Store, StoreError};

/// How long [`Store::grants_of`] shares one read of a user's grants: every request of a scoped caller needs them.
const KEPT_FOR: Duration = Duration::from_secs(1);
/// At most this many users' grants are kept (then the memory starts again).
const KEPT_USERS: usize = 10_000;

/// Users' grants as last read, and a generation every grant write bumps: a read begun before a write is not kept
/// after it.
#[derive(Debug, Clone, Default)]
pub(super) struct KeptGrants(Arc<Mutex<KeptState>>);

#[derive(Debug, Default)]
struct KeptState {
    generation: u64,
    users: HashMap<i64, (Instant, Arc<[GrantRow]>)>,
}

impl KeptGrants {
    fn lock(&self) -> MutexGuard<'_, KeptState> {
        // A cache: a panic cannot leave it wrong, only stale (and the entries expire).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, user_id: i64) -> Result<Arc<[GrantRow]>, u64> {
        let state = self.lock();
        match state.users.get(&user_id) {
            Some((at, rows)) if at.elapsed() < KEPT_FOR => Ok(rows.clone()),
            _ => Err(state.generation),
        }
    }

    fn keep(&self, generation: u64, user_id: i64, rows: Arc<[GrantRow]>) {
        let mut state = self.lock();
        if state.generation == generation {
            if state.users.len() >= KEPT_USERS {
                state.users.clear();
            }
            state.users.insert(user_id, (Instant::now(), rows));
        }
    }

    fn invalidate(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.users.clear();
    }
}

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
    /// A user's grants, oldest first, shared for up to a second: read on every request of a scoped caller. A
    /// grant written through this store drops them at once; one written by another process (the CLI, another
    /// server) is seen within the second.
    pub async fn grants_of(&self, user_id: i64) -> Result<Arc<[GrantRow]>, StoreError> {
        let generation = match self.kept_grants.fresh(user_id) {
            Ok(rows) => return Ok(rows),
            Err(generation) => generation,
        };
        let query = format!("{SELECT_GRANTS} WHERE user_id = ? ORDER BY id");
        let sql = self.sql(&query);
        let rows: Arc<[GrantRow]> =
            on_pool!(self, pool => sqlx::query_as::<_, GrantRow>(&sql).bind(user_id).fetch_all(pool).await)?.into();
        self.kept_grants.keep(generation, user_id, rows.clone());
        Ok(rows)
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
        self.kept_grants.invalidate();
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
        let deleted = on_pool!(self, pool => sqlx::query(&sql).bind(id).bind(user_id).execute(pool).await
            .map(|done| done.rows_affected() > 0))?;
        self.kept_grants.invalidate();
        Ok(deleted)
    }
}
