//! A release `omserver` started as its own process for a benchmark: a temporary directory, SQLite, module 1003
//! installed, the configuration given, stopped when dropped; and what the benchmarks share besides: percentiles,
//! and headless Chromium logged in to the console. Shared by the benchmark examples through
//! `#[path = "common/bench_server.rs"] mod bench_server;`.

// Each example uses a different part.
#![allow(dead_code)]

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

type Error = Box<dyn std::error::Error>;

/// One running server.
pub struct BenchServer {
    child: Child,
    pub base: String,
    /// The first-start admin token.
    pub token: String,
    /// The first-start password of the user `admin`.
    pub admin_password: String,
    dir: tempfile::TempDir,
}

impl BenchServer {
    /// Starts `program` with module 1003 from `module` and `extra_config` after the basics, on a new SQLite file;
    /// returns once it listens (30 s at most; else the error carries its log).
    pub fn start(program: &Path, module: &Path, extra_config: &str) -> Result<BenchServer, Error> {
        BenchServer::start_with(program, module, None, extra_config)
    }

    /// As [`BenchServer::start`], on the database at `database_url`.
    pub fn start_on(
        program: &Path,
        module: &Path,
        database_url: &str,
        extra_config: &str,
    ) -> Result<BenchServer, Error> {
        BenchServer::start_with(program, module, Some(database_url), extra_config)
    }

    fn start_with(
        program: &Path,
        module: &Path,
        database_url: Option<&str>,
        extra_config: &str,
    ) -> Result<BenchServer, Error> {
        let dir = tempfile::tempdir()?;
        let plugins = dir.path().join("plugins.d");
        fs::create_dir_all(&plugins)?;
        fs::create_dir_all(dir.path().join("files"))?;
        // Through a temporary name and a rename, as every deployer must.
        fs::copy(module, plugins.join(".Mid_1003.so.tmp"))?;
        fs::rename(plugins.join(".Mid_1003.so.tmp"), plugins.join("Mid_1003.so"))?;
        let database_url = match database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.path().join("omserver.db").display()),
        };
        let config = format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\nplugins_dir = \"{}\"\nstate_dir = \"{}\"\n\
             files_dir = \"{}\"\n{extra_config}\n",
            plugins.display(),
            dir.path().join("state").display(),
            dir.path().join("files").display(),
        );
        let config_path = dir.path().join("omserver.toml");
        fs::write(&config_path, config)?;
        let mut child = Command::new(program)
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .env_remove("AUTO_PLATFORM")
            .env_remove("SECRET_KEY")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("server.log"))?)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut token, mut base, mut admin_password) = (String::new(), String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while base.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|_| {
                let log = fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                format!("{} did not start; its log:\n{log}", program.display())
            })?;
            if let Some(t) = line.trim().strip_prefix("oms_") {
                token = format!("oms_{t}");
            } else if let Some(password) = line.strip_prefix("admin password: ") {
                admin_password = password.trim().to_owned();
            } else if let Some(url) = line.strip_prefix("omserver listening on ") {
                base = url.trim().to_owned();
            }
        }
        Ok(BenchServer { child, base, token, admin_password, dir })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's directory: its configuration, `omserver.db` (SQLite), `plugins.d/`, `server.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's configuration file, for CLI commands on the same database.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("omserver.toml")
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The errors of [`Api`]: `Send`, for benchmarks that spawn tasks.
pub type ApiError = Box<dyn std::error::Error + Send + Sync>;

/// The JSON API of a server, as one caller (a bearer token).
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    /// One call; a status other than 2xx is an error naming the path, the status and the body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            return Err(format!("{path}: {status} {value}").into());
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ApiError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, ApiError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Runs `omserver --config CONFIG ARGS…` (a CLI command on a running server's database) and returns its
/// standard output; an error carries its standard error.
pub async fn run_cli(binary: &Path, config: &Path, args: &[&str]) -> Result<String, ApiError> {
    let out = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!("omserver {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where `TEST_POSTGRES_URL` is not set: the admin URL the test suite uses too.
const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

/// Runs a benchmark's fill, statement by statement, printing how long each took.
pub async fn fill<C: sqlx::Connection>(conn: &mut C, statements: &[String]) -> Result<(), String>
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    for statement in statements {
        let started = Instant::now();
        sqlx::Executor::execute(&mut *conn, statement.as_str()).await.map_err(|e| format!("{statement}: {e}"))?;
        let head: String = statement.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
        println!("  fill: {head} … {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// A new SQLite file at `path`, migrated, and a connection to fill it that commits without waiting for the disk
/// (the server opens the file with its own settings). Returns its URL and that connection.
pub async fn fresh_sqlite(path: &Path) -> Result<(String, sqlx::SqliteConnection), String> {
    let url = format!("sqlite://{}", path.display());
    omserver::store::Store::connect(&url).await.map_err(|e| format!("{url}: {e}"))?.close().await;
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("{url}?mode=rw"))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    sqlx::Executor::execute(&mut conn, "PRAGMA synchronous = OFF").await.map_err(|e| e.to_string())?;
    Ok((url, conn))
}

/// A new PostgreSQL database `name` (dropped first if it exists), migrated, on the server of `TEST_POSTGRES_URL`
/// (or the local default). Returns its URL and the admin URL, to drop it with [`drop_postgres`].
pub async fn fresh_postgres(name: &str) -> Result<(String, String), String> {
    let admin = postgres_admin();
    drop_postgres(&admin, name).await?;
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.map_err(|e| format!("{admin}: {e}"))?;
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await.map_err(|e| e.to_string())?;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return Err(format!("{admin}: no database in the URL")),
    };
    omserver::store::Store::connect(&url).await.map_err(|e| format!("{url}: {e}"))?.close().await;
    Ok((url, admin))
}

/// The admin URL of the PostgreSQL server: `TEST_POSTGRES_URL`, or the local default.
pub fn postgres_admin() -> String {
    std::env::var("TEST_POSTGRES_URL").ok().filter(|v| !v.is_empty()).unwrap_or(POSTGRES_ADMIN.into())
}

/// Drops the PostgreSQL database `name`, if it exists, through the admin URL.
pub async fn drop_postgres(admin: &str, name: &str) -> Result<(), String> {
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(admin).await.map_err(|e| format!("{admin}: {e}"))?;
    sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The admin URL of the MariaDB/MySQL server: `TEST_MYSQL_URL`, or the local default.
pub fn mariadb_admin() -> String {
    std::env::var("TEST_MYSQL_URL").ok().filter(|v| !v.is_empty()).unwrap_or(MARIADB_ADMIN.into())
}

/// A new MariaDB/MySQL database `name` (dropped first if it exists), migrated, on the server of `TEST_MYSQL_URL`
/// (or the local default). Returns its URL and the admin URL, to drop it with [`drop_mariadb`].
pub async fn fresh_mariadb(name: &str) -> Result<(String, String), String> {
    let admin = mariadb_admin();
    drop_mariadb(&admin, name).await?;
    let mut conn =
        <sqlx::MySqlConnection as sqlx::Connection>::connect(&admin).await.map_err(|e| format!("{admin}: {e}"))?;
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await.map_err(|e| e.to_string())?;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return Err(format!("{admin}: no database in the URL")),
    };
    omserver::store::Store::connect(&url).await.map_err(|e| format!("{url}: {e}"))?.close().await;
    Ok((url, admin))
}

/// Drops the MariaDB/MySQL database `name`, if it exists, through the admin URL.
pub async fn drop_mariadb(admin: &str, name: &str) -> Result<(), String> {
    let mut conn =
        <sqlx::MySqlConnection as sqlx::Connection>::connect(admin).await.map_err(|e| format!("{admin}: {e}"))?;
    sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The value at fraction `p` (0.5: the median) of `sorted`, by nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Headless Chromium (`binary`) through the WebDriver at `webdriver`, with a new profile in `profile`, logged in to
/// the console at `base` as `admin`. Background networking is off: this machine refuses those connections.
pub async fn chromium_logged_in(
    webdriver: &str,
    binary: &str,
    profile: &Path,
    base: &str,
    password: &str,
) -> Result<fantoccini::Client, Error> {
    use fantoccini::Locator;
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,800",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": binary, "args": args }));
    let browser = fantoccini::ClientBuilder::rustls()?.capabilities(caps).connect(webdriver).await?;
    browser.goto(&format!("{base}/login")).await?;
    browser.find(Locator::Css("#name")).await?.send_keys("admin").await?;
    browser.find(Locator::Css("#password")).await?.send_keys(password).await?;
    browser.find(Locator::Css("form button[type=submit]")).await?.click().await?;
    browser.wait().for_element(Locator::Css("header.top")).await?;
    Ok(browser)
}
