//! What grants cost the caller: job submission and audit queries through the API of the release server, as an
//! unscoped admin and as an operator holding 20 grants, in one run, the two callers taking turns, each going
//! first every other round. Run with `cargo xtask bench-grants [HOSTS] [EVENTS] [ROUNDS] [BATCH]` (defaults
//! 1000, 200000, 300, 500); figures go to BENCHMARKS.md.
//!
//! The inventory: HOSTS hosts in 40 function categories (one app category each) with 50 tags; the scoped operator
//! holds one grant per function category for 20 of them (half the inventory). Audit events come from 40 agents, one
//! per category, BATCH events per request, the agents taking turns: with 500, the operator's newest events lie
//! 10 000 rows deep (the 20 categories it does not see sent the last 20 batches); with 5, as agents that flush
//! every second or so send them, they are interleaved with the others'. The rounds start once the command index
//! has taken every event. Each round submits module 1003 on the same 5 hosts (inside the grants), waits for it to
//! end (untimed), and runs four audit queries: the newest 100 events, one host's, a term's, and the same term's in
//! the operator's 20 app categories (the same rows for both callers). The cost is given by the medians and by the
//! means of the middle 90 %.
//!
//! Arguments: `BINARY LIBRARY_1003 [HOSTS] [EVENTS] [ROUNDS] [BATCH]`.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::{path::PathBuf, time::Instant};

use bench_server::{percentile, run_cli, Api, BenchServer};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

const FUNCTIONS: usize = 40;
const GRANTS: usize = 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (binary, library) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (hosts, events, rounds) = (number(2, 1000), number(3, 200_000), number(4, 300));
    let per_batch = number(5, 500).max(1);

    let server = BenchServer::start(&binary, &library, "max_concurrent_jobs = 4").map_err(|e| e.to_string())?;
    let http = reqwest::Client::new();
    let admin = Api { http: http.clone(), base: server.base.clone(), token: server.token.clone() };
    let cli = |args: Vec<String>| {
        let (binary, config) = (binary.clone(), server.config_path());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&binary, &config, &args).await.map(|out| out.trim().to_owned())
        }
    };

    let started = Instant::now();
    for i in 0..hosts {
        let f = i % FUNCTIONS;
        admin
            .post(
                "/api/hosts",
                json!({ "name": format!("h{i}"), "ip": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                        "function": format!("Linux.F{f}"), "app": format!("app{f}"), "tags": [format!("t{}", i % 50)] }),
            )
            .await?;
    }
    println!("{hosts} hosts in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut agents = Vec::new();
    for f in 0..FUNCTIONS {
        let token = cli(vec!["hosts".into(), "token".into(), format!("h{f}")]).await?;
        agents.push(Api { http: http.clone(), base: server.base.clone(), token });
    }
    for b in 0..events.div_ceil(per_batch) {
        let agent = &agents[b % FUNCTIONS];
        let batch: Vec<_> = (0..per_batch.min(events - b * per_batch))
            .map(|k| {
                let seq = (b / FUNCTIONS * per_batch + k + 1) as i64;
                json!({ "stream": "bench", "seq": seq, "history_id": seq, "user": "root", "login_user": "", "uid": 0,
                        "tty": "/dev/pts/0", "ip": "10.0.0.1", "time": "2026-12-04 10:00:00",
                        "command": format!("systemctl status unit{} --no-pager", seq % 997) })
            })
            .collect();
        agent.post("/api/audit/events", json!({ "events": batch })).await?;
    }
    println!("{events} audit events in {:.1} s, {per_batch} per batch", started.elapsed().as_secs_f64());
    // The rounds start once the command index has taken every row, as it has between bursts of ingest: while it
    // catches up, a term's search reads the rows above it one by one, for every caller.
    let started = Instant::now();
    let db = rusqlite::Connection::open(server.dir().join("omserver.db"))?;
    let lag = "SELECT (SELECT COALESCE(MAX(id), 0) FROM server_history) - (SELECT position FROM audit_text_position)";
    while db.query_row(lag, [], |r| r.get::<_, i64>(0))? > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!("the command index caught up in {:.1} s more", started.elapsed().as_secs_f64());

    admin.post("/api/users", json!({ "name": "scoped", "role": "operator" })).await?;
    let everything = admin.get("/api/users/scoped/grants").await?;
    for f in 0..GRANTS {
        admin.post("/api/users/scoped/grants", json!({ "functions": [format!("Linux.F{f}")] })).await?;
    }
    let path = format!("/api/users/scoped/grants/{}", everything[0]["id"]);
    admin.call(reqwest::Method::DELETE, &path, None).await?;
    let token = cli(["token", "create", "--role", "operator", "--name", "bench", "--user", "scoped"]
        .map(str::to_owned)
        .to_vec())
    .await?;
    let scoped = Api { http: http.clone(), base: server.base.clone(), token };
    let visible = scoped.get("/api/hosts").await?.as_array().map_or(0, Vec::len);
    println!("the scoped operator: {GRANTS} grants, sees {visible} of {hosts} hosts");

    let targets: Vec<String> = (0..5).map(|i| format!("h{}", i * FUNCTIONS)).collect();
    let host_query = format!("/api/audit/events?limit=100&host=h{}", FUNCTIONS / 2 - 1);
    // The last one names the operator's 20 app categories: the admin then reads what the operator reads, and the
    // difference is what the grants cost alone, not what the operator's rows lying deeper cost.
    let apps = (0..GRANTS).map(|f| format!("app{f}")).collect::<Vec<_>>().join(",");
    let term_in_apps = format!("/api/audit/events?limit=100&q=unit42&app={apps}");
    let operations: [(&str, &str); 5] = [
        ("POST /api/jobs (5 hosts)", ""),
        ("audit: newest 100", "/api/audit/events?limit=100"),
        ("audit: one host", &host_query),
        ("audit: a term", "/api/audit/events?limit=100&q=unit42"),
        ("audit: a term in 20 apps", &term_in_apps),
    ];
    let mut times = vec![[Vec::new(), Vec::new()]; operations.len()];
    for round in 0..rounds + 10 {
        // Who goes first changes every round: the jobs each round queues run on behind the requests, and the one
        // that always went second would always meet them at the same point.
        let turns = if round % 2 == 0 { [(0, &admin), (1, &scoped)] } else { [(1, &scoped), (0, &admin)] };
        for (who, api) in turns {
            for (i, (_, path)) in operations.iter().enumerate() {
                let began = Instant::now();
                let job = if path.is_empty() {
                    Some(api.post("/api/jobs", json!({ "module": 1003, "hosts": targets, "params": {} })).await?)
                } else {
                    api.get(path).await?;
                    None
                };
                // The first rounds warm caches and connections.
                if round >= 10 {
                    times[i][who].push(began.elapsed().as_secs_f64() * 1000.0);
                }
                if let Some(job) = job {
                    ended(api, &job["id"]).await?;
                }
            }
        }
    }

    println!("\n{rounds} rounds; ms, admin (unscoped) against the operator with {GRANTS} grants, alternating:");
    println!(
        "{:<26} {:>9} {:>9} {:>10} {:>10} {:>8} {:>9}",
        "operation", "admin p50", "admin p95", "scoped p50", "scoped p95", "p50 cost", "mean cost"
    );
    for (i, (name, _)) in operations.iter().enumerate() {
        for t in &mut times[i] {
            t.sort_by(f64::total_cmp);
        }
        let [a, s] = &times[i];
        let (a50, a95, s50, s95) = (percentile(a, 0.50), percentile(a, 0.95), percentile(s, 0.50), percentile(s, 0.95));
        // A submission's time has humps (its commits wait for the disk: about 1.5, 2.6 or 4.8 ms here), and the
        // median jumps from one to the next with a few requests; the mean of the middle 90 % does not.
        let cost = |ours: f64, theirs: f64| (ours / theirs - 1.0) * 100.0;
        let mean = cost(middle_mean(s), middle_mean(a));
        println!("{name:<26} {a50:>9.2} {a95:>9.2} {s50:>10.2} {s95:>10.2} {:>+7.1}% {mean:>+8.1}%", cost(s50, a50));
    }
    Ok(())
}

/// The mean of the samples between the 5th and the 95th percentile (`sorted` in order).
fn middle_mean(sorted: &[f64]) -> f64 {
    let (from, to) = (sorted.len() / 20, sorted.len() - sorted.len() / 20);
    sorted[from..to].iter().sum::<f64>() / (to - from).max(1) as f64
}

/// Waits until job `id` has ended. Each request is timed on a server no job of an earlier one is running on: a
/// job's writes beside a request made its time two-humped (about 3 or 4.5 ms for a submission), and the median
/// of two humps jumps with a few requests.
async fn ended(api: &Api, id: &serde_json::Value) -> Result<(), Error> {
    loop {
        let job = api.get(&format!("/api/jobs/{id}")).await?;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
