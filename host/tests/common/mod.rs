//! Test support: runs the real `omserver` binary on a port-0 listener with its own directory and database, and
//! talks to it over HTTP. Module libraries come from `cargo xtask test` (which builds them first).
#![allow(dead_code)] // each test file uses a different part

pub mod agents;
pub mod balancer;
pub mod browser;
pub mod cluster;
pub mod console;
pub mod database;
pub mod netfault;
pub mod notifying;
pub mod receiver;
pub mod scratch;
pub mod testenv;

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use reqwest::{blocking::Client, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The cargo target directory (integration tests get `target/tmp` as CARGO_TARGET_TMPDIR).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").to_path_buf()
}

/// A seed module built and staged by `cargo xtask test`, e.g. `seed_module(1003)`.
pub fn seed_module(id: u32) -> PathBuf {
    artifact(&target_dir().join("plugins").join(format!("Mid_{id}.so")))
}

/// A test fixture built by `cargo xtask fixtures`, e.g. `fixture("fx_panic")`.
pub fn fixture(name: &str) -> PathBuf {
    artifact(&target_dir().join("fixtures").join(format!("{name}.so")))
}

fn artifact(path: &Path) -> PathBuf {
    assert!(path.exists(), "{} is missing: run the tests with `cargo xtask test`, which builds it", path.display());
    path.to_path_buf()
}

pub struct Server {
    child: Child,
    pub base: String,
    pub token: String,
    /// The generated password of the console user `admin`, printed at first start.
    pub admin_password: String,
    pub dir: TempDir,
    pub client: Client,
    /// Lines the server printed on stdout after start-up.
    stdout: mpsc::Receiver<String>,
    env: Vec<(String, String)>,
}

/// How to start a server.
pub struct Options {
    /// Extra TOML appended to the generated configuration (e.g. `job_timeout_secs = 2`).
    pub extra_config: String,
    /// Seed modules to install into plugins.d before start.
    pub seed: Vec<u32>,
    /// Database URL; `None` for SQLite in the server's directory.
    pub database_url: Option<String>,
    /// Extra environment variables for the server process (kept across [`Server::restart`]).
    pub env: Vec<(String, String)>,
    /// Other libraries to install into plugins.d before start: (file, name in plugins.d).
    pub libraries: Vec<(PathBuf, String)>,
    /// The address to listen on (port 0); `None` for 127.0.0.1. The network-fault tests listen where their
    /// namespaced hosts can reach the server.
    pub listen_address: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra_config: String::new(),
            seed: vec![1003],
            database_url: None,
            env: Vec::new(),
            libraries: Vec::new(),
            listen_address: None,
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = dir.path().join("plugins.d");
        fs::create_dir_all(&plugins).unwrap();
        fs::create_dir_all(dir.path().join("files")).unwrap();
        for id in &options.seed {
            install(&seed_module(*id), &plugins, &format!("Mid_{id}.so"));
        }
        for (file, name) in &options.libraries {
            install(file, &plugins, name);
        }
        let database_url =
            options.database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("omserver.db").display()));
        let listen = options.listen_address.as_deref().unwrap_or("127.0.0.1");
        let config = format!(
            "listen = \"{listen}:0\"\ndatabase_url = \"{database_url}\"\nplugins_dir = \"{}\"\nstate_dir = \"{}\"\n\
             files_dir = \"{}\"\n{}\n",
            plugins.display(),
            dir.path().join("state").display(),
            dir.path().join("files").display(),
            options.extra_config
        );
        let config_path = dir.path().join("omserver.toml");
        fs::write(&config_path, config).unwrap();
        // As a careful operator keeps it (it may hold database credentials); with `module_user` set the server
        // refuses a configuration that others can read.
        fs::set_permissions(&config_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        Server::spawn(dir, &config_path, options.env)
    }

    fn spawn(dir: TempDir, config_path: &Path, env: Vec<(String, String)>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_omserver"))
            .args(["--config", config_path.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "info,sqlx=warn")
            .env_remove("AUTO_PLATFORM")
            .env_remove("SECRET_KEY")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("start omserver");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut token, mut base, mut admin_password) = (String::new(), String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while base.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let log = fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("omserver did not start; its log:\n{log}")
            });
            if let Some(t) = line.trim().strip_prefix("oms_") {
                token = format!("oms_{t}");
            }
            if let Some(password) = line.strip_prefix("admin password: ") {
                admin_password = password.to_owned();
            }
            if let Some(url) = line.strip_prefix("omserver listening on ") {
                base = url.to_owned();
            }
        }
        let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Server { child, base, token, admin_password, dir, client, stdout: rx, env }
    }

    /// The server's configuration file; [`Server::restart`] reads it again.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("omserver.toml")
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins.d")
    }

    pub fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the server process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token))
    }

    pub fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body))
    }

    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().expect("request reaches the server");
        let status = response.status();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Limits user `name` to `grant`: adds it, then removes the grant on everything the user was created with.
    pub fn narrow(&self, name: &str, grant: &Value) {
        let (status, grants) = self.get(&format!("/api/users/{name}/grants"));
        assert_eq!(status, StatusCode::OK, "{grants}");
        let (status, body) = self.post(&format!("/api/users/{name}/grants"), grant);
        assert_eq!(status, StatusCode::CREATED, "{grant} → {body}");
        for old in grants.as_array().unwrap() {
            let path = format!("{}/api/users/{name}/grants/{}", self.base, old["id"]);
            let (status, body) = self.send(self.client.delete(path).bearer_auth(&self.token));
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }

    /// The modules listing entry for `file`, if listed.
    pub fn module_entry(&self, file: &str) -> Option<Value> {
        let (status, list) = self.get("/api/modules");
        assert_eq!(status, StatusCode::OK, "{list}");
        list.as_array().unwrap().iter().find(|m| m["file"] == file).cloned()
    }

    /// Polls the listing until `check` holds for `file`'s entry (or its absence); returns how long it took.
    pub fn wait_for_module(&self, file: &str, limit: Duration, check: impl Fn(Option<&Value>) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let entry = self.module_entry(file);
            if check(entry.as_ref()) {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "{file} did not reach the expected state in {limit:?}: {entry:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Submits a job and returns its id; panics unless it was accepted.
    pub fn submit(&self, module: u32, hosts: &[&str], params: Value) -> i64 {
        let (status, body) = self.post("/api/jobs", &json!({ "module": module, "hosts": hosts, "params": params }));
        assert_eq!(status, StatusCode::ACCEPTED, "job not accepted: {body}");
        body["id"].as_i64().unwrap()
    }

    /// Waits until job `id` has finished and returns it.
    pub fn wait_job(&self, id: i64, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, job) = self.get(&format!("/api/jobs/{id}"));
            assert_eq!(status, StatusCode::OK, "{job}");
            if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                return job;
            }
            assert!(started.elapsed() < limit, "job {id} still {} after {limit:?}", job["status"]);
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens `GET /api/jobs/{id}/events` and returns a reader of its events (in a thread of its own).
    pub fn job_events(&self, id: i64) -> EventReader {
        let url = format!("{}/api/jobs/{id}/events", self.base);
        let token = self.token.clone();
        let (tx, rx) = mpsc::channel();
        let opened = Instant::now();
        thread::spawn(move || {
            // No overall timeout: the stream lasts as long as the job; the reader bounds its own waits.
            let client = Client::builder().timeout(None).build().expect("client");
            let response = match client.get(url).bearer_auth(token).send() {
                Ok(r) => r,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            if !response.status().is_success() {
                let status = response.status();
                return drop(tx.send(Err(format!("{status}: {}", response.text().unwrap_or_default()))));
            }
            let (mut event, mut data) = (String::new(), String::new());
            for line in BufReader::new(response).lines().map_while(Result::ok) {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(chunk) = line.strip_prefix("data:") {
                    data.push_str(chunk.strip_prefix(' ').unwrap_or(chunk));
                } else if line.is_empty() && !event.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                    let seen = JobEventSeen {
                        event: event.clone(),
                        data: value,
                        at: opened.elapsed(),
                        received: SystemTime::now(),
                    };
                    if tx.send(Ok(seen)).is_err() {
                        return;
                    }
                    event.clear();
                    data.clear();
                }
            }
        });
        EventReader { rx }
    }

    /// Submits a job and waits for it.
    pub fn run_job(&self, module: u32, hosts: &[&str], params: Value) -> Value {
        let id = self.submit(module, hosts, params);
        self.wait_job(id, Duration::from_secs(60))
    }
}

/// One server-sent event of a job's stream, and when it arrived (since the stream was opened).
#[derive(Debug, Clone)]
pub struct JobEventSeen {
    pub event: String,
    pub data: Value,
    pub at: Duration,
    /// The wall clock then, to compare with a browser's (one machine, one clock).
    pub received: SystemTime,
}

pub struct EventReader {
    rx: mpsc::Receiver<Result<JobEventSeen, String>>,
}

impl EventReader {
    /// Every event up to and including `end`; panics if `end` has not come within `limit`.
    pub fn until_end(&self, limit: Duration) -> Vec<JobEventSeen> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok(e)) => {
                    let end = e.event == "end";
                    seen.push(e);
                    if end {
                        return seen;
                    }
                }
                Ok(Err(problem)) => panic!("job events: {problem}"),
                Err(_) => panic!("no `end` event within {limit:?}; seen: {seen:?}"),
            }
        }
    }

    /// The next event, waiting at most `limit`.
    pub fn next(&self, limit: Duration) -> Option<JobEventSeen> {
        match self.rx.recv_timeout(limit) {
            Ok(Ok(e)) => Some(e),
            Ok(Err(problem)) => panic!("job events: {problem}"),
            Err(_) => None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs a library the way deployers must: a temporary name in the same directory, then a rename.
pub fn install(from: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::copy(from, &tmp).expect("copy library");
    fs::rename(&tmp, dir.join(name)).expect("rename library into place");
}

/// What one run of the command line printed, and how it ended.
#[derive(Debug)]
pub struct CliOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `omserver --config <server's configuration> ARGS…` to completion (at most 60 s) and returns its output.
/// It shares the server's database, state directory (secret key) and plugins.d.
pub fn cli(server: &Server, args: &[&str]) -> CliOutput {
    cli_with_input(server, args, None)
}

/// [`cli`] with `input` written to the command's standard input (a pipe, not a terminal), then closed.
pub fn cli_with_input(server: &Server, args: &[&str], input: Option<&str>) -> CliOutput {
    use std::io::{Read, Write};
    let config = server.dir.path().join("omserver.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_omserver"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("AUTO_PLATFORM")
        .env_remove("SECRET_KEY")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the omserver command line");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).expect("write the command's standard input");
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command line") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`omserver {}` did not finish in 60 s", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    CliOutput { status, stdout, stderr }
}

impl Server {
    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the base URL ends with a port")
    }

    /// Kills the server with SIGKILL, as a crash or the OOM killer would: no graceful shutdown, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) if it runs and starts it again on the same directory, configuration, database
    /// and port: the port it got at first start is written into the configuration in place of port 0, so clients
    /// keep their address. The log of each earlier run is kept as `server.log.<n>` (see [`Server::logs`]); the
    /// admin token stays valid and is kept.
    pub fn restart(&mut self) {
        self.kill();
        let config_path = self.dir.path().join("omserver.toml");
        let config = fs::read_to_string(&config_path).expect("read the server's configuration");
        let authority = self.base.split_once("://").map_or(self.base.as_str(), |(_, rest)| rest);
        let address = authority.rsplit_once(':').map_or("127.0.0.1", |(address, _)| address);
        let pinned = format!("listen = \"{address}:{}\"", self.port());
        let config = config.replacen(&format!("listen = \"{address}:0\""), &pinned, 1);
        fs::write(&config_path, config).expect("pin the port");
        let log = self.dir.path().join("server.log");
        let runs = (1..).find(|n| !self.dir.path().join(format!("server.log.{n}")).exists()).unwrap_or(1);
        let _ = fs::rename(&log, self.dir.path().join(format!("server.log.{runs}")));
        // `spawn` takes the directory by value: lend it a placeholder until the new process owns the real one.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let mut restarted = Server::spawn(dir, &config_path, std::mem::take(&mut self.env));
        restarted.token = std::mem::take(&mut self.token);
        restarted.admin_password = std::mem::take(&mut self.admin_password);
        // Drops the old value: its process is already reaped, its directory is the placeholder.
        *self = restarted;
    }

    /// Sends SIGTERM, as a service manager stops the server, and waits up to `limit` for it to exit; returns how
    /// long that took, or `None` if it still runs.
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid; it reads no memory.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to the server");
        while started.elapsed() < limit {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return Some(started.elapsed());
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The logs of every run so far, oldest first (earlier runs' are kept by [`Server::restart`]).
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for n in 1.. {
            let Ok(earlier) = fs::read_to_string(self.dir.path().join(format!("server.log.{n}"))) else { break };
            text.push_str(&format!("--- run {n} ---\n{earlier}"));
        }
        text.push_str(&format!("--- current run ---\n{}", self.log()));
        text
    }
}
