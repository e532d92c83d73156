//! Soak: everything at once for a long time, with the server's resources printed every minute. Run with
//! `cargo xtask soak [MINUTES]` (default 60), which starts the test environment and builds the release binaries,
//! module 1003 and the fixtures first; figures go to BENCHMARKS.md.
//!
//! What runs, all together, against one release server on SQLite:
//! - **jobs on every backend:** one loop per backend (local, ssh, ansible, saltstack, func) submits module 1003 on
//!   that backend's test hosts, follows the job's event stream (as the console's job page does) to its `end`, and
//!   checks that the job succeeded on every host;
//! - **agent ingest:** two `omaudit-agent` processes' worth of prompts (the prompt form bash's PROMPT_COMMAND
//!   runs, with its background flushers), five a second each;
//! - **console streams:** the audit page's stream (`/api/audit/stream`), read the whole time and reopened every
//!   five minutes, besides each job's stream;
//! - **module reloads:** every 30 s module 9000 (fixture `fx_echo`) is replaced by its other version; the loop
//!   waits for the listing to show it and runs it once.
//!
//! Every minute one line: the server's resident memory, descriptors and threads, the database's size (file and
//! WAL), and per activity what succeeded and what failed. At the end: every audit event typed is stored once
//! (counted in the database) and `omserver audit verify` finds no problem; then the verdict the issue asks for:
//! RSS, descriptors and threads within 10 % of minute 5, and 0 unexpected errors. The exit status is 1 otherwise.
//!
//! Arguments: `BINARY LIBRARY_1003 ECHO_V1 ECHO_V2 AGENT ENV_JSON [MINUTES]`.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bench_server::{run_cli, Api, BenchServer};
use serde_json::{json, Value};
use tokio::process::Command;

type Error = Box<dyn std::error::Error + Send + Sync>;

const AGENTS: usize = 2;
const PROMPT_EVERY: Duration = Duration::from_millis(200);
const RELOAD_EVERY: Duration = Duration::from_secs(30);
const AUDIT_STREAM_REOPEN: Duration = Duration::from_secs(300);

/// What one activity did: successes and failures.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Default)]
struct Tallies {
    by_name: Mutex<BTreeMap<&'static str, Arc<Tally>>>,
    /// The first failures, printed as they happen and kept for the summary.
    first_failures: Mutex<Vec<String>>,
}

impl Tallies {
    fn of(&self, name: &'static str) -> Arc<Tally> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner()).entry(name).or_default().clone()
    }

    fn ok(&self, name: &'static str, n: u64) {
        self.of(name).ok.fetch_add(n, Ordering::Relaxed);
    }

    fn failed(&self, name: &'static str, why: String) {
        self.of(name).failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failures.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 20 {
            eprintln!("soak: {name} failed: {why}");
            first.push(format!("{name}: {why}"));
        }
    }

    fn failures(&self) -> u64 {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner()).values().map(|t| t.failed.load(Ordering::Relaxed)).sum()
    }

    /// `name ok/failed` for each activity, in name order.
    fn line(&self) -> String {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name
            .iter()
            .map(|(name, t)| format!("{name} {}/{}", t.ok.load(Ordering::Relaxed), t.failed.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// The server's resources and its database's size.
#[derive(Debug, Clone, Copy)]
struct Reading {
    rss_kib: u64,
    /// RSS's parts: the heap and stacks, mapped files (the binary, libraries), shared memory (SQLite's -shm).
    anon_kib: u64,
    file_kib: u64,
    shmem_kib: u64,
    fds: u64,
    threads: u64,
    db_kib: u64,
}

fn read(pid: u32, database: &Path) -> Reading {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    let size = |suffix: &str| {
        let mut path = database.as_os_str().to_owned();
        path.push(suffix);
        fs::metadata(PathBuf::from(path)).map(|m| m.len()).unwrap_or(0)
    };
    Reading {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        shmem_kib: field("RssShmem:"),
        fds,
        threads: field("Threads:"),
        db_kib: (size("") + size("-wal")) / 1024,
    }
}

/// What only the soak asks of the API.
impl Api {
    /// Opens a server-sent event stream; each event's name is passed to `seen` until it returns false or the
    /// stream ends. Returns the number of events.
    async fn follow(&self, path: &str, limit: Duration, mut seen: impl FnMut(&str) -> bool) -> Result<u64, Error> {
        let mut response = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        if !response.status().is_success() {
            return Err(format!("{path}: {}", response.status()).into());
        }
        let (mut pending, mut events) = (String::new(), 0u64);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => return Ok(events),
                Ok(chunk) => chunk?,
            };
            let Some(chunk) = chunk else { return Ok(events) };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if let Some(name) = line.strip_prefix("event:") {
                    events += 1;
                    if !seen(name.trim()) {
                        return Ok(events);
                    }
                }
            }
        }
    }
}

/// A backend and the inventory hosts (name, address) it runs on.
type Fleet = Vec<(&'static str, Vec<(String, String)>)>;

/// The backends and the inventory hosts each runs on, from the test environment.
fn fleet(env: &Value) -> Result<Fleet, Error> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let ssh = strings(&env["ssh"]["addresses"]);
    if ssh.len() < 4 {
        return Err("the test environment has fewer than 4 ssh addresses: run `cargo xtask testenv up`".into());
    }
    let ssh_hosts: Vec<(String, String)> = (0..4).map(|i| (format!("s{i}"), ssh[i].clone())).collect();
    let minions: Vec<(String, String)> = strings(&env["salt"]["minions"])
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m, format!("127.0.0.{}", 90 + i)))
        .collect();
    let func: Vec<(String, String)> = env["func"]["hosts"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|h| Some((h["name"].as_str()?.to_owned(), h["address"].as_str()?.to_owned()))).collect()
        })
        .unwrap_or_default();
    Ok(vec![
        ("local", vec![("localhost".to_owned(), String::new())]),
        ("ssh", ssh_hosts.clone()),
        ("ansible", ssh_hosts[..2].to_vec()),
        ("saltstack", minions),
        ("func", func),
    ])
}

/// Every backend's section, from the test environment (as host/tests/common/testenv.rs writes it for tests).
fn backends_config(env: &Value) -> String {
    let (ssh, salt, func) = (&env["ssh"], &env["salt"], &env["func"]);
    let access = format!(
        "user = {}\nport = {}\nidentity_file = {}\nknown_hosts_file = {}\nconnect_timeout_secs = 5\n",
        ssh["user"], ssh["port"], ssh["identity_file"], ssh["known_hosts_file"]
    );
    format!(
        "command_timeout_secs = 60\njob_timeout_secs = 120\n\
         [backends.ssh]\n{access}\
         [backends.ansible]\nexecutable = {}\nforks = 10\n{access}\
         [backends.saltstack]\nurl = {}\nusername = {}\npassword = {}\neauth = {}\ntimeout_secs = 8\n\
         [backends.func]\nport = {}\nca_file = {}\ncert_file = {}\nkey_file = {}\nconnect_timeout_secs = 5\n",
        env["ansible"]["executable"],
        salt["url"],
        salt["username"],
        salt["password"],
        salt["eauth"],
        func["port"],
        func["ca_file"],
        func["cert_file"],
        func["key_file"],
    )
}

/// Module 1003 on `backend`'s hosts over and over: submit, follow the job's stream to `end`, check every host.
async fn jobs(api: Arc<Api>, tallies: Arc<Tallies>, backend: &'static str, hosts: Vec<String>, until: Instant) {
    while Instant::now() < until {
        let body = json!({ "module": 1003, "hosts": hosts, "backend": backend });
        let outcome: Result<(), Error> = async {
            let id = api.post("/api/jobs", body).await?["id"].as_i64().ok_or("no job id")?;
            let mut ended = false;
            let events = api
                .follow(&format!("/api/jobs/{id}/events"), Duration::from_secs(180), |name| {
                    ended = name == "end";
                    !ended
                })
                .await?;
            if !ended {
                return Err(format!("job {id}: its stream ended after {events} events without `end`").into());
            }
            tallies.ok("stream-events", events);
            let job = api.get(&format!("/api/jobs/{id}")).await?;
            let results = job["results"].as_array().ok_or("no results")?;
            if job["status"] != "succeeded"
                || results.len() != hosts.len()
                || results.iter().any(|r| r["status"] != "ok")
            {
                return Err(format!("job {id}: {job}").into());
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => tallies.ok(backend, 1),
            Err(e) => tallies.failed(backend, e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The audit page's stream, read the whole time and reopened every few minutes.
async fn audit_stream(api: Arc<Api>, tallies: Arc<Tallies>, until: Instant) {
    while Instant::now() < until {
        let limit = AUDIT_STREAM_REOPEN.min(until.saturating_duration_since(Instant::now()));
        match api.follow("/api/audit/stream", limit, |_| true).await {
            Ok(events) => tallies.ok("audit-stream", events),
            Err(e) => tallies.failed("audit-stream", e.to_string()),
        }
    }
}

/// One audited host: a spool of its own and its agent token.
struct Agent {
    binary: PathBuf,
    spool: tempfile::TempDir,
    server: String,
    token: String,
    ip: String,
}

impl Agent {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env("OMAUDIT_CONFIG", "")
            .env("OMAUDIT_SERVER", &self.server)
            .env("OMAUDIT_TOKEN", &self.token)
            .env("OMAUDIT_SPOOL_DIR", self.spool.path())
            .env("OMAUDIT_IP", &self.ip)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }
}

/// Prompts on one agent until `until`; returns how many were typed.
async fn prompts(agent: Arc<Agent>, index: usize, tallies: Arc<Tallies>, until: Instant) -> u64 {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(PROMPT_EVERY);
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let line = format!("{n:>5}  soak{index} 2026-12-04 01:00:00 echo 'soak {index} prompt {n}' | wc -c");
        match agent.command().arg(line).stderr(Stdio::piped()).output().await {
            Ok(out) if out.stderr.is_empty() => tallies.ok("prompts", 1),
            Ok(out) => tallies.failed("prompts", String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => tallies.failed("prompts", e.to_string()),
        }
    }
    n
}

/// Swaps module 9000 between its two versions every [`RELOAD_EVERY`], half-way between the minute readings (at
/// 15 s and 45 s past each minute of the run), and runs the new one once. The reading then shows the server between
/// swaps, and the highest of the minute what a swap costs; a swap that drifted onto the reading would mix the two.
async fn reloads(
    api: Arc<Api>,
    tallies: Arc<Tallies>,
    plugins: PathBuf,
    versions: [PathBuf; 2],
    started: Instant,
    until: Instant,
) {
    let mut turn = 0u32;
    loop {
        let at = started + RELOAD_EVERY / 2 + RELOAD_EVERY * turn;
        if at + RELOAD_EVERY > until {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        turn += 1;
        let (file, version) = (&versions[(turn % 2) as usize], if turn.is_multiple_of(2) { "1.0.0" } else { "2.0.0" });
        let outcome: Result<(), Error> = async {
            let tmp = plugins.join(".Mid_9000.so.tmp");
            fs::copy(file, &tmp)?;
            fs::rename(&tmp, plugins.join("Mid_9000.so"))?;
            let started = Instant::now();
            loop {
                let listing = api.get("/api/modules").await?;
                let entry = listing.as_array().and_then(|l| l.iter().find(|m| m["file"] == "Mid_9000.so").cloned());
                if entry.as_ref().is_some_and(|m| m["status"] == "loaded" && m["version"] == version) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(20) {
                    return Err(format!("version {version} not listed after 20 s: {entry:?}").into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let body =
                json!({ "module": 9000, "hosts": ["localhost"], "params": { "word": "soak" }, "backend": "local" });
            let id = api.post("/api/jobs", body).await?["id"].as_i64().ok_or("no job id")?;
            loop {
                let job = api.get(&format!("/api/jobs/{id}")).await?;
                match job["status"].as_str() {
                    Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(50)).await,
                    Some("succeeded") if job.to_string().contains(version) => return Ok(()),
                    _ => return Err(format!("job {id} on version {version}: {job}").into()),
                }
            }
        }
        .await;
        match outcome {
            Ok(()) => tallies.ok("reloads", 1),
            Err(e) => tallies.failed("reloads", e.to_string()),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, library, echo_v1, echo_v2, agent, env_json] =
        [0, 1, 2, 3, 4, 5].map(|i| PathBuf::from(args.get(i).cloned().unwrap_or_default()));
    let minutes: u64 = args.get(6).and_then(|a| a.parse().ok()).unwrap_or(60);
    let env: Value = serde_json::from_str(&fs::read_to_string(&env_json).map_err(|e| format!("{env_json:?}: {e}"))?)?;
    let fleet = fleet(&env)?;

    let server = BenchServer::start(&binary, &library, &backends_config(&env)).map_err(|e| e.to_string())?;
    let pid = server.pid();
    let database = server.dir().join("omserver.db");
    let plugins = server.dir().join("plugins.d");
    let api = Arc::new(Api { http: reqwest::Client::new(), base: server.base.clone(), token: server.token.clone() });
    for (_, hosts) in &fleet[1..] {
        for (name, ip) in hosts {
            api.post("/api/hosts", json!({ "name": name, "ip": ip })).await.or_else(|e| {
                // ansible shares ssh's hosts.
                if e.to_string().contains("409") {
                    Ok(Value::Null)
                } else {
                    Err(e)
                }
            })?;
        }
    }
    let mut agents = Vec::new();
    for index in 0..AGENTS {
        let name = format!("soak-agent-{index}");
        let ip = format!("10.99.0.{}", index + 1);
        api.post("/api/hosts", json!({ "name": name, "ip": ip })).await?;
        let token = run_cli(&binary, &server.config_path(), &["hosts", "token", &name]).await?.trim().to_owned();
        let spool = tempfile::tempdir()?;
        agents.push(Arc::new(Agent { binary: agent.clone(), spool, server: server.base.clone(), token, ip }));
    }
    fs::copy(&echo_v1, plugins.join(".Mid_9000.so.tmp"))?;
    fs::rename(plugins.join(".Mid_9000.so.tmp"), plugins.join("Mid_9000.so"))?;

    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    let tallies = Arc::new(Tallies::default());
    println!(
        "soak: {minutes} min on {} (pid {pid}); jobs on {}; {AGENTS} agents at {} prompts/s each; module reloads every \
         {}s",
        server.base,
        fleet.iter().map(|(b, h)| format!("{b} ({} hosts)", h.len())).collect::<Vec<_>>().join(", "),
        1000 / PROMPT_EVERY.as_millis(),
        RELOAD_EVERY.as_secs()
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (backend, hosts) in fleet {
        let hosts = hosts.into_iter().map(|(name, _)| name).collect();
        tasks.spawn(jobs(api.clone(), tallies.clone(), backend, hosts, until));
    }
    tasks.spawn(audit_stream(api.clone(), tallies.clone(), until));
    tasks.spawn(reloads(api.clone(), tallies.clone(), plugins.clone(), [echo_v1, echo_v2], started, until));
    let typing: Vec<_> =
        agents.iter().enumerate().map(|(i, a)| tokio::spawn(prompts(a.clone(), i, tallies.clone(), until))).collect();

    println!("minute  rss_MiB (anon file shmem; highest in the minute)  fds  threads  db_MiB  activity ok/failed");
    let mut readings = Vec::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    for minute in 1..=minutes {
        // RSS every second too: a minute's reading alone cannot tell a spike from a step.
        let (mut highest, mut second) = (0, Instant::now());
        let at = started + Duration::from_secs(minute * 60);
        while second + Duration::from_secs(1) < at {
            second += Duration::from_secs(1);
            tokio::time::sleep_until(second.into()).await;
            highest = highest.max(read(pid, &database).rss_kib);
        }
        tokio::time::sleep_until(at.into()).await;
        let r = read(pid, &database);
        println!(
            "{minute:>6}  {:>7.1} ({:.1} {:.1} {:.1}; {:.1})  {:>3}  {:>7}  {:>6.1}  {}",
            mib(r.rss_kib),
            mib(r.anon_kib),
            mib(r.file_kib),
            mib(r.shmem_kib),
            mib(highest.max(r.rss_kib)),
            r.fds,
            r.threads,
            r.db_kib as f64 / 1024.0,
            tallies.line()
        );
        readings.push(r);
    }
    while tasks.join_next().await.is_some() {}
    let mut typed = 0;
    for task in typing {
        typed += task.await?;
    }

    // Everything typed is stored once: flush every agent, count the rows, verify the chains.
    for agent in &agents {
        let mut flushed = false;
        for _ in 0..40 {
            if agent.command().arg("flush").stderr(Stdio::null()).status().await?.success() {
                flushed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !flushed {
            tallies.failed("prompts", "a spool did not empty at the end".to_owned());
        }
    }
    let stored = {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", database.display())).await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM server_history WHERE source = 'agent'").fetch_one(&mut db).await?;
        n as u64
    };
    println!("audit: {typed} prompts typed, {stored} rows stored");
    if stored != typed {
        tallies.failed("audit-stored", format!("{typed} typed, {stored} stored"));
    }
    let verify = run_cli(&binary, &server.config_path(), &["audit", "verify"]).await?;
    // One summary line for the audit trail, one for the activity log: each must say 0 problems.
    let summaries: Vec<&str> = verify.lines().filter(|l| l.ends_with(" problems")).collect();
    if summaries.len() != 2 || !summaries.iter().all(|l| l.ends_with(" 0 problems")) {
        tallies.failed("audit-verify", verify.trim().to_owned());
    }

    let reference = readings.get(4).or(readings.last()).copied().ok_or("no minute was read")?;
    let last = readings.last().copied().ok_or("no minute was read")?;
    let worst = |f: fn(&Reading) -> u64| {
        readings.iter().skip(4).map(|r| (f(r) as f64 / f(&reference).max(1) as f64 - 1.0) * 100.0).fold(0.0, f64::max)
    };
    let (rss, fds, threads) = (worst(|r| r.rss_kib), worst(|r| r.fds), worst(|r| r.threads));
    println!(
        "from minute 5 to {minutes}: rss {:.1} → {:.1} MiB (at most {rss:+.1} %), fds {} → {} (at most {fds:+.1} %), \
         threads {} → {} (at most {threads:+.1} %), database {:.1} MiB",
        reference.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        reference.fds,
        last.fds,
        reference.threads,
        last.threads,
        last.db_kib as f64 / 1024.0
    );
    println!("totals: {}", tallies.line());
    let failures = tallies.failures();
    let flat = rss <= 10.0 && fds <= 10.0 && threads <= 10.0;
    println!(
        "verdict: {} ({failures} unexpected errors; rss, fds and threads {} within 10 % of minute 5)",
        if flat && failures == 0 { "PASS" } else { "FAIL" },
        if flat { "stayed" } else { "did not stay" }
    );
    if !(flat && failures == 0) {
        std::process::exit(1);
    }
    Ok(())
}
