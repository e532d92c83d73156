//! Benchmark: how fast a replaced module serves, whether jobs fail during replacements, and what reloads cost in
//! memory. Run with `cargo xtask bench-plugins [REPLACEMENTS]` (default 100); figures go to BENCHMARKS.md.
//!
//! Each replacement installs the release build of module 1003 with a unique trailer appended, so every file is a
//! distinct library that must really be loaded (the registry reuses libraries by content hash), and waits until
//! the registry serves exactly those bytes. A client task runs 1003 jobs back to back the whole time.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use omserver::{app::App, config::Config, jobs::JobRequest};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

/// The server's allocator (main.rs), so that the memory figure is the server's: glibc's malloc, after freeing
/// one mmapped library-sized buffer, raises its mmap threshold and keeps later ones in a fragmenting heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Installs variant `n` and returns its SHA-256.
fn install_variant(source: &[u8], n: u64, dir: &Path) -> String {
    let mut bytes = source.to_vec();
    // Bytes after the end of an ELF file are ignored by the loader but change the content hash.
    bytes.extend_from_slice(format!("omserver-bench-{n}").as_bytes());
    let tmp = dir.join(".Mid_1003.so.tmp");
    fs::write(&tmp, &bytes).expect("write temp");
    fs::rename(&tmp, dir.join("Mid_1003.so")).expect("rename into place");
    hex::encode(sha2::Sha256::digest(&bytes))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let replacements: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    // `--without-jobs`: replacements only, so the memory figure is the reloads' alone (79 000 stored jobs grow
    // SQLite's page cache too).
    let with_jobs = !std::env::args().any(|a| a == "--without-jobs");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let library = fs::read(target.join("plugins-release/Mid_1003.so"))?;
    // The server runs in this process, so "the running executable" is this example: its module workers must be
    // the real binary (`cargo xtask bench-plugins` builds it first).
    let worker = target.join("release/omserver");
    if !worker.exists() {
        return Err(format!("{} is missing: run `cargo xtask bench-plugins`, which builds it", worker.display()).into());
    }

    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins.d");
    fs::create_dir_all(&plugins)?;
    install_variant(&library, 0, &plugins);
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        plugins_dir: plugins.clone(),
        state_dir: dir.path().join("state"),
        module_worker_program: Some(worker),
        ..Config::default()
    };
    let app = App::open(config).await?;
    app.bootstrap().await?;
    let (registry, jobs) = (app.registry.clone(), app.jobs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone(), |_| {}));

    let rss_start = rss_kib();
    let (ok, failed, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let client = {
        let (ok, failed, stop, jobs) = (ok.clone(), failed.clone(), stop.clone(), jobs.clone());
        tokio::spawn(async move {
            while with_jobs && !stop.load(Ordering::Relaxed) {
                let request = JobRequest {
                    module: 1003,
                    hosts: vec!["127.0.0.1".into()],
                    params: Default::default(),
                    backend: None,
                    rollout: None,
                };
                let outcome = match jobs.submit_and_wait(request, "bench").await {
                    Ok(id) => jobs.view(id).await.map(|j| j.status == "succeeded").unwrap_or(false),
                    Err(_) => false,
                };
                if outcome { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut latencies = Vec::new();
    // RSS every tenth of the run: a leak climbs steadily, a cache or an allocator's arena levels off.
    let mut rss_steps = Vec::new();
    for n in 1..=replacements {
        let started = Instant::now();
        let sha256 = install_variant(&library, n, &plugins);
        loop {
            if registry.get(1003).is_some_and(|m| m.sha256 == sha256) {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("replacement {n} not serving after 10 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(started.elapsed());
        if n % (replacements / 10).max(1) == 0 {
            rss_steps.push(format!("{n}: {} KiB", rss_kib()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.await?;
    let rss_end = rss_kib();
    shutdown.cancel();
    server.await??;

    latencies.sort();
    let so_kib = library.len() as f64 / 1024.0;
    println!("replacements: {replacements} (Mid_1003.so, release build, {so_kib:.0} KiB)");
    println!(
        "rename → new version serving: median {:?}, p95 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1]
    );
    println!(
        "jobs during replacements: {} succeeded, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "RSS: {rss_start} KiB before, {rss_end} KiB after {replacements} distinct loads: +{:.2} MiB, {:.0} KiB per load",
        (rss_end.saturating_sub(rss_start)) as f64 / 1024.0,
        rss_end.saturating_sub(rss_start) as f64 / replacements as f64
    );
    println!("RSS along the way: {}", rss_steps.join(", "));
    Ok(())
}
