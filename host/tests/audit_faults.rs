//! Audit ingest under faults, with real processes only: the `omserver` binary, the `omaudit-agent` binary driven
//! through its prompt form (as bash's PROMPT_COMMAND runs it) with its own detached background flushers, and the
//! real MariaDB and PostgreSQL services. Each test breaks something in the middle of a run — the server is
//! SIGKILLed, the database server is restarted under it, or the agents' link loses packets (the agents then run in
//! a network namespace of the test environment's netns piece) — and then checks that every event arrived exactly
//! once: the rows of each agent stream are exactly the sequence numbers 1..=N with the commands that were typed,
//! no gap was reported, and `omserver audit verify` finds the hash chains intact.
//!
//! The agent binary must be built next to `omserver` (`cargo build -p omaudit-agent`; `cargo xtask test` builds
//! the whole workspace, so it is there). The database tests need MariaDB and PostgreSQL running locally
//! (`TEST_MYSQL_URL`, `TEST_POSTGRES_URL` as in `storage.rs`) and the rights to restart them
//! (`mysqladmin shutdown`, `start-stop-daemon`, `pg_ctlcluster`): each stops a shared service for about 20 s
//! (until both probes have been refused), and starts it again in a drop guard even when the test fails.
//!
//! The agents are `common/agents.rs`'s, driven through their prompt form. On 2 cores, 10 agents running prompts
//! side by side (debug build, background flushers and server included) get through about 1 000 prompts a second,
//! so the SIGKILL test's 100 000 events take about 100 s, within its 3-minute budget; the database tests use
//! 5 × 2 000.
//!
//! All tests here take one process-wide lock: two of them stop shared database services, and all of them
//! measure what happens while two cores are busy, so they must not overlap each other.

mod common;

use std::{
    collections::HashMap,
    fs,
    net::{SocketAddr, TcpStream},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    agents::{agent_binary, assert_exactly_once, drive, stored, wait_for, Agent, Stored},
    cli,
    netfault::Fault,
    Options, Server,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

/// Serialises the tests of this file (see the crate docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------------------------
// 1. The server is SIGKILLed twice under 10 agents
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn ten_agents_lose_nothing_and_duplicate_nothing_when_the_server_is_killed_twice() {
    const AGENTS: usize = 10;
    const PER_AGENT: usize = 10_000;
    let _serial = serial();
    let started = Instant::now();
    let binary = agent_binary();
    let mut server = Server::start_with(Options { seed: vec![], ..Options::default() });
    let agents: Vec<Arc<Agent>> = (0..AGENTS).map(|i| Arc::new(Agent::register(&server, &binary, i))).collect();

    let done = Arc::new(AtomicUsize::new(0));
    let drivers = drive(&agents, PER_AGENT, &done);
    let total = AGENTS * PER_AGENT;
    let mut outages = Vec::new();
    for third in [1, 2] {
        wait_for(&done, total * third / 3, Duration::from_secs(300));
        let at = done.load(Ordering::Relaxed);
        server.kill();
        // Down long enough for every agent to try and fail at least once while prompts keep spooling.
        thread::sleep(Duration::from_millis(700));
        let down = Instant::now();
        server.restart();
        outages.push((at, done.load(Ordering::Relaxed), down.elapsed()));
    }
    let complaints: Vec<String> = drivers.into_iter().flat_map(|d| d.join().expect("driver thread")).collect();
    assert!(complaints.is_empty(), "prompts complained:\n{}", complaints.join("\n"));
    let prompts_done = started.elapsed();
    for agent in &agents {
        agent.flush_until_empty(Duration::from_secs(60));
    }
    assert!(server.alive(), "the server died: {}", server.logs());
    let database_url = format!("sqlite://{}", server.dir.path().join("omserver.db").display());
    let rows = assert_exactly_once(&server, &database_url, &agents, PER_AGENT, &[]);
    assert_eq!(rows.len(), total);

    // The kills must have hit deliveries in flight, or this test proved nothing.
    let failed_deliveries = agents.iter().filter(|a| a.log().contains("delivery failed")).count();
    assert!(failed_deliveries > 0, "no agent saw the server down: the kills came at a quiet moment");
    eprintln!(
        "{total} events from {AGENTS} agents; kills after {:?} prompts (prompts during each outage and restart \
         time: {:?}); {failed_deliveries} agents logged failed deliveries; prompts done in {prompts_done:.1?}, \
         all delivered and checked in {:.1?}",
        outages.iter().map(|o| o.0).collect::<Vec<_>>(),
        outages.iter().map(|o| (o.1 - o.0, o.2)).collect::<Vec<_>>(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. The database server restarts under the running server
// ---------------------------------------------------------------------------------------------------------------

/// A local database service this test may stop and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    MariaDb,
    Postgres,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::MariaDb => "MariaDB",
            Service::Postgres => "PostgreSQL",
        }
    }

    fn port(self) -> u16 {
        match self {
            Service::MariaDb => 3306,
            Service::Postgres => 5432,
        }
    }

    /// The admin URL (may create and drop databases), as in `storage.rs`.
    fn admin_url(self) -> String {
        common::scratch::admin_url(match self {
            Service::MariaDb => omserver::store::Dialect::MySql,
            Service::Postgres => omserver::store::Dialect::Postgres,
        })
    }

    fn sh(script: &str) -> Output {
        Command::new("sh").args(["-c", script]).stdin(Stdio::null()).output().expect("run sh")
    }

    /// Stops the service and waits until it is gone.
    fn stop(self) {
        let out = match self {
            Service::MariaDb => Service::sh("mysqladmin -uroot shutdown"),
            Service::Postgres => {
                Service::sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop -m fast")
            }
        };
        assert!(out.status.success(), "stopping {}: {out:?}", self.name());
        let started = Instant::now();
        // Gone: not listening, and (MariaDB) no mariadbd left, or `start-stop-daemon --oknodo` would start nothing.
        while listening(self.port()) || (self == Service::MariaDb && Service::sh("pgrep -x mariadbd").status.success())
        {
            assert!(started.elapsed() < Duration::from_secs(60), "{} does not stop", self.name());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn start(self) {
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    /// Starts the service and waits until it accepts connections; never panics (it runs in a drop guard).
    fn try_start(self) -> Result<(), String> {
        let out = match self {
            Service::MariaDb => {
                Service::sh("start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd")
            }
            Service::Postgres => {
                Service::sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
            }
        };
        if !out.status.success() {
            return Err(format!("starting {}: {out:?}", self.name()));
        }
        let started = Instant::now();
        while !self.ready() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("{} does not accept connections 60 s after its start", self.name()));
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Whether the admin account can connect and run a query now.
    fn ready(self) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let url = self.admin_url();
        runtime.block_on(async {
            let attempt = async {
                match self {
                    Service::MariaDb => {
                        let mut conn = sqlx::MySqlConnection::connect(&url).await?;
                        sqlx::query("SELECT 1").execute(&mut conn).await?;
                        conn.close().await
                    }
                    Service::Postgres => {
                        let mut conn = sqlx::PgConnection::connect(&url).await?;
                        sqlx::query("SELECT 1").execute(&mut conn).await?;
                        conn.close().await
                    }
                }
            };
            matches!(tokio::time::timeout(Duration::from_secs(3), attempt).await, Ok(Ok(())))
        })
    }

    async fn admin(self, sql: &str) -> Result<(), sqlx::Error> {
        let url = self.admin_url();
        match self {
            Service::MariaDb => {
                let mut conn = sqlx::MySqlConnection::connect(&url).await?;
                sqlx::query(sql).execute(&mut conn).await?;
                conn.close().await
            }
            Service::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(sql).execute(&mut conn).await?;
                conn.close().await
            }
        }
    }

    fn admin_blocking(self, sql: &str) -> Result<(), sqlx::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(self.admin(sql))
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(300)).is_ok()
}

/// Starts the service again when dropped, unless it already accepts connections: whatever happens in the test,
/// the machine's MariaDB and PostgreSQL are up at the end.
struct Restore(Service);

impl Drop for Restore {
    fn drop(&mut self) {
        if self.0.ready() {
            return;
        }
        // No panic here: this may run while the test is already unwinding.
        if let Err(why) = self.0.try_start() {
            eprintln!("warning: {why}; start it by hand");
        }
    }
}

/// A fresh database on the service, dropped at the end.
struct Scratch {
    service: Service,
    name: String,
    url: String,
}

impl Scratch {
    fn create(service: Service) -> Scratch {
        let name = format!("omsfault_{:016x}", rand::random::<u64>());
        service
            .admin_blocking(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create a database on {} ({}): {e}", service.name(), service.admin_url()));
        let url = common::scratch::with_database(&service.admin_url(), &name);
        Scratch { service, name, url }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let sql = match self.service {
            Service::MariaDb => format!("DROP DATABASE IF EXISTS {}", self.name),
            Service::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        };
        if let Err(e) = self.service.admin_blocking(&sql) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// One event posted straight to the batch endpoint, as an agent would, with its own stream.
fn post_probe(server: &Server, token: &str) -> (StatusCode, String, Duration) {
    let body = json!({ "events": [{
        "stream": "probe", "seq": 1, "history_id": 1, "user": "probe", "time": "2026-11-24 12:00:00",
        "command": "echo probe during the outage",
    }] });
    let started = Instant::now();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let response = client
        .post(format!("{}/api/audit/events", server.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .expect("the server answers");
    let status = response.status();
    (status, response.text().unwrap_or_default(), started.elapsed())
}

/// One legacy GET from 127.0.0.1 (the bootstrap host), as the original agent sends it.
fn legacy_probe(base: &str, client: &reqwest::blocking::Client, line: &str) -> reqwest::Result<(StatusCode, String)> {
    let url = format!(
        "{base}/omaudit/omaudit_pull/?history_id=1&history_ip=127.0.0.1&history_user=root\
         &history_datetime=2026-11-24%2012:00:00&history_command={}",
        encode(line)
    );
    let response = client.get(url).send()?;
    let status = response.status();
    Ok((status, response.text()?))
}

/// Percent-encodes everything but unreserved characters, as `urllib.urlencode` did (modulo `+` for space).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn database_restart_mid_run(service: Service) {
    const AGENTS: usize = 5;
    const PER_AGENT: usize = 2_000;
    let _serial = serial();
    let started = Instant::now();
    let binary = agent_binary();
    // Declared before the restore guard: dropped after it, when the service is up again.
    let scratch = Scratch::create(service);
    let mut server =
        Server::start_with(Options { seed: vec![], database_url: Some(scratch.url.clone()), ..Options::default() });
    let agents: Vec<Arc<Agent>> = (0..AGENTS).map(|i| Arc::new(Agent::register(&server, &binary, i))).collect();
    let probe = Agent::register(&server, &binary, 99);

    let done = Arc::new(AtomicUsize::new(0));
    let drivers = drive(&agents, PER_AGENT, &done);
    wait_for(&done, AGENTS * PER_AGENT / 3, Duration::from_secs(300));
    let at = done.load(Ordering::Relaxed);

    let restore = Restore(service);
    let stopped = Instant::now();
    service.stop();
    let stop_took = stopped.elapsed();
    // While it is down, both ingest routes must refuse (503), never say OK.
    let legacy = {
        let base = server.base.clone();
        thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
            let started = Instant::now();
            let answer = legacy_probe(&base, &client, "echo legacy probe during the outage");
            (answer.map_err(|e| e.to_string()), started.elapsed())
        })
    };
    let (status, body, batch_took) = post_probe(&server, &probe.token);
    let (legacy_answer, legacy_took) = legacy.join().expect("legacy probe thread");
    // Never OK while the database is down; whether it is the right refusal (503) is checked at the end, so that a
    // wrong status code does not hide what happens to the events.
    let outage_answers = [("agent batch", status, body, batch_took), {
        let (legacy_status, legacy_body) = legacy_answer.expect("the server answers the legacy GET");
        ("legacy GET", legacy_status, legacy_body, legacy_took)
    }];
    for (route, status, body, _) in &outage_answers {
        assert!(*status != StatusCode::OK && body.trim() != "OK", "{route} during the outage: {status} {body}");
    }
    assert!(server.alive(), "the server died with the database: {}", server.logs());
    let spooled_in_outage: usize = agents
        .iter()
        .flat_map(|a| a.files("spool"))
        .map(|p| fs::read_to_string(p).unwrap_or_default().lines().count())
        .sum();
    assert!(spooled_in_outage > 0, "the agents' spools are empty during the outage");
    let down_for = stopped.elapsed();
    service.start();
    let outage = stopped.elapsed();
    drop(restore);
    let during_outage = done.load(Ordering::Relaxed) - at;

    let complaints: Vec<String> = drivers.into_iter().flat_map(|d| d.join().expect("driver thread")).collect();
    assert!(complaints.is_empty(), "prompts complained:\n{}", complaints.join("\n"));
    // The server must find its database again by itself (the pool reconnects): no restart of the server here.
    let recovered = Instant::now();
    for agent in &agents {
        agent.flush_until_empty(Duration::from_secs(90));
    }
    let flushed_in = recovered.elapsed();
    assert!(server.alive(), "the server died: {}", server.logs());
    let (status, body, _) = post_probe(&server, &probe.token);
    assert_eq!(status, StatusCode::OK, "agent batch after the outage: {body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("ack")["stored"], json!(1), "{body}");
    let client = reqwest::blocking::Client::new();
    let (status, body) = legacy_probe(&server.base, &client, "echo legacy probe during the outage").expect("answer");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));

    let rows = assert_exactly_once(&server, &scratch.url, &agents, PER_AGENT, &["probe"]);
    let probes: Vec<&Stored> = rows.iter().filter(|r| r.history_command.contains("probe during the outage")).collect();
    assert_eq!(probes.len(), 2, "each probe stored once, after the outage: {probes:?}");
    assert_eq!(rows.len(), AGENTS * PER_AGENT + 2);
    assert!(server.logs().contains("audit batch not stored"), "the server never saw the outage");
    eprintln!(
        "{}: {} events from {AGENTS} agents; database stopped after {at} prompts (stop took {stop_took:.1?}), \
         down {down_for:.1?}, {outage:.1?} until it accepted connections again, {during_outage} prompts \
         meanwhile, {spooled_in_outage} events waiting in the spools; outage answers: {}; all spools empty \
         {flushed_in:.1?} after the restart; {:.1?} in all",
        service.name(),
        AGENTS * PER_AGENT,
        outage_answers.iter().map(|(r, s, _, t)| format!("{r} {s} after {t:.1?}")).collect::<Vec<_>>().join(", "),
        started.elapsed()
    );
    for (route, status, body, _) in &outage_answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{route} during the outage: {body}");
    }
    drop(server);
}

#[test]
fn agents_lose_nothing_when_mariadb_restarts_under_the_server() {
    database_restart_mid_run(Service::MariaDb);
}

#[test]
fn agents_lose_nothing_when_postgresql_restarts_under_the_server() {
    database_restart_mid_run(Service::Postgres);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Legacy GETs while the server is SIGKILLed
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn every_legacy_ok_is_stored_exactly_once_across_sigkills() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 1_500;
    let _serial = serial();
    let started = Instant::now();
    let mut server = Server::start_with(Options { seed: vec![], ..Options::default() });
    let done = Arc::new(AtomicUsize::new(0));
    let line = |c: usize, n: usize| format!("legacy client {c} line {n}: echo 'é' \"$HOME\" | tee /tmp/x*");
    // Each client sends its lines in order, keep-alive, and resends a line until it gets OK, as a careful client
    // would: a resend after a lost answer must be a duplicate, not a second row.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (base, done) = (server.base.clone(), done.clone());
            thread::spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
                let (mut first_try_ok, mut failures, mut refused) = (0, 0, Vec::new());
                for n in 1..=PER_CLIENT {
                    let started = Instant::now();
                    let mut first = true;
                    loop {
                        match legacy_probe(&base, &client, &line(c, n)) {
                            Ok((StatusCode::OK, body)) => {
                                assert_eq!(body, "OK");
                                first_try_ok += usize::from(first);
                                break;
                            }
                            Ok((status, body)) if status != StatusCode::SERVICE_UNAVAILABLE => {
                                refused.push(format!("{status} {body}"));
                                break;
                            }
                            _ => failures += 1,
                        }
                        first = false;
                        assert!(started.elapsed() < Duration::from_secs(60), "client {c} line {n} never got OK");
                        thread::sleep(Duration::from_millis(20));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (first_try_ok, failures, refused)
            })
        })
        .collect();
    let total = CLIENTS * PER_CLIENT;
    for third in [1, 2] {
        wait_for(&done, total * third / 3, Duration::from_secs(120));
        server.kill();
        thread::sleep(Duration::from_millis(300));
        server.restart();
    }
    let (mut first_try_ok, mut failures) = (0, 0);
    for client in clients {
        let (ok, failed, refused) = client.join().expect("client thread");
        assert!(refused.is_empty(), "refused: {refused:?}");
        first_try_ok += ok;
        failures += failed;
    }
    let database_url = format!("sqlite://{}", server.dir.path().join("omserver.db").display());
    let (rows, _) = stored(&database_url);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        assert_eq!(row.source, "legacy");
        *counts.entry(row.history_command.as_str()).or_default() += 1;
    }
    let expected: Vec<String> = (0..CLIENTS).flat_map(|c| (1..=PER_CLIENT).map(move |n| line(c, n))).collect();
    let missing: Vec<&String> = expected.iter().filter(|l| !counts.contains_key(l.as_str())).collect();
    let twice: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} lines answered OK are not stored: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(twice.is_empty(), "{} lines stored more than once: {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(rows.len(), total);
    assert!(failures > 0, "no request failed: the kills came at a quiet moment");
    let verify = cli(&server, &["audit", "verify"]);
    assert!(verify.status.success() && verify.stdout.contains(" 0 problems"), "audit verify: {verify:?}");
    eprintln!(
        "{total} legacy lines from {CLIENTS} keep-alive clients across 2 SIGKILLs: {first_try_ok} OK at the first \
         try, {failures} failed attempts resent, every line stored once; {:.1?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Agents on a lossy link
// ---------------------------------------------------------------------------------------------------------------

/// Agents on a host in a network namespace (the test environment's netns piece) whose link to the server drops
/// 30 % of the packets both ways: requests, answers and acknowledgements are lost, deliveries time out and are
/// sent again, and every event must still be stored exactly once.
#[test]
fn agents_on_a_link_losing_thirty_percent_of_packets_lose_nothing_and_duplicate_nothing() {
    const AGENTS: usize = 3;
    const PER_AGENT: usize = 1_000;
    let _serial = serial();
    let started = Instant::now();
    let env = common::testenv::testenv();
    let host =
        env.netns.hosts.get(4).cloned().expect("the netns piece's fifth host: run `cargo xtask testenv up netns`");
    let binary = agent_binary();
    // The server listens on this side of the host's link: the agents reach it through the lossy veth.
    let server = Server::start_with(Options {
        seed: vec![],
        listen_address: Some(host.server_address.clone()),
        ..Options::default()
    });
    let agents: Vec<Arc<Agent>> = (0..AGENTS)
        .map(|i| {
            let mut agent = Agent::register(&server, &binary, 200 + i);
            agent.netns = Some(host.namespace.clone());
            Arc::new(agent)
        })
        .collect();
    let loss = Fault::lose_both_ways(&env.netns, &host, 30);
    let done = Arc::new(AtomicUsize::new(0));
    let drivers = drive(&agents, PER_AGENT, &done);
    let complaints: Vec<String> = drivers.into_iter().flat_map(|d| d.join().expect("driver thread")).collect();
    assert!(complaints.is_empty(), "prompts complained:\n{}", complaints.join("\n"));
    for agent in &agents {
        agent.flush_until_empty(Duration::from_secs(240));
    }
    let dropped = loss.dropped();
    drop(loss);
    assert!(dropped > 0, "the loss dropped nothing");
    let database_url = format!("sqlite://{}", server.dir.path().join("omserver.db").display());
    let rows = assert_exactly_once(&server, &database_url, &agents, PER_AGENT, &[]);
    assert_eq!(rows.len(), AGENTS * PER_AGENT);
    let retried = agents.iter().filter(|a| a.log().contains("delivery failed")).count();
    eprintln!(
        "{} events from {AGENTS} agents over a link losing 30 % each way: {dropped} packets dropped, {retried} agents \
         logged failed deliveries, all stored once and checked in {:.1?}",
        AGENTS * PER_AGENT,
        started.elapsed()
    );
}
