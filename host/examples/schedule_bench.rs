//! Benchmark: schedules and rolling jobs through the API, as a user waits on them. Run with
//! `cargo xtask bench-schedules [FIRES] [ROUNDS]` (defaults 100 and 20), which starts the test environment and
//! builds the release binary and module 1003 first; figures go to BENCHMARKS.md.
//!
//! - **fire lag:** a saved job (module 1003 on localhost, local backend) scheduled `* * * * * *`; for each of
//!   FIRES fires, lag = the job's `created_at` − its slot (both the server's clock). The goal is p99 ≤ 250 ms.
//! - **rolling overhead:** module 1003 on 50 ssh hosts of the test environment, ROUNDS jobs with
//!   `"rollout": {"batch": 50}` and ROUNDS without, alternating (one warm-up of each first); duration = the job's
//!   `finished_at` − `created_at`. The goal is the rolling job at most 5 % slower.
//!
//! Arguments: `BINARY LIBRARY_1003 ENV_JSON [FIRES] [ROUNDS]`.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bench_server::{Api, BenchServer};

use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOSTS: usize = 50;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let median = percentile(&ms, 0.5);
    println!(
        "{name}: n={} min={:.1} ms p50={median:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        ms.len(),
        ms[0],
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
    median
}

/// What only this benchmark asks of the API.
impl Api {
    /// Submits a job and waits for it; its server-side duration in ms.
    async fn job(&self, body: Value) -> Result<f64, Error> {
        let id = self.post("/api/jobs", body).await?["id"].as_i64().ok_or("no job id")?;
        loop {
            let job = self.get(&format!("/api/jobs/{id}")).await?;
            match job["status"].as_str() {
                Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(10)).await,
                Some("succeeded") => {
                    let took = job["finished_at"].as_i64().unwrap_or(0) - job["created_at"].as_i64().unwrap_or(0);
                    return Ok(took as f64);
                }
                _ => return Err(format!("job {id} did not succeed: {job}").into()),
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, library, env_json] = [0, 1, 2].map(|i| args.get(i).cloned().unwrap_or_default());
    let fires: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(20);
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(&env_json).map_err(|e| format!("{env_json}: {e}"))?)?;
    let ssh = &env["ssh"];
    let addresses: Vec<String> = ssh["addresses"]
        .as_array()
        .ok_or("no ssh addresses")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if addresses.len() < HOSTS {
        return Err(
            format!("the test environment has {} ssh addresses, the benchmark needs {HOSTS}", addresses.len()).into()
        );
    }

    let extra = format!(
        "[backends.ssh]\nuser = {}\nport = {}\nidentity_file = {}\nknown_hosts_file = {}\n",
        ssh["user"], ssh["port"], ssh["identity_file"], ssh["known_hosts_file"],
    );
    let server = BenchServer::start(Path::new(&binary), Path::new(&library), &extra).map_err(|e| e.to_string())?;
    let (base, token) = (server.base.clone(), server.token.clone());
    let api = Api { http: reqwest::Client::new(), base, token };
    bench(&api, &addresses, fires, rounds).await
}

async fn bench(api: &Api, addresses: &[String], fires: usize, rounds: usize) -> Result<(), Error> {
    // ---- fire lag ----
    let template = json!({ "name": "tick", "module": 1003, "targets": { "hosts": ["localhost"] }, "backend": "local" });
    let template = api.post("/api/templates", template).await?["id"].as_i64().ok_or("no template id")?;
    let schedule = json!({ "name": "every second", "template": template, "cron": "* * * * * *" });
    let schedule = api.post("/api/schedules", schedule).await?["id"].as_i64().ok_or("no schedule id")?;
    let started = Instant::now();
    let list = loop {
        let list = api.get(&format!("/api/schedules/{schedule}/fires?limit=1000")).await?;
        let fired = list.as_array().map_or(0, |l| l.iter().filter(|f| f["outcome"] == "fired").count());
        if fired >= fires {
            break list;
        }
        if started.elapsed() > Duration::from_secs(fires as u64 * 2 + 30) {
            return Err(format!("only {fired} of {fires} fires in {:?}: {list}", started.elapsed()).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    api.call(
        reqwest::Method::PUT,
        &format!("/api/schedules/{schedule}"),
        Some(json!({ "name": "every second", "template": template, "cron": "* * * * * *", "enabled": false })),
    )
    .await?;
    let all = list.as_array().ok_or("fires")?;
    let mut lags = Vec::new();
    for fire in all.iter().filter(|f| f["outcome"] == "fired").take(fires) {
        let job = api.get(&format!("/api/jobs/{}", fire["job"])).await?;
        lags.push((job["created_at"].as_i64().unwrap_or(0) - fire["slot"].as_i64().unwrap_or(0)) as f64);
    }
    let other: Vec<&Value> = all.iter().filter(|f| f["outcome"] != "fired").collect();
    println!("fires other than `fired`: {} {:?}", other.len(), other.iter().map(|f| &f["outcome"]).collect::<Vec<_>>());
    summary("fire lag (job created − slot)", lags);

    // ---- rolling overhead ----
    let mut hosts = Vec::new();
    for (i, address) in addresses[..HOSTS].iter().enumerate() {
        let name = format!("h{i:02}");
        api.post("/api/hosts", json!({ "name": name, "ip": address })).await?;
        hosts.push(name);
    }
    let plain = json!({ "module": 1003, "hosts": hosts, "backend": "ssh" });
    let mut rolling = plain.clone();
    rolling["rollout"] = json!({ "batch": HOSTS });
    api.job(plain.clone()).await?;
    api.job(rolling.clone()).await?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        without.push(api.job(plain.clone()).await?);
        with.push(api.job(rolling.clone()).await?);
    }
    let a = summary("50 ssh hosts, no rollout", without);
    let b = summary("50 ssh hosts, rollout batch 50", with);
    println!("rolling / plain, medians: {:+.1} %", (b / a - 1.0) * 100.0);
    Ok(())
}
