//! Benchmark: audit search over a large history, and what the command index costs ingest. Run with
//! `cargo xtask bench-search [EVENTS] [ROUNDS] [sqlite|postgres|mariadb|both] [keep]` (defaults 10 000 000
//! events, 50 rounds, both SQLite and PostgreSQL), which builds the release binary first; figures go to
//! BENCHMARKS.md. MariaDB, on its own, has no command index: its figures are its size and what a window costs.
//!
//! For each database: a fresh one is migrated by `Store::connect`, then filled in SQL with EVENTS audit events
//! over the last 30 days across 100 hosts: commands from a few families (paths, services, addresses, one-off
//! release names), `root` mostly, `alice` one in ten (half of those as a login user `alice(1000)`), `mallory`
//! one in 100 000. The command index is built after the fill (SQLite: FTS5 `rebuild`; PostgreSQL: the words
//! table filled and its GIN index created), which is also what migrations 0014 and 0016 cost an existing
//! database; the fill prints its steps' times. Then a release `omserver` serves it and, with the admin token:
//!
//! - **queries**: ROUNDS times each, one after the other, timed by the client on loopback: the newest page, a
//!   common / rare / absent user, a common / rare / absent term, an address, a rare user with a common term, a
//!   short term (a window), one day by the time received, and the CSV of a rare term;
//! - **ingest**: `POST /api/audit/events` from 4 clients, batches of 1 000 events, with the command index and
//!   without it, on the filled database. Both databases index off the writer's path: "without" moves the
//!   index's position past every id, so its keeper finds nothing to do, and "with" puts it back at the newest
//!   row first, so it indexes exactly what the run stores, alternating;
//! - **archive**: `omserver audit archive --before` the second day, which moves the oldest day (a thirtieth of
//!   the events) into archive files, while the 4 clients go on ingesting: the pass's rows per second, the
//!   archive's bytes per event, and ingest meanwhile against the same ingest without a pass just before.
//!
//! Arguments: `BINARY LIBRARY_1003 [EVENTS] [ROUNDS] [sqlite|postgres|mariadb|both] [keep]`. With `keep`, the
//! databases are filled once into `$TMPDIR/omserver-bench-search/search-EVENTS.db` and `omserver_bench_search_EVENTS`,
//! kept, and reused by the next run with `keep`, which measures the queries only (ingest and the archive would
//! change the data): for working on a query plan without a fill each time.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::time::Instant;

use bench_server::{
    drop_mariadb, drop_postgres, fill, fresh_mariadb, fresh_postgres, fresh_sqlite, mariadb_admin, percentile,
    postgres_admin, run_cli, Api, BenchServer,
};
use omserver::store::now_ms;
use serde_json::json;
use sqlx::{Connection, Executor};

type Error = Box<dyn std::error::Error + Send + Sync>;

const DAY_MS: i64 = 86_400_000;
const HOSTS: i64 = 100;
/// The database's name on the PostgreSQL or MariaDB server.
const SERVER_DB: &str = "omserver_bench_search";
const INGEST_CLIENTS: usize = 4;
const INGEST_BATCH: usize = 1000;
const INGEST_BATCHES_PER_CLIENT: usize = 50;
/// Runs with the index and without, alternating: a run is about two seconds, so one pair alone is noise.
const INGEST_PAIRS: usize = 4;

fn summary(name: &str, mut ms: Vec<f64>, rows: usize) {
    ms.sort_by(f64::total_cmp);
    println!(
        "  {name:<62} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms  ({rows} rows)",
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms[ms.len() - 1]
    );
}

/// The fill, as statements for one kind of database, the command index dropped first and built last.
fn fill_statements(kind: &str, events: i64, now: i64) -> Vec<String> {
    let (postgres, mariadb) = (kind == "postgres", kind == "mariadb");
    let series = |n: i64| match kind {
        "postgres" => format!("generate_series(1::bigint, {n}) AS n(i)"),
        // MariaDB's sequence engine.
        "mariadb" => format!("(SELECT seq AS i FROM seq_1_to_{n}) AS n"),
        _ => format!(
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s) AS n"
        ),
    };
    let (start, step) = (now - 30 * DAY_MS, 30 * DAY_MS / events.max(1));
    // Strings joined, numbers among them as text: `||` (MariaDB's is OR: CONCAT there).
    let join = |parts: &[&str]| {
        if mariadb {
            return format!("CONCAT({})", parts.join(", "));
        }
        let text = |p: &&str| if postgres && !p.starts_with('\'') { format!("({p})::text") } else { format!("({p})") };
        parts.iter().map(text).collect::<Vec<_>>().join(" || ")
    };
    // Integer division (MariaDB's `/` gives a decimal).
    let quotient = if mariadb { "DIV" } else { "/" };
    let command = format!(
        "CASE i % 10 \
         WHEN 5 THEN 'systemctl restart nginx' \
         WHEN 6 THEN 'tail -n 100 /var/log/syslog | grep -i error' \
         WHEN 7 THEN {} \
         WHEN 8 THEN {} \
         WHEN 9 THEN {} \
         ELSE {} END",
        join(&["'ssh deploy@10.'", "i % 250", "'.'", &format!("i {quotient} 250 % 250"), "'.7'"]),
        join(&["'cd /srv/release-'", "i"]),
        join(&["'vim /etc/nginx/sites-enabled/site'", "i % 5000"]),
        join(&["'ls -l /var/log/app-'", "i % 1000"]),
    );
    let mut statements = Vec::new();
    statements.push(format!(
        "INSERT INTO server_list (server_name, server_lip, created_at) SELECT {}, {}, 0 FROM {}",
        join(&["'host'", "i"]),
        join(&["'10.0.'", &format!("i {quotient} 250"), "'.'", "i % 250"]),
        series(HOSTS)
    ));
    if postgres {
        statements.push("DROP INDEX server_history_text_trgm_idx".into());
    }
    statements.push(format!(
        "INSERT INTO server_history (host_id, history_ip, history_id, history_user, login_user, tty, \
         history_datetime, received_at, history_command, source, chain_seq, row_hash) \
         SELECT 1 + i % {HOSTS}, '10.0.0.1', i, \
         CASE WHEN i % 100000 = 7 THEN 'mallory' WHEN i % 20 = 3 THEN 'alice' ELSE 'root' END, \
         CASE WHEN i % 20 = 13 THEN 'alice(1000)' END, 'pts/1', '2026-12-01 10:00:00', \
         {start} + i * {step}, {command}, 'agent', 1 + i {quotient} {HOSTS}, '{}' FROM {}",
        "0".repeat(64),
        series(events)
    ));
    // Each host's chain head, as the audit writer keeps it (retention walks the hosts that have one).
    statements.push(format!(
        "INSERT INTO audit_chain (host_id, last_seq, last_hash) \
         SELECT host_id, MAX(chain_seq), '{}' FROM server_history GROUP BY host_id",
        "0".repeat(64)
    ));
    // Where the alert feed has read up to, as a server that saw these rows arrive would have left it (from 0,
    // it would read every row while the queries are timed).
    statements
        .push("UPDATE notify_cursors SET position = (SELECT MAX(id) FROM server_history) WHERE name = 'audit'".into());
    if postgres {
        // As migration 0016 builds it over existing rows (its words: each run of ASCII punctuation one `q`).
        statements.push(
            "INSERT INTO server_history_text (id, words) SELECT id, \
             regexp_replace(history_command, '[\\x01-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]+', 'q', 'g') \
             FROM server_history"
                .into(),
        );
        statements.push(
            "CREATE INDEX server_history_text_trgm_idx ON server_history_text USING gin (words gin_trgm_ops) \
             WITH (fastupdate = on, gin_pending_list_limit = 32768)"
                .into(),
        );
        statements.push("UPDATE audit_text_position SET position = (SELECT MAX(id) FROM server_history)".into());
        statements.push("VACUUM ANALYZE".into());
    } else if mariadb {
        // No command index on MariaDB: a search there reads a window.
        statements.push("ANALYZE TABLE server_history".into());
    } else {
        // As migration 0014 builds it over existing rows.
        statements.push("INSERT INTO server_history_text (server_history_text) VALUES ('rebuild')".into());
        statements.push("UPDATE audit_text_position SET position = (SELECT MAX(id) FROM server_history)".into());
        statements.push("ANALYZE".into());
    }
    statements
}

/// Where a database lives: SQLite's file, the database's name on the PostgreSQL or MariaDB server.
struct Place {
    sqlite: std::path::PathBuf,
    server: String,
}

/// A database: created empty, migrated, filled. Returns its URL and, on a server, the admin URL to drop it.
async fn prepare(kind: &str, place: &Place, events: i64, now: i64) -> Result<(String, Option<String>), Error> {
    let statements = fill_statements(kind, events, now);
    if kind == "sqlite" {
        let (url, mut conn) = fresh_sqlite(&place.sqlite).await?;
        fill(&mut conn, &statements).await?;
        conn.close().await?;
        let size = std::fs::metadata(&place.sqlite)?.len();
        println!("  database file: {:.0} MB ({:.0} bytes per event)", size as f64 / 1e6, size as f64 / events as f64);
        return Ok((url, None));
    }
    if kind == "mariadb" {
        let (url, admin) = fresh_mariadb(&place.server).await?;
        let mut conn = sqlx::MySqlConnection::connect(&url).await?;
        fill(&mut conn, &statements).await?;
        // InnoDB's own figures, from its pages (the table and its secondary indexes).
        let size: (i64, i64) = sqlx::query_as(
            "SELECT CAST(data_length AS SIGNED), CAST(index_length AS SIGNED) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'server_history'",
        )
        .fetch_one(&mut conn)
        .await?;
        println!(
            "  server_history: {:.0} MB ({:.0} bytes per event), of which its secondary indexes {:.0} MB",
            (size.0 + size.1) as f64 / 1e6,
            (size.0 + size.1) as f64 / events as f64,
            size.1 as f64 / 1e6
        );
        conn.close().await?;
        return Ok((url, Some(admin)));
    }
    let (url, admin) = fresh_postgres(&place.server).await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    fill(&mut conn, &statements).await?;
    let sizes: (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('server_history') + pg_total_relation_size('server_history_text'), \
         pg_total_relation_size('server_history_text')",
    )
    .fetch_one(&mut conn)
    .await?;
    println!(
        "  server_history with its indexes: {:.0} MB ({:.0} bytes per event), of which the command index (its words and trigrams) {:.0} MB",
        sizes.0 as f64 / 1e6,
        sizes.0 as f64 / events as f64,
        sizes.1 as f64 / 1e6
    );
    conn.close().await?;
    Ok((url, Some(admin)))
}

/// The searches, by name and query string.
fn searches(events: i64, now: i64) -> Vec<(String, String)> {
    let day = chrono::DateTime::from_timestamp_millis(now - 10 * DAY_MS)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    // A release name made once, near the middle of the history (i ≡ 8 mod 10).
    let rare = format!("release-{}", events / 20 * 10 + 8);
    // The address of the `ssh` line i = 4257 (i ≡ 7 mod 10: 10.{i % 250}.{i / 250 % 250}.7), which 1 in
    // 62 500 lines share.
    let address = "@10.7.17.7";
    vec![
        ("newest page".to_owned(), "/api/audit/events?limit=100".to_owned()),
        ("one host of 100 (host42)".to_owned(), "/api/audit/events?host=host42&limit=100".to_owned()),
        ("user, common (alice)".to_owned(), "/api/audit/events?user=alice&limit=100".to_owned()),
        ("user, rare (mallory)".to_owned(), "/api/audit/events?user=mallory&limit=100".to_owned()),
        ("user, absent".to_owned(), "/api/audit/events?user=nobody&limit=100".to_owned()),
        ("term, common (nginx)".to_owned(), "/api/audit/events?q=nginx&limit=100".to_owned()),
        (format!("term, rare ({rare})"), format!("/api/audit/events?q={rare}&limit=100")),
        ("term, absent (qwertyuiop)".to_owned(), "/api/audit/events?q=qwertyuiop&limit=100".to_owned()),
        (format!("term, an address ({address})"), format!("/api/audit/events?q=%40{}&limit=100", &address[1..])),
        ("term, upper case (NGINX/SITES)".to_owned(), "/api/audit/events?q=NGINX%2FSITES&limit=100".to_owned()),
        (
            "rare user with a common term (mallory, ssh deploy)".to_owned(),
            "/api/audit/events?user=mallory&q=ssh%20deploy&limit=100".to_owned(),
        ),
        ("short term, a window (ls)".to_owned(), "/api/audit/events?q=ls&limit=100".to_owned()),
        (format!("one day received ({day})"), format!("/api/audit/events?from={day}&to={day}&limit=100")),
        (
            format!("one day received, a common term ({day}, nginx)"),
            format!("/api/audit/events?from={day}&to={day}&q=nginx&limit=100"),
        ),
        (format!("CSV of a rare term ({rare})"), format!("/api/audit/events.csv?q={rare}")),
    ]
}

/// Each search ROUNDS times (after one untimed pass); prints p50/p95/max and the rows of the last answer.
async fn query_times(api: &Api, events: i64, rounds: usize) -> Result<(), Error> {
    let all = searches(events, now_ms());
    for (_, path) in &all {
        fetch(api, path).await?;
    }
    for (name, path) in &all {
        let mut ms = Vec::with_capacity(rounds);
        let mut rows = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            rows = fetch(api, path).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        summary(name, ms, rows);
    }
    Ok(())
}

/// One GET, read whole; the rows it answered (events, or CSV lines after the header).
async fn fetch(api: &Api, path: &str) -> Result<usize, Error> {
    let response = api.http.get(format!("{}{path}", api.base)).bearer_auth(&api.token).send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {body}").into());
    }
    Ok(if path.contains(".csv") {
        body.lines().count().saturating_sub(1)
    } else {
        serde_json::from_str::<serde_json::Value>(&body)?["events"].as_array().map_or(0, Vec::len)
    })
}

/// Batch ingest from 4 clients into a host of its own, `runs` times with the index and without, alternating.
async fn ingest_times(server: &BenchServer, binary: &std::path::Path, url: &str, runs: usize) -> Result<(), Error> {
    let api = Api { http: reqwest::Client::new(), base: server.base.clone(), token: server.token.clone() };
    api.post("/api/hosts", json!({ "name": "ingest", "ip": "127.0.0.9" })).await?;
    let agent = run_cli(binary, &server.config_path(), &["hosts", "token", "ingest"]).await?.trim().to_owned();
    let postgres = url.starts_with("postgres");
    let (drop, create) = (
        "UPDATE audit_text_position SET position = 4000000000000000000",
        "UPDATE audit_text_position SET position = (SELECT MAX(id) FROM server_history)",
    );
    // The first run warms the caches (the server's and the database file's) and is not counted. MariaDB has no
    // command index to switch (`None`).
    let mut states = vec![Some(true)];
    states.extend((0..runs * 2).map(|r| Some(r % 2 == 0)));
    if url.starts_with("mysql") {
        states.fill(None);
    }
    // Events per second of the counted runs, with the index and without.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for (round, &state) in states.iter().enumerate() {
        // Each run with the index starts with the position at the newest row (what earlier runs left unindexed
        // is not this run's work); "off" moves it past every id, so the keeper finds nothing to do.
        let indexed = state == Some(true);
        let statement = if indexed { create } else { drop };
        if state.is_some() && round > 0 && (indexed || states[round - 1] == Some(true)) {
            if postgres {
                sqlx::PgConnection::connect(url).await?.execute(statement).await?;
            } else {
                sqlx::SqliteConnection::connect(url).await?.execute(statement).await?;
            }
        }
        let started = Instant::now();
        ingest_burst(&api, &agent, |c| {
            (0..INGEST_BATCHES_PER_CLIENT).map(|b| batch_body(&format!("r{round}c{c}"), b * INGEST_BATCH)).collect()
        })
        .await?;
        let events = INGEST_CLIENTS * INGEST_BATCHES_PER_CLIENT * INGEST_BATCH;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "  ingest, {}: {events} events in {seconds:.1} s, {:.0} events/s{}",
            match state {
                Some(true) => "command index on ",
                Some(false) => "command index off",
                None => "no command index",
            },
            events as f64 / seconds,
            if round == 0 { " (warm-up, not counted)" } else { "" }
        );
        if round > 0 {
            if indexed { &mut on } else { &mut off }.push(events as f64 / seconds);
        }
        if indexed {
            // How long the index's keeper takes to reach the newest row once the burst is over.
            let waiting = "SELECT COUNT(*) FROM server_history WHERE id > (SELECT position FROM audit_text_position)";
            let lag = || async {
                Ok::<i64, Error>(if postgres {
                    sqlx::query_scalar(waiting).fetch_one(&mut sqlx::PgConnection::connect(url).await?).await?
                } else {
                    sqlx::query_scalar(waiting).fetch_one(&mut sqlx::SqliteConnection::connect(url).await?).await?
                })
            };
            let (behind, caught) = (lag().await?, Instant::now());
            while lag().await? > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            println!(
                "    the index was {behind} rows behind at the end, caught up {:.1} s later",
                caught.elapsed().as_secs_f64()
            );
        }
    }
    if !on.is_empty() && !off.is_empty() {
        on.sort_by(f64::total_cmp);
        off.sort_by(f64::total_cmp);
        let (on, off) = (percentile(&on, 0.5), percentile(&off, 0.5));
        println!(
            "  ingest, median of {runs} runs each: index on {on:.0} events/s, off {off:.0}: on is {:.0} % of off",
            on / off * 100.0
        );
    }
    Ok(())
}

/// Retention on the filled database: the oldest day moved into the archive by `omserver audit archive`, while
/// 4 clients ingest in rounds ([`ingest_rounds`]); the pass's rate, the archive's bytes per event, and ingest
/// meanwhile against the same rounds for 20 s before the pass.
async fn archive_times(server: &BenchServer, binary: &std::path::Path, oldest: i64) -> Result<(), Error> {
    let api = Api { http: reqwest::Client::new(), base: server.base.clone(), token: server.token.clone() };
    let agent = run_cli(binary, &server.config_path(), &["hosts", "token", "ingest"]).await?.trim().to_owned();
    let before = omserver::calendar::utc_text(oldest + DAY_MS);
    let before = before.trim_end_matches(" UTC").to_owned();
    let (binary_path, config) = (binary.to_owned(), server.config_path());
    // Ingest goes in rounds (a batch from each client, then the next round) so that it stops with the pass; the
    // same rounds for 20 s without a pass first are what it is compared with.
    let alone = Instant::now();
    let events = ingest_rounds(&api, &agent, "alone", || alone.elapsed().as_secs() >= 20).await?;
    let alone = events as f64 / alone.elapsed().as_secs_f64();
    let started = Instant::now();
    let pass =
        tokio::spawn(async move { run_cli(&binary_path, &config, &["audit", "archive", "--before", &before]).await });
    let events = ingest_rounds(&api, &agent, "archive", || pass.is_finished()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let said = pass.await??;
    // "N rows of H hosts received before T moved into F files in DIR"
    let words: Vec<&str> = said.split_whitespace().collect();
    let rows: f64 = words.first().and_then(|w| w.parse().ok()).ok_or_else(|| format!("audit archive said {said:?}"))?;
    let dir = said.rsplit_once(" in ").map(|(_, d)| d.trim()).ok_or_else(|| format!("audit archive said {said:?}"))?;
    let bytes = directory_bytes(std::path::Path::new(dir))?;
    let meanwhile = events as f64 / seconds;
    println!(
        "  archive of the oldest day: {rows:.0} rows in {seconds:.1} s ({:.0} rows/s), {:.0} bytes per event in gzip files; \
         ingest meanwhile {meanwhile:.0} events/s, {:.0} % of the same ingest alone ({alone:.0} events/s)",
        rows / seconds,
        bytes as f64 / rows.max(1.0),
        meanwhile / alone * 100.0
    );
    Ok(())
}

fn directory_bytes(dir: &std::path::Path) -> Result<u64, Error> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        total += if entry.file_type()?.is_dir() { directory_bytes(&entry.path())? } else { entry.metadata()?.len() };
    }
    Ok(total)
}

/// Rounds of one batch from each client until `done()`; the events sent. `tag` keeps the streams apart.
async fn ingest_rounds(api: &Api, agent: &str, tag: &str, done: impl Fn() -> bool) -> Result<usize, Error> {
    let (mut events, mut round) = (0, 0);
    while !done() {
        ingest_burst(api, agent, |c| vec![batch_body(&format!("{tag}{round}c{c}"), 0)]).await?;
        events += INGEST_CLIENTS * INGEST_BATCH;
        round += 1;
    }
    Ok(events)
}

/// [`INGEST_CLIENTS`] clients at once, each posting its bodies (`bodies(client)`) one after the other.
async fn ingest_burst(api: &Api, agent: &str, bodies: impl Fn(usize) -> Vec<String>) -> Result<(), Error> {
    let clients: Vec<_> = (0..INGEST_CLIENTS)
        .map(|c| {
            let (http, base, agent, bodies) = (api.http.clone(), api.base.clone(), agent.to_owned(), bodies(c));
            tokio::spawn(async move {
                for body in bodies {
                    let response = http
                        .post(format!("{base}/api/audit/events"))
                        .bearer_auth(&agent)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    if !response.status().is_success() {
                        return Err::<(), Error>(format!("ingest: {}", response.status()).into());
                    }
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    Ok(())
}

fn batch_body(stream: &str, from: usize) -> String {
    let events: Vec<serde_json::Value> = (1..=INGEST_BATCH)
        .map(|n| {
            let seq = from + n;
            json!({ "stream": stream, "seq": seq, "history_id": seq, "user": "root", "login_user": "alice", "uid": 0,
                    "tty": "/dev/pts/3", "ip": "127.0.0.9", "time": "2026-12-04 12:00:00",
                    "command": format!("tail -n 100 /var/log/syslog | grep -i error # {stream} {seq}") })
        })
        .collect();
    json!({ "events": events }).to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, library] = [0, 1].map(|i| std::path::PathBuf::from(args.get(i).cloned().unwrap_or_default()));
    let events: i64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50).max(1);
    let kinds: Vec<&str> = match args.get(4).map(String::as_str) {
        None | Some("both") => vec!["sqlite", "postgres"],
        Some(kind @ ("sqlite" | "postgres" | "mariadb")) => vec![kind],
        Some(other) => return Err(format!("unknown database {other:?}: sqlite, postgres, mariadb or both").into()),
    };
    let keep = match args.get(5).map(String::as_str) {
        None => false,
        Some("keep") => true,
        Some(other) => return Err(format!("unknown option {other:?}: keep or nothing").into()),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("audit search bench: {events} events, {HOSTS} hosts, {rounds} rounds");
    for kind in kinds {
        println!("{kind}:");
        let dir = tempfile::tempdir()?;
        let kept = std::env::temp_dir().join("omserver-bench-search");
        let place = if keep {
            std::fs::create_dir_all(&kept)?;
            Place { sqlite: kept.join(format!("search-{events}.db")), server: format!("{SERVER_DB}_{events}") }
        } else {
            Place { sqlite: dir.path().join("search.db"), server: SERVER_DB.to_owned() }
        };
        let started = Instant::now();
        let now = now_ms();
        let kept = kept_url(kind, &place, keep).await?;
        let (url, admin) = match &kept {
            Some(url) => {
                println!("  reusing the database filled before: {url}");
                (url.clone(), None)
            }
            None => prepare(kind, &place, events, now).await?,
        };
        println!("  filled in {:.0} s", started.elapsed().as_secs_f64());
        // The periodic chain verification would read every (made-up) row while we measure: off.
        let mut server = BenchServer::start_on(&binary, &library, &url, "[notify]\nverify_every_secs = 0\n")
            .map_err(|e| e.to_string())?;
        if kept.is_some() {
            // Only a first start prints an admin token.
            server.token = run_cli(&binary, &server.config_path(), &["token", "create", "bench-search"]).await?;
            server.token = server.token.trim().to_owned();
        }
        let api = Api { http: reqwest::Client::new(), base: server.base.clone(), token: server.token.clone() };
        query_times(&api, events, rounds).await?;
        if keep {
            // Ingest and the archive change the data; a kept database stays as filled, for the next run's queries.
            println!("  kept {url} (the queries only; remove it to fill anew)");
            continue;
        }
        ingest_times(&server, &binary, &url, INGEST_PAIRS).await?;
        archive_times(&server, &binary, now - 30 * DAY_MS).await?;
        drop(server);
        match admin {
            Some(admin) if kind == "mariadb" => drop_mariadb(&admin, &place.server).await?,
            Some(admin) => drop_postgres(&admin, &place.server).await?,
            None => {}
        }
    }
    Ok(())
}

/// With `keep`, the URL of the database a run before filled at `place`, if there is one.
async fn kept_url(kind: &str, place: &Place, keep: bool) -> Result<Option<String>, Error> {
    if !keep {
        return Ok(None);
    }
    if kind == "sqlite" {
        return Ok(place.sqlite.exists().then(|| format!("sqlite://{}", place.sqlite.display())));
    }
    let (admin, found) = if kind == "mariadb" {
        let admin = mariadb_admin();
        let mut conn = sqlx::MySqlConnection::connect(&admin).await?;
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM information_schema.schemata WHERE schema_name = ?")
            .bind(&place.server)
            .fetch_optional(&mut conn)
            .await?;
        (admin, found)
    } else {
        let admin = postgres_admin();
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&place.server)
            .fetch_optional(&mut conn)
            .await?;
        (admin, found)
    };
    Ok(match (found, admin.rsplit_once('/')) {
        (Some(_), Some((base, _))) => Some(format!("{base}/{}", place.server)),
        _ => None,
    })
}
