//! The servers of one database, as stored: a row per serving process (`cluster_nodes`) and the lock that makes
//! its name its own. What a server does with them (heartbeat, the cluster view) is `crate::cluster`'s.
//!
//! The lock is the database's own, held for the process's life and let go by the database when the process dies
//! (no row to clean up after a crash):
//! - PostgreSQL: a session advisory lock per server name, on a connection of its own. Several servers may serve
//!   one database; two may not take one name.
//! - MariaDB/MySQL: `GET_LOCK` on one name per database, on a connection of its own: one server per database
//!   (jobs and audit chains are claimed and locked with PostgreSQL's statements; README says what MariaDB lacks).
//! - SQLite: an exclusive lock on a file beside the database (`<file>-serve.lock`): one server per file.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use sqlx::{Connection, MySqlConnection, PgConnection};

use super::{now_ms, on_pool, Pool, Store, StoreError};

/// A server as registered.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    pub name: String,
    pub address: String,
    pub version: String,
    pub started_at: i64,
    pub last_seen_at: i64,
}

/// Why a server could not take its place.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Another live process serves under that name (PostgreSQL), or serves this database at all (SQLite,
    /// MariaDB).
    #[error("{0}")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lock that makes a server name (or the whole database, but on PostgreSQL) this process's. Dropped, or the
/// process gone, it is free again.
#[derive(Debug)]
pub struct ServeLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// An in-memory SQLite database: no other process can reach it.
    Nothing,
    File(#[allow(dead_code)] std::fs::File),
    MySql(MySqlConnection),
    Postgres(PgConnection),
}

impl ServeLock {
    /// Whether the database still holds the lock: its connection answers. A database restarted meanwhile has
    /// forgotten it: the caller takes it again.
    pub async fn holds(&mut self) -> bool {
        match &mut self.held {
            Held::Nothing | Held::File(_) => true,
            Held::MySql(conn) => conn.ping().await.is_ok(),
            Held::Postgres(conn) => conn.ping().await.is_ok(),
        }
    }
}

/// The advisory-lock key of `what` (PostgreSQL): the first 8 bytes of a hash, so that any name fits.
pub(super) fn advisory_key(what: &str) -> i64 {
    let digest = Sha256::digest(what.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Signals between the servers of one PostgreSQL database (`LISTEN`/`NOTIFY`): small payloads that say where to
/// read, never the data itself. A signal sent while the connection was down is lost; [`Heard::Reconnected`] says
/// so, and the listener reads again what it follows.
pub struct Listener(sqlx::postgres::PgListener);

/// What a [`Listener`] heard.
#[derive(Debug)]
pub enum Heard {
    Signal {
        channel: String,
        payload: String,
    },
    /// The connection was lost and made again: signals may have been missed.
    Reconnected,
}

impl Listener {
    /// The next signal. An error leaves the listener unusable: listen again ([`Store::listen`]).
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        Ok(match self.0.try_recv().await? {
            Some(signal) => {
                Heard::Signal { channel: signal.channel().to_owned(), payload: signal.payload().to_owned() }
            }
            None => Heard::Reconnected,
        })
    }
}

impl Store {
    /// Listens for the signals of `channels`, on a connection of the pool's kept for it. `None` on SQLite and
    /// MariaDB, whose database one server serves: there is nobody else to hear from.
    pub async fn listen(&self, channels: &[&str]) -> Result<Option<Listener>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Some(Listener(listener)))
    }

    /// Takes the lock that lets this process serve as `name` (see the module's comment), or says who holds it.
    pub async fn lock_serving(&self, name: &str) -> Result<ServeLock, JoinError> {
        let held = match &self.pool {
            Pool::Sqlite(_) => match &self.sqlite_file {
                None => Held::Nothing,
                Some(file) => Held::File(lock_file(file)?),
            },
            Pool::MySql(pool) => {
                let mut conn = pool.acquire().await.map_err(StoreError::from)?.detach();
                let got: Option<i64> =
                    sqlx::query_scalar("SELECT GET_LOCK(CONCAT('omserver.serve.', LEFT(SHA1(DATABASE()), 32)), 0)")
                        .fetch_one(&mut conn)
                        .await
                        .map_err(StoreError::from)?;
                if got != Some(1) {
                    return Err(JoinError::Taken(
                        "another omserver serves this MariaDB/MySQL database: only PostgreSQL can be shared by \
                         several servers (see README, 'Several servers')"
                            .to_owned(),
                    ));
                }
                Held::MySql(conn)
            }
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(StoreError::from)?.detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(advisory_key(&format!("omserver serve {name}")))
                    .fetch_one(&mut conn)
                    .await
                    .map_err(StoreError::from)?;
                if !got {
                    return Err(JoinError::Taken(format!(
                        "another server runs as {name} on this database: give each server its own node_name"
                    )));
                }
                Held::Postgres(conn)
            }
        };
        Ok(ServeLock { held })
    }

    /// The lock on work that one server at a time does (`crate::cluster::lead`), if no other server holds it. Only
    /// PostgreSQL is shared: on SQLite and MariaDB this server is the only one, and always gets it.
    pub async fn lock_work(&self, work: &str) -> Result<Option<ServeLock>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(Some(ServeLock { held: Held::Nothing })) };
        let mut conn = pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(advisory_key(&format!("omserver work {work}")))
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(ServeLock { held: Held::Postgres(conn) }))
    }

    /// Registers server `name` (again, after a restart: its row is replaced) as seen now.
    pub async fn register_node(&self, name: &str, address: &str, version: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let delete = self.sql("DELETE FROM cluster_nodes WHERE name = ?");
        let insert = self
            .sql("INSERT INTO cluster_nodes (name, address, version, started_at, last_seen_at) VALUES (?, ?, ?, ?, ?)");
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&delete).bind(name).execute(&mut *tx).await?;
            sqlx::query(&insert).bind(name).bind(address).bind(version).bind(now).bind(now).execute(&mut *tx).await?;
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// Server `name` is alive now. False when its row is gone (an admin removed it): the caller registers again.
    pub async fn heartbeat_node(&self, name: &str) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE cluster_nodes SET last_seen_at = ? WHERE name = ?");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(now_ms()).bind(name).execute(pool).await
            .map(|done| done.rows_affected()))?;
        Ok(done == 1)
    }

    /// Server `name` stopped cleanly: it leaves the list.
    pub async fn remove_node(&self, name: &str) -> Result<(), StoreError> {
        let node = self.sql("DELETE FROM cluster_nodes WHERE name = ?");
        let modules = self.sql("DELETE FROM cluster_modules WHERE node = ?");
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&modules).bind(name).execute(&mut *tx).await?;
            sqlx::query(&node).bind(name).execute(&mut *tx).await?;
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// The modules server `name` serves now, as (file, sha256): replaces what it served before.
    pub async fn record_node_modules(&self, name: &str, modules: &[(String, String)]) -> Result<(), StoreError> {
        let delete = self.sql("DELETE FROM cluster_modules WHERE node = ?");
        let insert = self.sql("INSERT INTO cluster_modules (node, file, sha256) VALUES (?, ?, ?)");
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&delete).bind(name).execute(&mut *tx).await?;
            for (file, sha256) in modules {
                sqlx::query(&insert).bind(name).bind(file).bind(sha256).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// What every listed server serves, as (server, file, sha256).
    pub async fn served_modules(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let sql = "SELECT m.node, m.file, m.sha256 FROM cluster_modules m JOIN cluster_nodes n ON n.name = m.node \
                   ORDER BY m.node";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (String, String, String)>(sql).fetch_all(pool).await)?)
    }

    /// Forgets servers not seen since `before` (ms): gone for good, or renamed.
    pub async fn forget_nodes_before(&self, before: i64) -> Result<u64, StoreError> {
        let nodes = self.sql("DELETE FROM cluster_nodes WHERE last_seen_at < ?");
        let modules = "DELETE FROM cluster_modules WHERE node NOT IN (SELECT name FROM cluster_nodes)";
        Ok(on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let forgotten = sqlx::query(&nodes).bind(before).execute(&mut *tx).await?.rows_affected();
            sqlx::query(modules).execute(&mut *tx).await?;
            tx.commit().await.map(|()| forgotten)
        }
        .await)?)
    }

    /// Every registered server, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let sql = "SELECT name, address, version, started_at, last_seen_at FROM cluster_nodes ORDER BY name";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, NodeRow>(sql).fetch_all(pool).await)?)
    }

    /// The running jobs and the server each runs on, oldest first. Running jobs are few: at most each server's
    /// `max_concurrent_jobs` (read through the status index).
    pub async fn running_jobs_by_node(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT node, id FROM jobs WHERE status = 'running' AND node IS NOT NULL ORDER BY id";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(sql).fetch_all(pool).await)?)
    }
}

/// `<file>-serve.lock`, locked exclusively; a lock held by another process is `Taken`.
fn lock_file(database: &std::path::Path) -> Result<std::fs::File, JoinError> {
    let mut name = database.to_path_buf().into_os_string();
    name.push("-serve.lock");
    let path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Io { what: "the serving lock file beside the database", source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JoinError::Taken(format!(
            "another omserver serves {} (it holds {}): only PostgreSQL can be shared by several servers",
            database.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => {
            Err(StoreError::Io { what: "locking the serving lock file beside the database", source }.into())
        }
    }
}
