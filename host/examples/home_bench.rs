//! Benchmark: the console's home page and `/jobs` over a large history. Run with
//! `cargo xtask bench-home [JOBS] [EVENTS] [ROUNDS] [sqlite|postgres]` (defaults 1 000 000 jobs, 10 000 000 audit
//! events, 50 rounds, both databases), which starts the test environment (chromedriver) and builds the release
//! binary first; figures go to BENCHMARKS.md.
//!
//! For each database: a fresh one is migrated by `Store::connect`, then filled in SQL (SQLite: recursive CTEs;
//! PostgreSQL: `generate_series`) with 100 hosts, JOBS jobs over the last 60 days (one in ten failed) and EVENTS
//! audit events over the last 30 days spread over the hosts, and its counts are filled the way migration 0013
//! fills them. Then a release `omserver` serves it and, logged in as the console is (a session cookie):
//!
//! - **server time**: ROUNDS times, each request the page makes, one after the other — `/` and the six API
//!   calls home.js makes on load, `/jobs` (rendered by the server) — timed by the client on loopback; per request
//!   and per page (the sum of its requests: the browser makes them in parallel, so this bounds it from above).
//! - **Chromium**: ROUNDS loads of `/` in headless Chromium: DOMContentLoaded (navigation timing), and the moment
//!   the page has drawn everything it reads (the two charts and the "Updated" line), from the same time origin.
//!
//! Arguments: `BINARY LIBRARY_1003 WEBDRIVER_URL CHROMIUM [JOBS] [EVENTS] [ROUNDS] [sqlite|postgres]`.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::time::Instant;

use bench_server::{drop_postgres, fill, fresh_postgres, fresh_sqlite, percentile, BenchServer};
use omserver::store::now_ms;
use serde_json::{json, Value};
use sqlx::Connection;

type Error = Box<dyn std::error::Error>;

const DAY_MS: i64 = 86_400_000;
const HOSTS: i64 = 100;
const POSTGRES_DB: &str = "omserver_bench_home";

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "  {name:<58} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms[ms.len() - 1]
    );
}

/// The fill, as statements for one dialect. `series(n)` is a row source of `i` from 1 to n.
fn fill_statements(postgres: bool, jobs: i64, events: i64, now: i64) -> Vec<String> {
    let series = |n: i64| {
        if postgres {
            format!("generate_series(1::bigint, {n}) AS n(i)")
        } else {
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s) AS n"
            )
        }
    };
    let (job_start, job_step) = (now - 60 * DAY_MS, 60 * DAY_MS / jobs.max(1));
    let (event_start, event_step) = (now - 30 * DAY_MS, 30 * DAY_MS / events.max(1));
    vec![
        format!(
            "INSERT INTO server_list (server_name, server_lip, created_at) \
             SELECT 'host' || i, '10.0.' || (i / 250) || '.' || (i % 250), 0 FROM {}",
            series(HOSTS)
        ),
        format!(
            "INSERT INTO jobs (module_id, module_version, backend, params, hosts, status, error, created_by, \
             created_at, started_at, finished_at) \
             SELECT 1003, '1.0.0', 'local', '{{}}', '[\"host1\",\"host2\"]', \
             CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, \
             CASE WHEN i % 10 = 0 THEN '1 of 2 hosts did not succeed' END, 'admin', \
             {job_start} + i * {job_step}, {job_start} + i * {job_step} + 5, {job_start} + i * {job_step} + 900 \
             FROM {}",
            series(jobs)
        ),
        format!(
            "INSERT INTO server_history (host_id, history_ip, history_id, history_user, login_user, tty, \
             history_datetime, received_at, history_command, source, chain_seq, row_hash) \
             SELECT 1 + i % {HOSTS}, '10.0.0.1', i, 'root', 'alice', 'pts/1', '2026-12-01 10:00:00', \
             {event_start} + i * {event_step}, 'ls -l /var/log/app-' || i, 'agent', 1 + i / {HOSTS}, \
             '{}' FROM {}",
            "0".repeat(64),
            series(events)
        ),
        // As migration 0013 fills them.
        "DELETE FROM job_days".into(),
        "INSERT INTO job_days (day, status, jobs) \
         SELECT created_at - (created_at % 86400000), status, COUNT(*) FROM jobs \
         WHERE status NOT IN ('queued', 'running') GROUP BY created_at - (created_at % 86400000), status"
            .into(),
        "DELETE FROM audit_hours".into(),
        "INSERT INTO audit_hours (hour, events) SELECT received_at - (received_at % 3600000), COUNT(*) \
         FROM server_history GROUP BY received_at - (received_at % 3600000)"
            .into(),
        // What a database that has lived a while has: statistics, and (PostgreSQL) a visibility map.
        if postgres { "VACUUM ANALYZE".into() } else { "ANALYZE".into() },
    ]
}

/// A database: created empty, migrated, filled. Returns its URL and, for PostgreSQL, the admin URL to drop it.
async fn prepare(kind: &str, dir: &std::path::Path, jobs: i64, events: i64) -> Result<(String, Option<String>), Error> {
    let statements = fill_statements(kind == "postgres", jobs, events, now_ms());
    if kind == "sqlite" {
        let (url, mut conn) = fresh_sqlite(&dir.join("home.db")).await?;
        fill(&mut conn, &statements).await?;
        conn.close().await?;
        return Ok((url, None));
    }
    let (url, admin) = fresh_postgres(POSTGRES_DB).await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    fill(&mut conn, &statements).await?;
    conn.close().await?;
    Ok((url, Some(admin)))
}

/// Logs in as `admin` the way the console's form does and returns the session cookie (`name=value`).
async fn login(http: &reqwest::Client, base: &str, password: &str) -> Result<String, Error> {
    let answer =
        http.post(format!("{base}/login")).json(&json!({ "name": "admin", "password": password })).send().await?;
    let cookie = answer
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| format!("login answered {} without a session cookie", answer.status()))?;
    Ok(cookie.to_owned())
}

/// The server time of each request of a page, ROUNDS times; prints per request and per page (sum) figures when
/// `report`.
async fn server_times(base: &str, cookie: &str, rounds: usize, report: bool) -> Result<(), Error> {
    let http = reqwest::Client::new();
    let since = chrono::DateTime::from_timestamp_millis(now_ms() - DAY_MS)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    // What home.js asks for when it loads, in its order.
    let home = [
        "/".to_owned(),
        "/api/modules".to_owned(),
        "/api/backends".to_owned(),
        "/api/jobs?status=running&limit=20".to_owned(),
        "/api/jobs?status=queued&limit=20".to_owned(),
        format!("/api/jobs?status=failed&from={}&limit=20", since.replace(' ', "%20")),
        "/api/audit/events?limit=500".to_owned(),
        "/api/overview?silent_after_secs=86400".to_owned(),
    ];
    for (page, paths) in [("/", &home[..]), ("/jobs", &["/jobs".to_owned()][..])] {
        let mut each: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); paths.len()];
        let mut total = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let mut sum = 0.0;
            for (i, path) in paths.iter().enumerate() {
                let started = Instant::now();
                let answer = http.get(format!("{base}{path}")).header(reqwest::header::COOKIE, cookie).send().await?;
                let status = answer.status();
                answer.bytes().await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if !status.is_success() {
                    return Err(format!("GET {path}: {status}").into());
                }
                each[i].push(ms);
                sum += ms;
            }
            total.push(sum);
        }
        if !report {
            continue;
        }
        if paths.len() > 1 {
            for (path, ms) in paths.iter().zip(each) {
                summary(&format!("GET {path}"), ms);
            }
        }
        summary(&format!("page {page}: all its requests, one after the other"), total);
    }
    Ok(())
}

/// ROUNDS loads of `/` in headless Chromium: DOMContentLoaded and "everything drawn", ms from navigation start.
async fn browser_times(
    base: &str,
    password: &str,
    webdriver: &str,
    chromium: &str,
    rounds: usize,
) -> Result<(), Error> {
    let profile = tempfile::tempdir()?;
    let browser = bench_server::chromium_logged_in(webdriver, chromium, profile.path(), base, password).await?;
    // Resolves with the navigation's DOMContentLoaded and the moment both charts and the "Updated" line are there.
    let measure = "const done = arguments[arguments.length - 1]; \
        const drawn = () => document.querySelector('#jobs-chart svg') && document.querySelector('#audit-chart svg') \
          && document.getElementById('updated').textContent !== ''; \
        const answer = () => done({ dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd, \
          drawn: performance.now() }); \
        if (drawn()) { answer(); return; } \
        new MutationObserver((_, observer) => { if (drawn()) { observer.disconnect(); answer(); } }) \
          .observe(document.body, { childList: true, subtree: true, characterData: true });";
    let (mut dcl, mut drawn) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        browser.goto(&format!("{base}/")).await?;
        let times: Value = browser.execute_async(measure, vec![]).await?;
        dcl.push(times["dcl"].as_f64().ok_or("no DOMContentLoaded time")?);
        drawn.push(times["drawn"].as_f64().ok_or("no drawn time")?);
    }
    summary("Chromium /: DOMContentLoaded", dcl);
    summary("Chromium /: lists, charts and \"Updated\" drawn", drawn);
    browser.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, library, webdriver, chromium] = [0, 1, 2, 3].map(|i| args.get(i).cloned().unwrap_or_default());
    let jobs: i64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let events: i64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let rounds: usize = args.get(6).and_then(|a| a.parse().ok()).unwrap_or(50).max(1);
    let kinds: Vec<&str> = match args.get(7).map(String::as_str) {
        None | Some("both") => vec!["sqlite", "postgres"],
        Some(kind @ ("sqlite" | "postgres")) => vec![kind],
        Some(other) => return Err(format!("unknown database {other:?}: sqlite, postgres or both").into()),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("home page bench: {jobs} jobs, {events} audit events, {HOSTS} hosts, {rounds} rounds");
    for kind in kinds {
        println!("{kind}:");
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let (url, admin) = prepare(kind, dir.path(), jobs, events).await?;
        println!("  filled in {:.0} s", started.elapsed().as_secs_f64());
        // The periodic chain verification would read every (made-up) row while we measure: off.
        let server = BenchServer::start_on(
            std::path::Path::new(&binary),
            std::path::Path::new(&library),
            &url,
            "[notify]\nverify_every_secs = 0\n",
        )?;
        let http = reqwest::Client::new();
        let cookie = login(&http, &server.base, &server.admin_password).await?;
        // One untimed load: the first query of each kind reads its pages from disk.
        server_times(&server.base, &cookie, 1, false).await?;
        server_times(&server.base, &cookie, rounds, true).await?;
        browser_times(&server.base, &server.admin_password, &webdriver, &chromium, rounds).await?;
        drop(server);
        if let Some(admin) = admin {
            drop_postgres(&admin, POSTGRES_DB).await?;
        }
    }
    Ok(())
}
