//! Benchmark: what module workers add to a job's latency. Run with `cargo xtask bench-workers [--base REV] [JOBS]`,
//! which builds both servers and calls this with
//! `BASE_OMSERVER BASE_MID_1003_SO HEAD_OMSERVER HEAD_MID_1003_SO [JOBS]`; figures go to BENCHMARKS.md.
//!
//! Both servers run at once as their own processes (temporary directory, SQLite, module 1003 installed, the
//! local backend), so they share the machine's state and noise. Jobs alternate between them one at a time: submit
//! `POST /api/jobs` for 1003 on 127.0.0.1, then read `GET /api/jobs/{id}/events` until `end`; the latency is from
//! before the submit to the `end` event, each request on a fresh connection. The first jobs on each server warm it
//! up (the first worker start, the database's first pages) and are not counted.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use reqwest::{blocking::Client, StatusCode};
use serde_json::{json, Value};

const WARM_UP: usize = 10;

type Error = Box<dyn std::error::Error>;

#[path = "common/bench_server.rs"]
mod bench_server;

use bench_server::BenchServer as Server;

impl Server {
    /// Waits until module 1003 is listed as loaded (a new server probes its files first).
    fn wait_for_1003(&self, client: &Client) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let modules: Value =
                client.get(format!("{}/api/modules", self.base)).bearer_auth(&self.token).send()?.json()?;
            let loaded =
                modules.as_array().is_some_and(|list| list.iter().any(|m| m["id"] == 1003 && m["status"] == "loaded"));
            if loaded {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("1003 not loaded after 30 s: {modules}").into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// One job, submit to `end`.
    fn job(&self, client: &Client) -> Result<Duration, Error> {
        let started = Instant::now();
        let body = json!({ "module": 1003, "hosts": ["127.0.0.1"], "backend": "local" });
        let response = client.post(format!("{}/api/jobs", self.base)).bearer_auth(&self.token).json(&body).send()?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(format!("submit: {} {}", response.status(), response.text()?).into());
        }
        let id = response.json::<Value>()?["id"].as_i64().ok_or("no job id")?;
        let events = client.get(format!("{}/api/jobs/{id}/events", self.base)).bearer_auth(&self.token).send()?;
        let (mut event, mut data) = (String::new(), String::new());
        for line in BufReader::new(events).lines() {
            let line = line?;
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(chunk) = line.strip_prefix("data:") {
                data.push_str(chunk.trim_start());
            } else if line.is_empty() && event == "end" {
                let elapsed = started.elapsed();
                let job: Value = serde_json::from_str(&data)?;
                if job["status"] != "succeeded" {
                    return Err(format!("job {id} did not succeed: {job}").into());
                }
                return Ok(elapsed);
            } else if line.is_empty() {
                event.clear();
                data.clear();
            }
        }
        Err(format!("job {id}: the event stream ended without `end`").into())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base_bin, base_so, head_bin, head_so, rest @ ..] = args.as_slice() else {
        return Err("usage: worker_bench BASE_OMSERVER BASE_MID_1003_SO HEAD_OMSERVER HEAD_MID_1003_SO [JOBS]".into());
    };
    let jobs: usize = rest.first().map(|n| n.parse()).transpose()?.unwrap_or(300);
    if jobs < 2 {
        return Err("JOBS must be at least 2 (one per server)".into());
    }
    let servers = [
        ("before", Server::start(&PathBuf::from(base_bin), Path::new(base_so), "")?),
        ("after", Server::start(&PathBuf::from(head_bin), Path::new(head_so), "")?),
    ];
    // A fresh connection per request: on a kept-alive one the event stream's first bytes came ~40 ms late (both
    // servers alike: the server's small writes wait for the client's delayed ACK), which would bury the
    // milliseconds this benchmark is about.
    let client = Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build()?;
    for (_, server) in &servers {
        server.wait_for_1003(&client)?;
        for _ in 0..WARM_UP {
            server.job(&client)?;
        }
    }
    let mut latencies = [Vec::with_capacity(jobs / 2 + 1), Vec::with_capacity(jobs / 2 + 1)];
    for n in 0..jobs {
        latencies[n % 2].push(servers[n % 2].1.job(&client)?);
    }
    println!("job latency, module 1003 on 127.0.0.1 (local backend), submit → `end` event, {jobs} jobs alternating:");
    let mut medians = Vec::new();
    for ((name, _), times) in servers.iter().zip(latencies.iter_mut()) {
        times.sort();
        let median = percentile(times, 0.5);
        medians.push(median);
        println!(
            "  {name:<6} ({} jobs): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            times.len(),
            ms(median),
            ms(percentile(times, 0.9)),
            ms(percentile(times, 0.99)),
            ms(times[times.len() - 1]),
        );
    }
    println!("  difference of medians (after − before): {:+.2} ms", ms(medians[1]) - ms(medians[0]));
    Ok(())
}
