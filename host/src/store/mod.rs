//! Storage: sqlx over SQLite (the embedded default), MariaDB/MySQL and PostgreSQL.
//!
//! Each dialect has its own migrations folder (`migrations/<dialect>/`), because DDL differs (identity columns,
//! MEDIUMTEXT, foreign keys in MySQL). Queries are written once with `?` placeholders and rewritten to `$n` for
//! PostgreSQL ([`Store::sql`]); [`on_pool!`] runs the same query code against whichever pool is configured, so
//! every query is type-checked against the concrete driver rather than sqlx's `Any` driver (which cannot decode
//! MySQL TEXT columns as strings).
//!
//! **Invariant:** storage knows nothing of HTTP or jobs' execution; it stores and reads rows.

mod activity;
mod alerts;
mod approvals;
mod audit;
mod audit_archive;
mod audit_reader;
mod audit_search;
mod audit_search_probes;
mod audit_sqlite;
mod audit_text;
mod cluster;
mod cluster_jobs;
mod grants;
mod host_set_hints;
mod inventory;
mod jobs;
mod notify;
mod overview;
mod schedules;
mod sessions;
mod templates;
mod throttle;
mod tokens;
mod users;

use std::{borrow::Cow, path::PathBuf, str::FromStr, time::Duration};

use sqlx::{
    mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

pub use activity::{ActivityQuery, ActivityRow, NewActivity, ACTIVITY_GENESIS};
pub use alerts::{AlertRuleRow, NewAlertRule};
pub use approvals::{ApprovalRow, PolicyRow};
pub use audit::{AuditQuery, AuditRow, AuditSink, NewGap, AUDIT_CHANNEL};
pub use audit_archive::ArchivedUpTo;
pub use audit_search::{user_matches, AuditFound, ScanReason, ScanWindow, INDEXED_TERM_CHARS, SCAN_WINDOW};
pub use audit_sqlite::WalSync;
pub use cluster::{Heard, JoinError, Listener, NodeRow, ServeLock};
pub use cluster_jobs::{ClaimedJob, CANCEL_CHANNEL, JOB_CHANNEL, QUEUED_CHANNEL};
pub use grants::GrantRow;
pub use inventory::{host_key, HostRow, NewHost};
pub use jobs::{BatchRow, JobQuery, JobRow, NewJob, ResultRow, JOB_APPROVAL, JOB_FINISHED};
pub use notify::{
    AttemptOutcome, AttemptRow, ChannelRow, DeliveryQuery, DeliveryRow, EventRow, NewDelivery, SubscriptionRow,
};
pub use schedules::{FireRow, NewSchedule, ScheduleRow, SCHEDULE_FIRE};
pub use sessions::SessionRow;
pub use templates::{NewTemplate, TemplateRow};
pub use throttle::FailureRow;
pub use tokens::{TokenListing, TokenRow, TokenScope};
pub use users::{InvalidUserName, UserName, UserRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("database URL must start with sqlite:, mysql:, mariadb: or postgres: (got {0:?})")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// From the audit writer's own SQLite connection.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer omserver: this one would misread what it does not know.
    #[error(
        "the database has migration {0}, which this omserver does not know: a newer omserver upgraded it; run \
         that version (or newer) on every server"
    )]
    NewerSchema(i64),
}

impl StoreError {
    /// SQLite could not get its lock within the busy timeout (another writer held it, e.g. through a disk that
    /// stalled its commits): nothing was written, and the same request can succeed a moment later.
    pub fn is_busy(&self) -> bool {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6); extended codes keep the primary code in their low byte.
        let primary = |code: i32| matches!(code & 0xff, 5 | 6);
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(primary)
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => primary(failure.extended_code),
            _ => false,
        }
    }

    /// Maps a unique-constraint violation to `Conflict(message)`, any other error to `Database`.
    fn conflict_or(err: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
            _ => StoreError::Database(err),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
    Postgres,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool: the body is compiled once per driver.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::MySql($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Fetches every `$row` of a query whose parameters ([`Bind`]s) were collected at run time.
macro_rules! fetch_bound {
    ($store:expr, $row:ty, $sql:expr, $binds:expr) => {
        $crate::store::on_pool!($store, pool => {
            let mut q = sqlx::query_as::<_, $row>($sql);
            for b in $binds {
                q = match b {
                    $crate::store::Bind::Int(v) => q.bind(*v),
                    $crate::store::Bind::Text(v) => q.bind(v.as_str()),
                };
            }
            q.fetch_all(pool).await
        })
    };
}
pub(crate) use fetch_bound;

/// Inserts one row and returns its generated `id` (MySQL has no `RETURNING`).
macro_rules! insert_id {
    ($store:expr, $sql:expr $(, $bind:expr)* $(,)?) => {{
        let sql = $store.sql($sql);
        match &$store.pool {
            $crate::store::Pool::Sqlite(pool) => {
                sqlx::query(&sql)$(.bind($bind))*.execute(pool).await.map(|r| r.last_insert_rowid())
            }
            $crate::store::Pool::MySql(pool) => sqlx::query(&sql)$(.bind($bind))*
                .execute(pool)
                .await
                .map(|r| i64::try_from(r.last_insert_id()).unwrap_or(i64::MAX)),
            $crate::store::Pool::Postgres(pool) => {
                sqlx::query_scalar::<_, i64>(&format!("{sql} RETURNING id"))$(.bind($bind))*.fetch_one(pool).await
            }
        }
    }};
}
pub(crate) use insert_id;

/// The database: a pool for one of the three dialects.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    dialect: Dialect,
    /// The database file when this is an on-disk SQLite database (the audit writer opens its own connection).
    sqlite_file: Option<PathBuf>,
    /// Reads the audit listing's rows on SQLite, when it is a file ([`audit_reader`]).
    audit_reader: Option<std::sync::Arc<audit_reader::AuditReader>>,
    /// The inventory as last read, for grant checks ([`Store::inventory_snapshot`]).
    snapshot: inventory::Snapshot,
    /// What audit searches learned of sets of hosts (how many rows, how deep the newest), kept for a minute.
    host_set_hints: host_set_hints::HostSetHints,
    /// How many rows each trigram has in SQLite's command index, kept 10 minutes ([`Store::fts_match`]).
    trigram_counts: audit_text::TrigramCounts,
    /// Users' grants as last read ([`Store::grants_of`]).
    kept_grants: grants::KeptGrants,
    /// Wakes PostgreSQL's command index keeper after this server's audit commits.
    audit_index_nudge: audit_text::IndexNudge,
}

/// Connections a server keeps to MariaDB or PostgreSQL at most, unless configured (`database_connections`).
pub const DEFAULT_CONNECTIONS: u32 = 16;
/// The fewest a server works with: on PostgreSQL two are kept listening (the audit stream, job signals), the audit
/// writer holds one through each group and reads with another, and requests need at least two. (Held advisory
/// locks are taken out of the pool: they are not counted.)
pub const MIN_CONNECTIONS: u32 = 6;

impl Store {
    /// Connects to `url` with at most [`DEFAULT_CONNECTIONS`] and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, DEFAULT_CONNECTIONS).await
    }

    /// Connects to `url` with at most `connections` (MariaDB, PostgreSQL) and applies pending migrations.
    pub async fn connect_with(url: &str, connections: u32) -> Result<Store, StoreError> {
        let store = Store::connect_without_migrating(url, connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_without_migrating(url: &str, connections: u32) -> Result<Store, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        // Short: when the database is down, requests should fail fast with 503 (agents keep their events and
        // retry) rather than hang past their clients' timeouts.
        let acquire = Duration::from_secs(2);
        let mut sqlite_file = None;
        let (pool, dialect) = match scheme {
            "sqlite" => {
                sqlite_without_memstatus();
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a committed row survives power loss, not only a crash of this process.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    // Multi-row inserts into tables with UNIQUE constraints keep a statement journal; in memory, not
                    // in a temporary file (measured: a fifth of the audit writer's time).
                    .pragma("temp_store", "memory")
                    .busy_timeout(Duration::from_secs(5));
                // sqlx does not say whether options are in memory; its URL forms for that are these two.
                if !url.contains(":memory:") && !url.contains("mode=memory") {
                    let file = options.get_filename().to_path_buf();
                    keep_private(&file)?;
                    sqlite_file = Some(file);
                }
                let pool = SqlitePoolOptions::new().acquire_timeout(acquire).connect_with(options).await?;
                if let Some(file) = &sqlite_file {
                    // SQLite gives -wal and -shm the database file's mode; tighten any left from an older start.
                    for suffix in ["-wal", "-shm"] {
                        let mut name = file.clone().into_os_string();
                        name.push(suffix);
                        keep_private(std::path::Path::new(&name))?;
                    }
                }
                (Pool::Sqlite(pool), Dialect::Sqlite)
            }
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let options = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4");
                let pool = MySqlPoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(acquire)
                    .connect_with(options)
                    .await?;
                (Pool::MySql(pool), Dialect::MySql)
            }
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(acquire)
                    .connect_with(options)
                    .await?;
                (Pool::Postgres(pool), Dialect::Postgres)
            }
            _ => return Err(StoreError::UnsupportedUrl(url.to_owned())),
        };
        Ok(Store {
            pool,
            dialect,
            audit_reader: sqlite_file.clone().map(|file| std::sync::Arc::new(audit_reader::AuditReader::new(file))),
            sqlite_file,
            snapshot: inventory::Snapshot::default(),
            host_set_hints: host_set_hints::HostSetHints::default(),
            trigram_counts: audit_text::TrigramCounts::default(),
            kept_grants: grants::KeptGrants::default(),
            audit_index_nudge: audit_text::IndexNudge::default(),
        })
    }

    /// Applies what is pending. sqlx takes the database's own lock around it on PostgreSQL
    /// (`pg_advisory_lock`) and MariaDB (`GET_LOCK`), so servers starting together migrate once; a migration
    /// applied that this binary does not have is [`StoreError::NewerSchema`].
    async fn migrate(&self) -> Result<(), StoreError> {
        let done = match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await,
            Pool::MySql(pool) => sqlx::migrate!("../migrations/mysql").run(pool).await,
            Pool::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await,
        };
        match done {
            Err(sqlx::migrate::MigrateError::VersionMissing(version)) => Err(StoreError::NewerSchema(version)),
            done => Ok(done?),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// SQL for the 1-based position of a `?` parameter in `column` (0 when absent, NULL when the column is),
    /// comparing bytes exactly in every dialect.
    fn position(&self, column: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("instr({column}, ?)"),
            Dialect::MySql => format!("LOCATE(CAST(? AS BINARY), {column})"),
            Dialect::Postgres => format!("strpos({column}, ?)"),
        }
    }

    /// SQL for `column` equal to a `?` parameter byte for byte (MariaDB's default collation ignores case).
    fn equals(&self, column: &str) -> String {
        match self.dialect {
            Dialect::MySql => format!("{column} = CAST(? AS BINARY)"),
            Dialect::Sqlite | Dialect::Postgres => format!("{column} = ?"),
        }
    }

    /// Rewrites `?` placeholders to `$1, $2, …` for PostgreSQL. Queries here never put `?` inside literals.
    fn sql<'a>(&self, query: &'a str) -> Cow<'a, str> {
        if self.dialect != Dialect::Postgres || !query.contains('?') {
            return Cow::Borrowed(query);
        }
        let mut out = String::with_capacity(query.len() + 8);
        let mut n = 0;
        for c in query.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }
}

/// A parameter of a query whose filters are built at run time.
#[derive(Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

/// Makes a database file readable by the server's user only, creating it so when missing: it holds token
/// hashes, audit rows and job output, and module workers running as `module_user` must not read it.
fn keep_private(file: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file);
    match created {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        // A missing directory and the like: let SQLite report it in its own words.
        Err(_) => return Ok(()),
    }
    let mode = std::fs::metadata(file).map(|m| m.permissions().mode()).unwrap_or(0);
    if mode & 0o077 != 0 {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|source| StoreError::Io { what: "making the database file private (chmod 600)", source })?;
    }
    Ok(())
}

/// SQLite keeps allocation statistics behind a global mutex unless told not to; nothing here reads them, and
/// that mutex was 7 % of the audit writer's time (perf, BENCHMARKS.md). Only possible before SQLite initialises,
/// so it runs before this process's first SQLite connection.
fn sqlite_without_memstatus() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config must not run concurrently with other SQLite calls: the Once makes every
        // connection that this module opens wait for it, and nothing else in the server opens SQLite. Called
        // after initialisation it returns SQLITE_MISUSE and changes nothing.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
        }
    });
}

/// Milliseconds since the Unix epoch: the one time format in every table.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn placeholders_follow_the_dialect() {
        let store = Store::connect("sqlite::memory:").await.expect("in-memory sqlite");
        assert_eq!(store.sql("SELECT ? , ?"), "SELECT ? , ?");
        let pg = Store { dialect: Dialect::Postgres, ..store };
        assert_eq!(pg.sql("UPDATE t SET a = ? WHERE id = ?"), "UPDATE t SET a = $1 WHERE id = $2");
    }

    #[tokio::test]
    async fn unknown_scheme_is_refused() {
        let err = Store::connect("oracle://x").await.expect_err("not a supported database");
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
    }

    /// A write that finds another connection holding SQLite's write lock is "busy", through sqlx and through
    /// rusqlite (the audit writer's own connection), and nothing else is.
    #[tokio::test]
    async fn a_write_blocked_by_another_writer_is_busy() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("busy.db");
        let holder = rusqlite::Connection::open(&path).expect("open");
        holder.execute_batch("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);").expect("lock");
        let other = rusqlite::Connection::open(&path).expect("open");
        other.busy_timeout(Duration::ZERO).expect("busy timeout");
        let err = other.execute("INSERT INTO t VALUES (2)", []).expect_err("the lock is held");
        assert!(StoreError::Sqlite(err).is_busy());
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::ZERO);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
        let err = sqlx::query("INSERT INTO t VALUES (3)").execute(&mut conn).await.expect_err("the lock is held");
        assert!(StoreError::Database(err).is_busy());
        let err = sqlx::query("INSERT INTO missing VALUES (3)").execute(&mut conn).await.expect_err("no table");
        assert!(!StoreError::Database(err).is_busy());
        assert!(!StoreError::Conflict("taken".into()).is_busy());
    }
}
