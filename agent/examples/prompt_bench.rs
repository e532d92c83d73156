//! Per-prompt cost of `omaudit-agent "$(history 1)"` with the server up, down (closed port) and hanging
//! (accepts, never answers), against a baseline of spawning `/bin/true`.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-agent cargo build --release -p omaudit-agent --bins --examples
//! /work/target-agent/release/examples/prompt_bench [invocations]   # default 500
//! ```
//!
//! Each invocation is timed from spawn to exit, as bash waits for it. Everything runs on 127.0.0.1 with the spool
//! in a temp dir; the bench stops by itself. `OMAUDIT_AGENT_BIN` overrides the agent binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let invocations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(500);
    let agent = agent_path();
    assert!(agent.exists(), "build the agent first: {} is missing", agent.display());
    println!("agent: {} ({} invocations per mode)", agent.display(), invocations);
    println!("{:<10} {:>9} {:>9} {:>9} {:>9}  spooled after", "mode", "median", "p99", "max", "mean");

    report("baseline", &time_runs(invocations, |_| Command::new("/bin/true")), None);
    for mode in ["up", "down", "hanging"] {
        let server = match mode {
            "up" => answering_server(),
            "down" => closed_port(),
            _ => hanging_server(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let samples = time_runs(invocations, |i| {
            let mut command = Command::new(&agent);
            command
                .env("OMAUDIT_CONFIG", "")
                .env("OMAUDIT_SERVER", &server)
                .env("OMAUDIT_TOKEN", "bench")
                .env("OMAUDIT_SPOOL_DIR", dir.path())
                .arg(format!("  {i}  root 2026-11-24 10:00:00 ls -l /var/log/*.log  | grep -c 'x  y'"));
            command
        });
        // For "up", give the last background flusher a moment before counting what is left.
        thread::sleep(Duration::from_millis(if mode == "up" { 1000 } else { 0 }));
        let spooled = std::fs::read_to_string(dir.path().join(format!("{}.spool", uid())))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        report(mode, &samples, Some(spooled));
    }
}

fn time_runs(n: usize, make: impl Fn(usize) -> Command) -> Vec<Duration> {
    // Warm-up: page cache and dynamic loader, not part of the per-prompt cost.
    for i in 0..5 {
        let _ = make(1_000_000 + i).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    (1..=n)
        .map(|i| {
            let mut command = make(i);
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            let status = command.status().expect("spawn");
            let took = start.elapsed();
            assert!(status.success());
            took
        })
        .collect()
}

fn report(mode: &str, samples: &[Duration], spooled: Option<usize>) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let pick = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    let ms = |d: Duration| format!("{:.3}ms", d.as_secs_f64() * 1000.0);
    let spooled = spooled.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}  {spooled}",
        mode,
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        ms(mean)
    );
}

fn agent_path() -> PathBuf {
    if let Some(path) = std::env::var_os("OMAUDIT_AGENT_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/examples/prompt_bench → target/<profile>/omaudit-agent
    let exe = std::env::current_exe().expect("own path");
    exe.parent().and_then(|p| p.parent()).map(|p| p.join("omaudit-agent")).expect("target dir")
}

fn uid() -> u32 {
    omaudit_agent::identity::real_uid()
}

fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn hanging_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(10_000).flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

fn answering_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming().take(10_000).flatten() {
            thread::spawn(move || answer(stream));
        }
    });
    format!("http://{addr}")
}

/// Answers every request on the connection with an acknowledgement of all its events.
fn answer(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let events = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["events"].as_array().map(Vec::len))
            .unwrap_or(0);
        let ack = format!(r#"{{"stored":{events},"duplicates":0,"rejected":[]}}"#);
        let response =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ack}", ack.len());
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
