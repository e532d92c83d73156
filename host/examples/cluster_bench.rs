//! Benchmark: what three servers behind haproxy cost against one server, on one PostgreSQL. Run with
//! `cargo xtask bench-cluster [SECONDS] [JOBS] [ROUNDS]` (defaults 10, 600 and 3), which builds the release binary
//! and module 1003 and installs haproxy first; figures go to BENCHMARKS.md.
//!
//! Each round runs three layouts in turn, each on a fresh database:
//! - **one:** one server, clients talking to it directly;
//! - **one+lb:** the same behind haproxy (`host/tests/common/balancer.rs`: round robin, `/healthz` checks): what
//!   the balancer's hop costs alone;
//! - **three:** three servers (the same key, names s0–s2) behind haproxy;
//! - **three/6c:** the same with 6 database connections per server instead of 16 (`database_connections`): about
//!   one server's 16 in all, for the one PostgreSQL on the machine's 2 cores.
//!
//! In each: four clients send agent batches of 500 events (one host each) back to back for SECONDS, then JOBS jobs
//! of module 1003 (`View OS version`, local backend, on `localhost`) are submitted by four clients and waited for.
//! Printed per run: audit events stored per second with the batch latency (p50, p99), and jobs ended per second
//! from the first submission to the last end. The goal: the three servers' figures no more than 20 % below one
//! server's.
//!
//! Arguments: `BINARY LIBRARY_1003 HAPROXY [SECONDS] [JOBS] [ROUNDS]`.

#[path = "../tests/common/balancer.rs"]
mod balancer;
#[path = "common/bench_server.rs"]
mod bench_server;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use balancer::Balancer;
use bench_server::{drop_postgres, fresh_postgres, percentile, run_cli, Api, ApiError, BenchServer};
use serde_json::{json, Value};

type Error = ApiError;

const CLIENTS: usize = 4;
const BATCH: usize = 500;
const DATABASE: &str = "omsbench_cluster";
const SECRET: &str = "cluster-bench-secret-key-0123456789abcdef";
/// (name, servers, behind haproxy, more configuration for each server).
const LAYOUTS: [(&str, usize, bool, &str); 4] = [
    ("one", 1, false, ""),
    ("one+lb", 1, true, ""),
    ("three", 3, true, ""),
    ("three/6c", 3, true, "database_connections = 6\n"),
];

struct Figures {
    events_per_sec: f64,
    batch_p50_ms: f64,
    batch_p99_ms: f64,
    jobs_per_sec: f64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, module, haproxy, ..] = args.as_slice() else {
        return Err("usage: cluster_bench BINARY LIBRARY_1003 HAPROXY [SECONDS] [JOBS] [ROUNDS]".into());
    };
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (seconds, jobs, rounds) = (number(3, 10), number(4, 600) as usize, number(5, 3));
    let (binary, module, haproxy) = (PathBuf::from(binary), PathBuf::from(module), PathBuf::from(haproxy));
    println!("cluster bench: {seconds} s of ingest, {jobs} jobs, {rounds} rounds, {CLIENTS} clients");
    let mut runs: Vec<(&str, Figures)> = Vec::new();
    for round in 1..=rounds {
        for (layout, servers, balanced, extra) in LAYOUTS {
            let figures = run(&binary, &module, &haproxy, (servers, balanced, extra), seconds, jobs).await?;
            println!(
                "round {round} {layout:>8}: {:>8.0} events/s (batch p50 {:>6.1} ms, p99 {:>6.1} ms), {:>6.1} jobs/s",
                figures.events_per_sec, figures.batch_p50_ms, figures.batch_p99_ms, figures.jobs_per_sec
            );
            runs.push((layout, figures));
        }
    }
    let median = |layout: &str, pick: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = runs.iter().filter(|(l, _)| *l == layout).map(|(_, f)| pick(f)).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    for (what, pick) in [
        ("events/s", (|f: &Figures| f.events_per_sec) as fn(&Figures) -> f64),
        ("jobs/s", |f: &Figures| f.jobs_per_sec),
    ] {
        let one = median("one", pick);
        let others: Vec<String> = LAYOUTS[1..]
            .iter()
            .map(|(layout, ..)| {
                let value = median(layout, pick);
                format!("{layout} {value:>8.1} ({:+.1} %)", (value / one - 1.0) * 100.0)
            })
            .collect();
        println!("median {what:>8}: one {one:>8.1}, {}", others.join(", "));
    }
    Ok(())
}

/// One layout on a fresh database: `servers` servers, behind haproxy when `balanced`, each configured with `extra`
/// too.
async fn run(
    binary: &Path,
    module: &Path,
    haproxy: &Path,
    (servers, balanced, extra): (usize, bool, &str),
    seconds: u64,
    jobs: usize,
) -> Result<Figures, Error> {
    let (url, admin) = fresh_postgres(DATABASE).await?;
    let mut started: Vec<BenchServer> = Vec::new();
    for i in 0..servers {
        let config = format!("node_name = \"s{i}\"\nsecret_key = \"{SECRET}\"\n{extra}");
        started.push(BenchServer::start_on(binary, module, &url, &config).map_err(|e| e.to_string())?);
    }
    let token = started[0].token.clone();
    let bases: Vec<&str> = started.iter().map(|s| s.base.as_str()).collect();
    let balancer = balanced.then(|| Balancer::start(haproxy, &bases));
    let entrance = balancer.as_ref().map_or(started[0].base.clone(), |b| b.base.clone());
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let api = Api { http: http.clone(), base: entrance.clone(), token: token.clone() };
    let mut agent_tokens = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("bench{i}");
        api.post("/api/hosts", json!({ "name": name, "ip": format!("127.0.3.{}", i + 1) })).await?;
        let out = run_cli(binary, &started[0].config_path(), &["hosts", "token", &name]).await?;
        agent_tokens.push(out.trim().to_owned());
    }

    let (events_per_sec, mut latencies) = ingest(&http, &entrance, agent_tokens, seconds).await?;
    latencies.sort_by(f64::total_cmp);
    let jobs_per_sec = run_jobs(Arc::new(api), jobs).await?;

    drop(balancer);
    drop(started);
    drop_postgres(&admin, DATABASE).await?;
    Ok(Figures {
        events_per_sec,
        batch_p50_ms: percentile(&latencies, 0.50),
        batch_p99_ms: percentile(&latencies, 0.99),
        jobs_per_sec,
    })
}

/// Each client sends batches for its host back to back for `seconds`: events stored per second, each batch's
/// latency in ms.
async fn ingest(
    http: &reqwest::Client,
    entrance: &str,
    tokens: Vec<String>,
    seconds: u64,
) -> Result<(f64, Vec<f64>), Error> {
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let clients: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let (http, url) = (http.clone(), format!("{entrance}/api/audit/events"));
            tokio::spawn(async move {
                let (mut stored, mut latencies, mut seq) = (0u64, Vec::new(), 0i64);
                while Instant::now() < until {
                    let events: Vec<Value> = (0..BATCH)
                        .map(|_| {
                            seq += 1;
                            json!({ "stream": "bench", "seq": seq, "history_id": seq, "user": "root",
                                    "time": "2026-12-05 05:00:00", "command": format!("bench command {seq}") })
                        })
                        .collect();
                    let sent = Instant::now();
                    let answer = http.post(&url).bearer_auth(&token).json(&json!({ "events": events })).send().await?;
                    if !answer.status().is_success() {
                        return Err::<_, ApiError>(format!("ingest: {}", answer.status()).into());
                    }
                    let ack: Value = answer.json().await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    stored += ack["stored"].as_u64().unwrap_or(0);
                }
                Ok((stored, latencies))
            })
        })
        .collect();
    let (mut stored, mut latencies) = (0, Vec::new());
    for client in clients {
        let (s, l) = client.await??;
        stored += s;
        latencies.extend(l);
    }
    Ok((stored as f64 / start.elapsed().as_secs_f64(), latencies))
}

/// Submits `jobs` jobs from four clients and waits until each has ended: jobs ended per second.
async fn run_jobs(api: Arc<Api>, jobs: usize) -> Result<f64, Error> {
    let start = Instant::now();
    let per_client = jobs.div_ceil(CLIENTS);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api = api.clone();
            let count = per_client.min(jobs.saturating_sub(c * per_client));
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..count {
                    let job =
                        api.post("/api/jobs", json!({ "module": 1003, "hosts": ["localhost"], "params": {} })).await?;
                    ids.push(job["id"].as_i64().unwrap_or_default());
                }
                for &id in &ids {
                    loop {
                        let job = api.get(&format!("/api/jobs/{id}")).await?;
                        match job["status"].as_str() {
                            Some("succeeded") => break,
                            Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(20)).await,
                            _ => return Err::<_, ApiError>(format!("job {id} ended {job}").into()),
                        }
                    }
                }
                Ok(ids.len())
            })
        })
        .collect();
    let mut ended = 0;
    for client in clients {
        ended += client.await??;
    }
    Ok(ended as f64 / start.elapsed().as_secs_f64())
}
