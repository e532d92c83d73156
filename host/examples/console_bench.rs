//! Benchmark: how soon what happens shows in the console. Run with `cargo xtask bench-console [EVENTS] [RATE]`
//! (defaults 1000 events at 50 per second), which starts the test environment (chromedriver) and builds the
//! release binary and module 1003 first; figures go to BENCHMARKS.md.
//!
//! - **audit:** a headless Chromium keeps `/audit` open; EVENTS audit events are sent through the agent API at a
//!   steady RATE, each with a unique command. A MutationObserver in the page notes when each command's row is in
//!   the document; latency = that moment − the moment just before the event was sent (one clock: same machine).
//! - **job:** JOBS (default 100) jobs of module 1003 on localhost, one after the other: the page `/jobs/{id}` is
//!   opened right after each submit, and latency = the host's output visible − the submit. This is what a person
//!   waits for after clicking Run (queue, worker, the command, the event stream, the page load and render).
//!
//! Arguments: `BINARY LIBRARY_1003 WEBDRIVER_URL CHROMIUM [EVENTS] [RATE] [JOBS]`.

#[path = "common/bench_server.rs"]
mod bench_server;

use std::{
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bench_server::{percentile, BenchServer};
use fantoccini::Locator;
use serde_json::{json, Value};

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, library, webdriver, chromium] = [0, 1, 2, 3].map(|i| args.get(i).cloned().unwrap_or_default());
    let events: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rate: f64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(50.0);
    let jobs: usize = args.get(6).and_then(|a| a.parse().ok()).unwrap_or(100);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let server = BenchServer::start(std::path::Path::new(&binary), std::path::Path::new(&library), "")?;
    let (token, password, base) = (server.token.clone(), server.admin_password.clone(), server.base.clone());
    let config = server.config_path();
    let http = reqwest::Client::new();
    let agent = String::from_utf8(
        Command::new(&binary)
            .args(["--config", config.to_str().unwrap_or_default(), "hosts", "token", "localhost"])
            .output()?
            .stdout,
    )?
    .trim()
    .to_owned();

    let profile = tempfile::tempdir()?;
    let browser = bench_server::chromium_logged_in(&webdriver, &chromium, profile.path(), &base, &password).await?;

    // ---- audit ----
    browser.goto(&format!("{base}/audit")).await?;
    browser.wait().for_element(Locator::Css("#events tbody")).await?;
    let watch = "window.__seen = {}; new MutationObserver(() => { \
        for (const td of document.querySelectorAll('#events td.command')) { \
          const m = /^bench-(\\d+)$/.exec(td.textContent); \
          if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = performance.timeOrigin + performance.now(); } \
      }).observe(document.querySelector('#events tbody'), { childList: true }); return null;";
    browser.execute(watch, vec![]).await?;
    // Let the live stream connect first.
    let started = Instant::now();
    while browser.find(Locator::Css("#live-state")).await?.text().await? != "live" {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the audit page's stream did not connect".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sent = Vec::with_capacity(events);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let begin = Instant::now();
    for n in 0..events {
        tokio::time::sleep_until((begin + interval * n as u32).into()).await;
        let event = json!({ "stream": "bench", "seq": n + 1, "history_id": n + 1, "user": "root", "uid": 0,
                            "login_user": "", "tty": "/dev/pts/1", "ip": "127.0.0.1",
                            "time": "2026-12-02 10:00:00", "command": format!("bench-{n}") });
        sent.push(now_ms());
        let answer = http
            .post(format!("{base}/api/audit/events"))
            .bearer_auth(&agent)
            .json(&json!({ "events": [event] }))
            .send()
            .await?;
        if !answer.status().is_success() {
            return Err(format!("event {n}: {}", answer.status()).into());
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen: Value = browser.execute("return window.__seen", vec![]).await?;
    let mut audit = Vec::new();
    for (n, at) in sent.iter().enumerate() {
        match seen.get(n.to_string()).and_then(Value::as_f64) {
            Some(visible) => audit.push(visible - at),
            None => return Err(format!("event bench-{n} never appeared on the page").into()),
        }
    }
    summary(&format!("audit event sent -> row visible ({events} events at {rate}/s)"), audit);

    // ---- job ----
    let mut job_ms = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let submitted = now_ms();
        let answer: Value = http
            .post(format!("{base}/api/jobs"))
            .bearer_auth(&token)
            .json(&json!({ "module": 1003, "hosts": ["localhost"] }))
            .send()
            .await?
            .json()
            .await?;
        let id = answer["id"].as_i64().ok_or("no job id")?;
        browser.goto(&format!("{base}/jobs/{id}")).await?;
        browser.wait().every(Duration::from_millis(5)).for_element(Locator::Css("#groups pre.stdout")).await?;
        job_ms.push(now_ms() - submitted);
    }
    summary(&format!("job submitted -> host output visible on /jobs/{{id}} (1003, {jobs} jobs)"), job_ms);

    browser.close().await?;
    drop(server);
    Ok(())
}
