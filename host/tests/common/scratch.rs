//! Fresh databases for tests: a temporary SQLite file, or a new database on the MariaDB/MySQL or PostgreSQL
//! server, dropped afterwards. The servers must be running; an unreachable one fails the test (never skips it).
//! Admin URLs come from `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`) and `TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::{future::Future, time::Duration};

use omserver::store::{Dialect, Store};
use sqlx::Connection;
use tempfile::TempDir;

/// A database created for one check: where it lives and how to get rid of it.
pub struct Scratch {
    pub dialect: Dialect,
    /// The URL of the new database.
    pub url: String,
    /// The admin URL and database name, for the servers; `None` for SQLite (a file in `_dir`).
    pub server: Option<(String, String)>,
    _dir: Option<TempDir>,
}

pub fn admin_url(dialect: Dialect) -> String {
    let (var, default) = match dialect {
        Dialect::MySql => ("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        Dialect::Postgres => ("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        Dialect::Sqlite => unreachable!("SQLite needs no server"),
    };
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// `url` with its database (the path) replaced by `name`, keeping credentials, host and query.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[authority_start..].find('/').map(|i| authority_start + i).unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..authority_end])
}

pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);

impl Scratch {
    pub async fn create(dialect: Dialect) -> Scratch {
        if dialect == Dialect::Sqlite {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("omserver.db").display());
            return Scratch { dialect, url, server: None, _dir: Some(dir) };
        }
        let admin = admin_url(dialect);
        let name = format!("omstest_{:016x}", rand::random::<u64>());
        let create = format!("CREATE DATABASE {name}");
        match dialect {
            Dialect::MySql => {
                let mut conn = admin_connect::<sqlx::MySqlConnection>("MariaDB/MySQL", "TEST_MYSQL_URL", &admin).await;
                sqlx::query(&create).execute(&mut conn).await.unwrap_or_else(|e| panic!("{create}: {e}"));
                let _ = conn.close().await;
            }
            Dialect::Postgres => {
                let mut conn = admin_connect::<sqlx::PgConnection>("PostgreSQL", "TEST_POSTGRES_URL", &admin).await;
                sqlx::query(&create).execute(&mut conn).await.unwrap_or_else(|e| panic!("{create}: {e}"));
                let _ = conn.close().await;
            }
            Dialect::Sqlite => unreachable!(),
        }
        Scratch { dialect, url: with_database(&admin, &name), server: Some((admin, name)), _dir: None }
    }

    /// Drops the database. Best effort: a failure here is reported, not fatal.
    pub async fn drop_database(self) {
        let Some((admin, name)) = self.server else { return };
        let outcome = match self.dialect {
            Dialect::MySql => match sqlx::MySqlConnection::connect(&admin).await {
                Ok(mut conn) => {
                    let done = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut conn).await;
                    let _ = conn.close().await;
                    done.map(|_| ())
                }
                Err(e) => Err(e),
            },
            Dialect::Postgres => match sqlx::PgConnection::connect(&admin).await {
                Ok(mut conn) => {
                    // FORCE: a pool connection still closing must not keep the database alive.
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let done = sqlx::query(&sql).execute(&mut conn).await;
                    let _ = conn.close().await;
                    done.map(|_| ())
                }
                Err(e) => Err(e),
            },
            Dialect::Sqlite => Ok(()),
        };
        if let Err(e) = outcome {
            eprintln!("warning: could not drop test database {name}: {e}");
        }
    }
}

pub async fn admin_connect<C: Connection>(server: &str, var: &str, url: &str) -> C {
    match tokio::time::timeout(CONNECT_LIMIT, C::connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            panic!("cannot connect to {server} at {url} ({e}); the database tests need it running (set {var})")
        }
        Err(_) => {
            panic!("{server} at {url} did not answer in {CONNECT_LIMIT:?}; the database tests need it (set {var})")
        }
    }
}

/// Runs `check(dialect, url)` on a fresh database of each dialect (SQLite, MariaDB/MySQL, PostgreSQL), dropping
/// each afterwards. Every dialect runs even when an earlier one fails; then the test fails naming each failure.
pub async fn on_each_dialect<F, Fut>(check: F)
where
    F: Fn(Dialect, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;

    let mut failures = Vec::new();
    for dialect in [Dialect::Sqlite, Dialect::MySql, Dialect::Postgres] {
        let outcome = AssertUnwindSafe(async {
            let scratch = Scratch::create(dialect).await;
            let run = AssertUnwindSafe(check(dialect, scratch.url.clone())).catch_unwind().await;
            scratch.drop_database().await;
            if let Err(panic) = run {
                std::panic::resume_unwind(panic);
            }
        })
        .catch_unwind()
        .await;
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".to_owned());
            failures.push(format!("{dialect:?}: {message}"));
        }
    }
    assert!(failures.is_empty(), "failed on {} of 3 dialects:\n{}", failures.len(), failures.join("\n"));
}

/// Runs `sql` (no parameters) on a plain connection, outside the store, as an intruder with database access
/// would; returns the rows changed.
pub async fn execute(dialect: Dialect, url: &str, sql: &str) -> u64 {
    let done = match dialect {
        Dialect::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected())
        }
        Dialect::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected())
        }
        Dialect::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected())
        }
    };
    done.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A host with a name and an address and nothing else, for tests that talk to a store directly.
pub fn plain_host(name: &str, ip: &str) -> omserver::store::NewHost {
    omserver::store::NewHost {
        name: name.into(),
        ip: ip.into(),
        wan_ip: None,
        op: None,
        category: None,
        port: None,
        user: None,
        tags: vec![],
    }
}

/// A fresh, migrated database of one dialect, handed to each check.
#[derive(Clone)]
pub struct Db {
    pub dialect: Dialect,
    /// The URL of this database (not the admin one).
    pub url: String,
    pub store: Store,
}

/// Runs `check` once per dialect, each on a fresh migrated database (see [`on_each_dialect`]).
pub async fn for_each_dialect<F, Fut>(check: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    on_each_dialect(|dialect, url| {
        let check = &check;
        async move {
            let store = tokio::time::timeout(CONNECT_LIMIT * 3, Store::connect(&url))
                .await
                .unwrap_or_else(|_| panic!("Store::connect({url}) did not finish"))
                .unwrap_or_else(|e| panic!("Store::connect({url}): {e}"));
            assert_eq!(store.dialect(), dialect);
            check(Db { dialect, url: url.clone(), store: store.clone() }).await;
            store.close().await;
        }
    })
    .await;
}

/// A queued job of module 1003 on `localhost` and `web1`, run by this server (`test-node`), for tests that talk to
/// a store directly; change what a test needs with `NewJob { …, ..plain_job(by) }`.
pub fn plain_job(created_by: &str) -> omserver::store::NewJob<'_> {
    omserver::store::NewJob {
        module_id: 1003,
        module_version: "1.0.0",
        backend: "local",
        params: r#"{"lines":5}"#,
        hosts: r#"["localhost","web1"]"#,
        created_by,
        rollout: None,
        rerun_of: None,
        template_id: None,
        definition: None,
        pending_approval: false,
        node: Some("test-node"),
        module_sha256: "0",
    }
}
