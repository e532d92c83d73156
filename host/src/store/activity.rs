//! The activity log as stored: chained rows and the head that says where the chain ends. What a row means and how
//! it is sealed is `crate::activity`'s.

use super::{fetch_bound, on_pool, Bind, Store, StoreError};

/// The `prev_hash` of the first row.
pub const ACTIVITY_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One change, as stored: the record and where it is in the chain.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: i64,
    #[sqlx(flatten)]
    pub entry: NewActivity,
    pub prev_hash: String,
    pub row_hash: String,
}

/// A change to append (the chain's hashes are the store's to fill).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NewActivity {
    pub at: i64,
    pub actor: String,
    pub credential: String,
    pub address: String,
    pub user_agent: String,
    pub action: String,
    pub object: String,
    /// JSON object: each changed field, as `[before, after]`, or the value given.
    pub changes: String,
    pub outcome: String,
}

/// Which rows a listing wants; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct ActivityQuery {
    pub actor: Option<String>,
    /// An action (`user.add`) or its kind (`user`: every `user.…`).
    pub kind: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Rows with an id below this (the next page), newest first.
    pub before: Option<i64>,
    pub limit: i64,
}

const COLUMNS: &str =
    "id, at, actor, credential, address, user_agent, action, object, changes, outcome, prev_hash, row_hash";

/// How often an append retries when another writer (another server) moved the head first.
const APPEND_TRIES: usize = 20;

impl Store {
    /// Appends `entry` to the chain: locks the head, reads it, inserts the row sealed by `seal(prev_hash)` and
    /// moves the head, in one transaction. Taking the head's lock first (a write, on every database) makes writers
    /// wait for each other instead of failing: SQLite cannot turn a read into a write once another writer has
    /// committed, and InnoDB would pick a deadlock victim. The head moves only from the hash read (a writer that
    /// somehow raced rolls back and tries again on the new head). Returns the row's id.
    pub async fn append_activity(&self, entry: &NewActivity, seal: impl Fn(&str) -> String) -> Result<i64, StoreError> {
        let lock = self.sql("UPDATE activity_head SET last_id = last_id WHERE id = 1");
        let head = self.sql("SELECT hash FROM activity_head WHERE id = 1");
        let insert = self.sql(
            "INSERT INTO activity (at, actor, credential, address, user_agent, action, object, changes, outcome, \
             prev_hash, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        // Our own row: rows committed by others since would have moved the head, and the update below fails then.
        let newest = self.sql("SELECT MAX(id) FROM activity");
        let advance = self.sql("UPDATE activity_head SET last_id = ?, hash = ? WHERE id = 1 AND hash = ?");
        for _ in 0..APPEND_TRIES {
            let appended = on_pool!(self, pool => async {
                let mut tx = pool.begin().await?;
                sqlx::query(&lock).execute(&mut *tx).await?;
                let prev: String = sqlx::query_scalar(&head).fetch_one(&mut *tx).await?;
                let hash = seal(&prev);
                sqlx::query(&insert)
                    .bind(entry.at)
                    .bind(&entry.actor)
                    .bind(&entry.credential)
                    .bind(&entry.address)
                    .bind(&entry.user_agent)
                    .bind(&entry.action)
                    .bind(&entry.object)
                    .bind(&entry.changes)
                    .bind(&entry.outcome)
                    .bind(&prev)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
                let id: Option<i64> = sqlx::query_scalar(&newest).fetch_one(&mut *tx).await?;
                let id = id.unwrap_or_default();
                let moved = sqlx::query(&advance).bind(id).bind(&hash).bind(&prev).execute(&mut *tx).await?;
                if moved.rows_affected() == 1 {
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(Some(id))
                } else {
                    tx.rollback().await?;
                    Ok(None)
                }
            }
            .await)?;
            if let Some(id) = appended {
                return Ok(id);
            }
        }
        Err(StoreError::Conflict("the activity log's head kept moving; the change was not recorded".into()))
    }

    /// The head: the newest row's id and hash (0 and the genesis hash while the log is empty).
    pub async fn activity_head(&self) -> Result<(i64, String), StoreError> {
        let sql = self.sql("SELECT last_id, hash FROM activity_head WHERE id = 1");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (i64, String)>(&sql).fetch_one(pool).await)?)
    }

    /// Rows with an id above `after`, oldest first, at most `limit`: the chain in order, for `verify`.
    pub async fn activity_after(&self, after: i64, limit: i64) -> Result<Vec<ActivityRow>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM activity WHERE id > ? ORDER BY id LIMIT ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ActivityRow>(&sql).bind(after).bind(limit)
            .fetch_all(pool).await)?)
    }

    /// The rows `query` selects, newest first.
    pub async fn query_activity(&self, query: &ActivityQuery) -> Result<Vec<ActivityRow>, StoreError> {
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        if let Some(actor) = &query.actor {
            clauses.push("actor = ?");
            binds.push(Bind::Text(actor.clone()));
        }
        if let Some(kind) = &query.kind {
            if kind.contains('.') {
                clauses.push("action = ?");
                binds.push(Bind::Text(kind.clone()));
            } else {
                // `login` is `login` itself and every `login.…`: a prefix range the action index answers.
                clauses.push("(action = ? OR (action >= ? AND action < ?))");
                binds.push(Bind::Text(kind.clone()));
                binds.push(Bind::Text(format!("{kind}.")));
                binds.push(Bind::Text(format!("{kind}/")));
            }
        }
        for (clause, bound) in [("at >= ?", query.from_ms), ("at <= ?", query.to_ms), ("id < ?", query.before)] {
            if let Some(value) = bound {
                clauses.push(clause);
                binds.push(Bind::Int(value));
            }
        }
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        binds.push(Bind::Int(query.limit));
        let query = format!("SELECT {COLUMNS} FROM activity {filter} ORDER BY id DESC LIMIT ?");
        let sql = self.sql(&query);
        Ok(fetch_bound!(self, ActivityRow, &sql, &binds)?)
    }
}
