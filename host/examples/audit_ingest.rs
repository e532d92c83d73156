//! Benchmark: audit ingest. Run with `cargo xtask bench-audit [OPTIONS]`; figures go to BENCHMARKS.md.
//!
//! One server in this process, built like the real one (`App::open` on a fresh SQLite file with the durable
//! settings, `http::router`, connect-info for the peer address) plus a `/noop` route that answers `OK` and does
//! nothing else, served through the same layers as every route (tracing, latency metrics): the ceiling of this
//! server's HTTP on this machine, measured in the same run. Then:
//!
//! 1. **Legacy GET ingest** with `wrk --latency` (keep-alive): `/noop` and `/omaudit/omaudit_pull/` with the same
//!    Lua script, which gives every request a distinct history line (otherwise deduplication would make most of
//!    them no-ops) and sends the same query string to `/noop`. Afterwards the rows are counted: every request
//!    answered `OK` must be stored.
//! 2. **Agent batch ingest**: `POST /api/audit/events` with an agent token, batches of 500, 1 000 and 5 000
//!    events from several concurrent clients, bodies prepared before the clock starts.
//! 3. **Ingest to live stream latency**: a subscriber on `GET /api/audit/stream`; events sent one per request
//!    at a steady rate (agent POSTs, then legacy GETs); per event, the time from just before the request to the
//!    arrival of its SSE event.
//!
//! The clients of 2 and 3 run on their own thread and runtime; everything shares the machine's cores with the
//! server, as `wrk` does.
//!
//! Options: `--duration S` (wrk run, default 10), `--connections N` (64), `--threads N` (wrk threads, 2),
//! `--batch-events N` (events per batch size, 300000), `--batch-clients N` (4), `--rate N` (events/s for the
//! latency runs, 500), `--latency-secs S` (10), `--only legacy|batch|latency`. What the command index costs ingest is
//! `cargo xtask bench-search`'s to measure.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{routing::get, Router};
use omserver::{app::App, config::Config};
use serde_json::Value;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

/// As in `omserver` itself: mimalloc rather than glibc's malloc: request handlers allocate what the audit writer thread frees, and glibc
/// spent ~15 % of the request threads' time on that (perf, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Settings {
    duration: u64,
    connections: usize,
    threads: usize,
    batch_events: usize,
    batch_clients: usize,
    rate: u64,
    latency_secs: u64,
    only: Option<String>,
}

impl Settings {
    fn from_args() -> Result<Settings, Error> {
        let mut s = Settings {
            duration: 10,
            connections: 64,
            threads: 2,
            batch_events: 300_000,
            batch_clients: 4,
            rate: 500,
            latency_secs: 10,
            only: None,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || value.parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"));
            match flag.as_str() {
                "--duration" => s.duration = number()?,
                "--connections" => s.connections = number()? as usize,
                "--threads" => s.threads = number()? as usize,
                "--batch-events" => s.batch_events = number()? as usize,
                "--batch-clients" => s.batch_clients = number()? as usize,
                "--rate" => s.rate = number()?,
                "--latency-secs" => s.latency_secs = number()?,
                "--only" => s.only = Some(value.clone()),
                _ => return Err(format!("unknown option {flag}").into()),
            }
        }
        Ok(s)
    }

    fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }
}

/// The server under test and what the clients need to reach it.
struct Target {
    addr: SocketAddr,
    admin: String,
    agent: String,
    database_url: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let settings = Settings::from_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let dir = tempfile::tempdir()?;
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        plugins_dir: dir.path().join("plugins.d"),
        state_dir: dir.path().join("state"),
        files_dir: dir.path().join("files"),
        ..Config::default()
    };
    let database_url = config.database_url.clone();
    let app = App::open(config).await?;
    let admin = app.bootstrap().await?.token.ok_or("a fresh database has no admin token")?;
    let localhost = app.store.list_hosts().await?.into_iter().find(|h| h.ip == "127.0.0.1").ok_or("no 127.0.0.1")?;
    let agent = app.tokens.create_for_host("bench-agent", localhost.id).await?;

    // The no-op route goes through the same layers (tracing, latency metrics) as the audit routes.
    let noop = Router::new().route("/noop", get(|| async { "OK" }));
    let cluster =
        omserver::cluster::Cluster::join(app.store.clone(), "bench".into(), "http://127.0.0.1".into()).await?;
    let router = omserver::http::router_with(app.state(Arc::new(cluster)), noop);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await });
    let target = Arc::new(Target { addr, admin, agent, database_url });
    println!("server on {addr}, SQLite (WAL; every answer after fdatasync) in {}", dir.path().display());
    println!("machine: {} cores; load average before: {}", cores(), load_average());
    println!("disk: 4 KiB append + fdatasync, median {:.2?}", fdatasync_median(dir.path())?);

    if settings.runs("legacy") {
        legacy(&settings, &target, dir.path()).await?;
    }
    if settings.runs("batch") {
        let (settings_batch, target_batch) = (settings_clone(&settings), target.clone());
        on_client_thread(move || batches(settings_batch, target_batch)).await??;
    }
    if settings.runs("latency") {
        let (settings_latency, target_latency) = (settings_clone(&settings), target.clone());
        on_client_thread(move || latency(settings_latency, target_latency)).await??;
    }
    println!("load average after: {}", load_average());
    shutdown.cancel();
    server.await??;
    Ok(())
}

fn settings_clone(s: &Settings) -> Settings {
    Settings { only: s.only.clone(), ..*s }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The audit writer's own counters (from the process's Prometheus recorder): commits, seconds spent in them,
/// events stored.
#[derive(Debug, Clone, Copy, Default)]
struct WriterStats {
    commits: f64,
    seconds: f64,
    events: f64,
    /// Bytes this process passed to write-like system calls (`wchar` in /proc/self/io): mostly SQLite's WAL,
    /// statement journal and checkpoints; the HTTP answers of these runs are a few bytes each.
    written: f64,
}

impl WriterStats {
    fn now() -> WriterStats {
        let text = omserver::app::metrics_handle().render();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
                .unwrap_or(0.0)
        };
        WriterStats {
            commits: value("omserver_audit_commit_seconds_count"),
            seconds: value("omserver_audit_commit_seconds_sum"),
            events: value("omserver_audit_events_stored_total"),
            written: std::fs::read_to_string("/proc/self/io")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("wchar:").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0.0),
        }
    }

    /// What the writer did since `before`, during `wall`.
    fn since(self, before: WriterStats, wall: Duration) -> String {
        let (commits, seconds, events) =
            (self.commits - before.commits, self.seconds - before.seconds, self.events - before.events);
        if commits == 0.0 {
            return "writer: no commits".into();
        }
        format!(
            "writer: {commits:.0} commits, {:.0} events per commit, {:.2} ms per commit, busy {:.0} % of the run, \
             {:.1} KiB written per event",
            events / commits,
            1000.0 * seconds / commits,
            100.0 * seconds / wall.as_secs_f64(),
            (self.written - before.written) / events.max(1.0) / 1024.0
        )
    }
}

/// The disk's floor for a durable commit: write 4 KiB at the end of a file and `fdatasync`, as a WAL commit does.
fn fdatasync_median(dir: &Path) -> Result<Duration, Error> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fsync-probe"))?;
    let page = [7u8; 4096];
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        took.push(started.elapsed());
    }
    took.sort();
    Ok(took[took.len() / 2])
}

/// Runs an async client on its own thread and current-thread runtime, so it never occupies the server's workers.
async fn on_client_thread<F, Fut, T>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
        let _ = tx.send(runtime.block_on(f()));
    });
    Ok(rx.await?)
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Legacy GET ingest with wrk
// ---------------------------------------------------------------------------------------------------------------

/// Every request a distinct history line; `/noop` gets the same query string. Arguments: path, run name.
const WRK_SCRIPT: &str = r#"
local counter = 0
local thread_no = 0

function setup(thread)
  thread:set("id", thread_no)
  thread_no = thread_no + 1
end

function init(args)
  path = args[1]
  run = args[2]
end

function request()
  counter = counter + 1
  return wrk.format("GET", path .. "?history_id=" .. counter ..
    "&history_ip=127.0.0.1&history_user=bench&history_datetime=2026-11-24%2012:00:00" ..
    "&history_command=ls+-l+%2Fvar%2Flog%2F+%7C+grep+" .. run .. "-" .. id .. "-" .. counter)
end
"#;

/// What one wrk run printed.
#[derive(Debug, Default)]
struct WrkFigures {
    requests_per_sec: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: String,
    percentiles: Vec<(String, String)>,
}

async fn wrk(
    settings: &Settings,
    target: &Target,
    script: &Path,
    path: &str,
    run: &str,
    secs: u64,
) -> Result<WrkFigures, Error> {
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", settings.threads))
        .arg(format!("-c{}", settings.connections))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{}", target.addr))
        .args(["--", path, run])
        .output()
        .await
        .map_err(|e| format!("cannot run wrk ({e}); `cargo xtask bench-audit` installs it"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let mut figures = WrkFigures::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => figures.requests_per_sec = n.parse()?,
            [n, "requests", "in", ..] => figures.requests = n.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => figures.non_2xx = n.parse()?,
            ["Socket", "errors:", ..] => figures.socket_errors = line.to_owned(),
            [p @ ("50%" | "90%" | "99%"), v] => figures.percentiles.push(((*p).to_owned(), (*v).to_owned())),
            _ => {}
        }
    }
    Ok(figures)
}

async fn stored_rows(database_url: &str, source: &str) -> Result<i64, Error> {
    let mut conn = sqlx::SqliteConnection::connect(database_url).await?;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM server_history WHERE source = ?")
        .bind(source)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(n)
}

async fn legacy(settings: &Settings, target: &Target, dir: &Path) -> Result<(), Error> {
    let script = dir.join("legacy.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let noop = "/noop";
    let legacy = "/omaudit/omaudit_pull/";
    // Warm-up: connections, the inventory cache, SQLite's pages.
    wrk(settings, target, &script, noop, "warm", 2).await?;
    wrk(settings, target, &script, legacy, "warm", 2).await?;
    let before = stored_rows(&target.database_url, "legacy").await?;
    let mut results = Vec::new();
    let mut writer = String::new();
    for (name, path) in [("noop", noop), ("legacy", legacy)] {
        let (before, started) = (WriterStats::now(), Instant::now());
        let figures = wrk(settings, target, &script, path, name, settings.duration).await?;
        if name == "legacy" {
            writer = WriterStats::now().since(before, started.elapsed());
        }
        results.push((name, figures));
    }
    let stored = stored_rows(&target.database_url, "legacy").await? - before;
    println!(
        "\n## Legacy GET ingest: wrk -t{} -c{} -d{}s --latency, keep-alive, distinct lines",
        settings.threads, settings.connections, settings.duration
    );
    println!("{:<8} {:>12} {:>10} {:>9} {:>9} {:>9}  errors", "route", "requests/s", "requests", "p50", "p90", "p99");
    for (name, f) in &results {
        let p =
            |which: &str| f.percentiles.iter().find(|(k, _)| k == which).map(|(_, v)| v.clone()).unwrap_or_default();
        println!(
            "{name:<8} {:>12.0} {:>10} {:>9} {:>9} {:>9}  non-2xx {}{}",
            f.requests_per_sec,
            f.requests,
            p("50%"),
            p("90%"),
            p("99%"),
            f.non_2xx,
            if f.socket_errors.is_empty() { String::new() } else { format!("; {}", f.socket_errors) }
        );
    }
    let (noop_rate, legacy_rate) = (results[0].1.requests_per_sec, results[1].1.requests_per_sec);
    println!("legacy / noop: {:.0} %", 100.0 * legacy_rate / noop_rate);
    println!("{writer}");
    let answered_ok = results[1].1.requests - results[1].1.non_2xx;
    println!(
        "rows stored by the legacy run: {stored} (answered OK: {answered_ok}; {})",
        if stored as u64 >= answered_ok { "every OK is stored" } else { "ROWS MISSING" }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Agent batch ingest
// ---------------------------------------------------------------------------------------------------------------

fn agent_event(stream: &str, seq: usize) -> String {
    format!(
        r#"{{"stream":"{stream}","seq":{seq},"history_id":{seq},"user":"root","login_user":"alice","uid":0,"tty":"/dev/pts/3","ip":"127.0.0.1","time":"2026-11-24 12:00:00","command":"tail -n 100 /var/log/syslog | grep -i error # {stream} {seq}"}}"#
    )
}

fn batch_body(stream: &str, from_seq: usize, count: usize) -> Vec<u8> {
    let mut body = String::with_capacity(count * 260 + 32);
    body.push_str(r#"{"events":["#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&agent_event(stream, from_seq + i));
    }
    body.push_str("]}");
    body.into_bytes()
}

/// How many batch runs this process has made: each run's streams are new, so no event is a duplicate.
static BATCH_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn batches(settings: Settings, target: Arc<Target>) -> Result<(), Error> {
    let run = BATCH_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let url = format!("http://{}/api/audit/events", target.addr);
    println!(
        "\n## Agent batch ingest: POST /api/audit/events, {} concurrent clients, {} events per batch size",
        settings.batch_clients, settings.batch_events
    );
    println!(
        "{:>6} {:>9} {:>10} {:>12} {:>12} {:>12}",
        "batch", "requests", "seconds", "events/s", "p50 req", "max req"
    );
    for size in [500usize, 1000, 5000] {
        let per_client = settings.batch_events / settings.batch_clients / size;
        if per_client == 0 {
            continue;
        }
        // Bodies built before the clock starts: the client only sends.
        let work: Vec<Vec<Vec<u8>>> = (0..settings.batch_clients)
            .map(|c| {
                let stream = format!("bench-{run}-{size}-{c}");
                (0..per_client).map(|b| batch_body(&stream, 1 + b * size, size)).collect()
            })
            .collect();
        let (before, started) = (WriterStats::now(), Instant::now());
        let tasks: Vec<_> = work
            .into_iter()
            .map(|bodies| {
                let (client, url, token) = (client.clone(), url.clone(), target.agent.clone());
                tokio::spawn(async move {
                    let mut took = Vec::new();
                    for body in bodies {
                        let sent = Instant::now();
                        let response = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await?;
                        let status = response.status();
                        let ack: Value = serde_json::from_slice(&response.bytes().await?)?;
                        if status != 200 || ack["stored"].as_u64() != Some(size as u64) {
                            return Err::<_, Error>(format!("batch not stored: {status} {ack}").into());
                        }
                        took.push(sent.elapsed());
                    }
                    Ok(took)
                })
            })
            .collect();
        let mut took = Vec::new();
        for task in tasks {
            took.extend(task.await??);
        }
        let elapsed = started.elapsed();
        took.sort();
        let events = per_client * size * settings.batch_clients;
        println!(
            "{size:>6} {:>9} {:>10.2} {:>12.0} {:>12.1?} {:>12.1?}  {}",
            took.len(),
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64(),
            took[took.len() / 2],
            took[took.len() - 1],
            WriterStats::now().since(before, elapsed)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Ingest to live-stream latency
// ---------------------------------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(settings: Settings, target: Arc<Target>) -> Result<(), Error> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    println!(
        "\n## Ingest to live stream: one event per request at {} events/s for {} s, subscriber on /api/audit/stream",
        settings.rate, settings.latency_secs
    );
    println!("{:<14} {:>6} {:>8} {:>9} {:>9} {:>9}", "path", "sent", "received", "p50", "p99", "max");
    for path in ["agent POST", "legacy GET"] {
        let run = format!("lat{}", if path.starts_with("agent") { "a" } else { "l" });
        let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        // Subscribe first; events carry `<run>:<n>` in the command.
        let mut stream = client
            .get(format!("http://{}/api/audit/stream?q={run}:", target.addr))
            .bearer_auth(&target.admin)
            .send()
            .await?;
        if stream.status() != 200 {
            return Err(format!("subscribe: {}", stream.status()).into());
        }
        let reader = {
            let (received, run) = (received.clone(), run.clone());
            tokio::spawn(async move {
                let mut pending = String::new();
                while let Ok(Some(chunk)) = stream.chunk().await {
                    let now = Instant::now();
                    pending.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        let Some(data) = line.strip_prefix("data:") else { continue };
                        let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
                        let command = event["command"].as_str().unwrap_or_default();
                        if let Some(n) = command.rsplit(&format!("{run}:")).next().and_then(|n| n.parse().ok()) {
                            received.lock().unwrap_or_else(|e| e.into_inner()).insert(n, now);
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let total = settings.rate * settings.latency_secs;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut senders = Vec::new();
        for n in 0..total {
            ticker.tick().await;
            let (client, target, sent_at, run) = (client.clone(), target.clone(), sent_at.clone(), run.clone());
            let legacy = path.starts_with("legacy");
            senders.push(tokio::spawn(async move {
                let command = format!("echo latency {run}:{n}");
                let request = if legacy {
                    let mut url = format!(
                        "http://{}/omaudit/omaudit_pull/?history_id={n}&history_ip=127.0.0.1&history_user=bench\
                         &history_datetime=2026-11-24%2012:00:00&history_command=",
                        target.addr
                    );
                    for b in command.bytes() {
                        let _ = write!(url, "%{b:02X}");
                    }
                    client.get(url)
                } else {
                    client
                        .post(format!("http://{}/api/audit/events", target.addr))
                        .bearer_auth(&target.agent)
                        .header("content-type", "application/json")
                        .body(format!(
                            r#"{{"events":[{{"stream":"{run}","seq":{},"history_id":{n},"user":"root","time":"2026-11-24 12:00:00","command":"{command}"}}]}}"#,
                            n + 1
                        ))
                };
                sent_at.lock().unwrap_or_else(|e| e.into_inner()).insert(n, Instant::now());
                request.send().await.map(|r| r.status())
            }));
        }
        let mut failed = 0;
        for sender in senders {
            if !matches!(sender.await, Ok(Ok(status)) if status == 200) {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        reader.abort();
        let sent_at = sent_at.lock().unwrap_or_else(|e| e.into_inner());
        let received = received.lock().unwrap_or_else(|e| e.into_inner());
        let mut latencies: Vec<Duration> = sent_at
            .iter()
            .filter_map(|(n, sent)| received.get(n).map(|got| got.saturating_duration_since(*sent)))
            .collect();
        latencies.sort();
        if latencies.is_empty() {
            return Err(format!("{path}: no event came through the stream").into());
        }
        println!(
            "{path:<14} {:>6} {:>8} {:>9.1?} {:>9.1?} {:>9.1?}{}",
            total,
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
            if failed > 0 { format!("  ({failed} requests failed)") } else { String::new() }
        );
    }
    Ok(())
}
