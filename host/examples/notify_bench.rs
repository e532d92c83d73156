//! Benchmark: audit ingest with and without alert notifications. Run with `cargo xtask bench-notify [SECONDS]
//! [ROUNDS]` (defaults 10 and 3), which builds the release binary and module 1003 first; figures go to
//! BENCHMARKS.md.
//!
//! Each round starts two fresh servers in turn (SQLite, durable settings), both with the alert rule `^storm `:
//! - **plain:** no subscription;
//! - **notified:** the rule subscribed by a webhook (a receiver in this process, answering 200) with a 5 s window.
//!
//! Against each, two clients send agent batches of 500 events back to back for SECONDS; 100 events a second
//! match the rule (1 000 in 10 s), the rest do not. Printed per run: events stored per second and the batch
//! latency (p50, p99); for the notified run, the messages the receiver got and the sum of their counts, which must
//! equal the matches sent (the bench waits up to 30 s for the last window). The goal: ingest within 5 % of the
//! plain run, at most one message per window, true counts.
//!
//! Arguments: `BINARY LIBRARY_1003 [SECONDS] [ROUNDS]`.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use bench_server::{percentile, BenchServer};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const BATCH: usize = 500;
const CLIENTS: usize = 2;
const MATCHES_PER_SEC: u64 = 100;
const WINDOW_SECS: u64 = 5;

/// Counts what a webhook receiver got: messages, and the sum of their `count`s.
#[derive(Default)]
struct Received {
    messages: AtomicUsize,
    counted: AtomicI64,
    arrivals: Mutex<Vec<Instant>>,
}

fn receiver() -> Result<(String, Arc<Received>), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let got = Arc::new(Received::default());
    let seen = got.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                let count = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["count"].as_i64()).unwrap_or(0);
                seen.messages.fetch_add(1, Ordering::SeqCst);
                seen.counted.fetch_add(count, Ordering::SeqCst);
                seen.arrivals.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
            }
            let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Ok((url, got))
}

struct Run {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    matches: u64,
}

fn post(
    client: &reqwest::blocking::Client,
    server: &BenchServer,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<Value, Error> {
    let response = client.post(format!("{}{path}", server.base)).bearer_auth(token).json(body).send()?;
    let status = response.status();
    let answer: Value = response.json().unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("{path}: {status} {answer}").into());
    }
    Ok(answer)
}

/// Two clients sending batches for `seconds`; `MATCHES_PER_SEC` of the events match `^storm `.
fn ingest(server: &BenchServer, agent: &str, seconds: u64) -> Result<Run, Error> {
    let started = Instant::now();
    let matches = Arc::new(AtomicI64::new(0));
    let seq = Arc::new(AtomicI64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (base, agent, matches, seq) = (server.base.clone(), agent.to_owned(), matches.clone(), seq.clone());
        clients.push(thread::spawn(move || -> Result<(Vec<f64>, usize), String> {
            let client = reqwest::blocking::Client::new();
            let (mut took, mut sent) = (Vec::new(), 0);
            while started.elapsed() < Duration::from_secs(seconds) {
                let due = (started.elapsed().as_secs_f64() * MATCHES_PER_SEC as f64) as i64;
                let events: Vec<Value> = (0..BATCH)
                    .map(|_| {
                        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
                        let storm = matches
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| (m < due).then_some(m + 1))
                            .is_ok();
                        let command = if storm { format!("storm {n}") } else { format!("ls /srv/{n}") };
                        json!({ "stream": "bench", "seq": n, "history_id": n, "user": "root", "login_user": "",
                                "uid": 0, "tty": "/dev/pts/1", "ip": "127.0.0.1", "time": "2026-12-03 10:00:00",
                                "command": command })
                    })
                    .collect();
                let at = Instant::now();
                let response = client
                    .post(format!("{base}/api/audit/events"))
                    .bearer_auth(&agent)
                    .json(&json!({ "events": events }))
                    .send()
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("ingest: {}", response.status()));
                }
                took.push(at.elapsed().as_secs_f64() * 1000.0);
                sent += BATCH;
            }
            Ok((took, sent))
        }));
    }
    let (mut took, mut sent) = (Vec::new(), 0);
    for client in clients {
        let (t, s) = client.join().map_err(|_| "client panicked")??;
        took.extend(t);
        sent += s;
    }
    let wall = started.elapsed().as_secs_f64();
    took.sort_by(f64::total_cmp);
    let matches = u64::try_from(matches.load(Ordering::SeqCst)).unwrap_or(0);
    Ok(Run {
        events_per_sec: sent as f64 / wall,
        p50_ms: percentile(&took, 0.5),
        p99_ms: percentile(&took, 0.99),
        matches,
    })
}

fn start(binary: &Path, library: &Path) -> Result<(BenchServer, String), Error> {
    let server = BenchServer::start(binary, library, "")?;
    let out = std::process::Command::new(binary)
        .arg("--config")
        .arg(server.config_path())
        .args(["hosts", "token", "localhost"])
        .output()?;
    if !out.status.success() {
        return Err(format!("hosts token: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let agent = String::from_utf8(out.stdout)?.trim().to_owned();
    let client = reqwest::blocking::Client::new();
    post(&client, &server, &server.token, "/api/audit/rules", &json!({ "name": "storm", "pattern": "^storm " }))?;
    Ok((server, agent))
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, library, rest @ ..] = args.as_slice() else {
        return Err("usage: notify_bench BINARY LIBRARY_1003 [SECONDS] [ROUNDS]".into());
    };
    let seconds: u64 = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let rounds: usize = rest.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let (binary, library) = (Path::new(binary), Path::new(library));
    println!("audit ingest with and without alert notifications: {CLIENTS} clients, batches of {BATCH}, {seconds} s, {MATCHES_PER_SEC} matches/s, window {WINDOW_SECS} s");
    let (mut plain_rates, mut notified_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (server, agent) = start(binary, library)?;
        let plain = ingest(&server, &agent, seconds)?;
        drop(server);
        println!(
            "round {round} plain:    {:>8.0} events/s  batch p50 {:>6.1} ms  p99 {:>6.1} ms  ({} matches)",
            plain.events_per_sec, plain.p50_ms, plain.p99_ms, plain.matches
        );
        plain_rates.push(plain.events_per_sec);

        let (server, agent) = start(binary, library)?;
        let (url, got) = receiver()?;
        let client = reqwest::blocking::Client::new();
        let channel = post(
            &client,
            &server,
            &server.token,
            "/api/notify/channels",
            &json!({ "name": "bench", "kind": "webhook", "url": url }),
        )?;
        post(
            &client,
            &server,
            &server.token,
            "/api/notify/subscriptions",
            &json!({ "channel": channel["id"], "event": "audit.alert", "filter": { "rule": "storm", "window_secs": WINDOW_SECS } }),
        )?;
        let notified = ingest(&server, &agent, seconds)?;
        let waited = Instant::now();
        while (got.counted.load(Ordering::SeqCst) as u64) < notified.matches
            && waited.elapsed() < Duration::from_secs(30)
        {
            thread::sleep(Duration::from_millis(100));
        }
        let arrivals = got.arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let closest = arrivals.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).fold(f64::INFINITY, f64::min);
        println!(
            "round {round} notified: {:>8.0} events/s  batch p50 {:>6.1} ms  p99 {:>6.1} ms  ({} matches → {} messages, counts sum {}, closest two {:.1} s apart)",
            notified.events_per_sec,
            notified.p50_ms,
            notified.p99_ms,
            notified.matches,
            got.messages.load(Ordering::SeqCst),
            got.counted.load(Ordering::SeqCst),
            closest
        );
        notified_rates.push(notified.events_per_sec);
    }
    plain_rates.sort_by(f64::total_cmp);
    notified_rates.sort_by(f64::total_cmp);
    let (p, n) = (percentile(&plain_rates, 0.5), percentile(&notified_rates, 0.5));
    println!("median ingest: plain {p:.0} events/s, notified {n:.0} events/s ({:+.1} %)", 100.0 * (n - p) / p);
    Ok(())
}
