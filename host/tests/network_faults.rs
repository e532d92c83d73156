//! Jobs over a bad network: the real server, its ssh backend, and hosts in network namespaces (the test
//! environment's netns piece: sshd in `omnet1`…`omnet4`, each behind a veth link) with a fault put on the link in
//! the middle of the work — 30 % packet loss, a cut, 300 ms ± 50 ms of latency each way, a host that accepts TCP
//! and never speaks. Each test checks that every job ends within its configured timeouts with the right status per
//! host, that a healthy host beside the broken one is not held back, that cancel still stops the remote command,
//! that the pooled connection recovers once the link does, and that the server's descriptors, threads and memory
//! come back to where they were before the fault.
//!
//! Each test owns one namespace (and so can run beside the others); the healthy host is one of the ssh piece's
//! loopback addresses. The faults are nftables rules in the host's namespace (`common::netfault`), removed when
//! the test ends, also when it fails.

mod common;

use std::{
    fs,
    net::SocketAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{
    fixture, install,
    netfault::{Fault, Relay, Resources},
    testenv::{testenv, NetnsHost, TestEnv},
    Options, Server,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Seconds: a command may run 30, a new connection gets 5, a silent one is probed every second.
const COMMAND_TIMEOUT: u64 = 30;
const CONNECT_TIMEOUT: u64 = 5;
/// A new connection through 30 % loss gets 20 s: TCP resends a lost SYN after 1, 3, 7 and 15 s, and the SSH
/// handshake and authentication take a few more round trips that each may be lost. With 5 s, three losses in a
/// row (about 3 % of connections) failed a job now and then: the test measures loss, not the timeout.
const LOSSY_CONNECT_TIMEOUT: u64 = 20;
const KEEPALIVE: u64 = 1;

/// A server whose default backend is ssh, with the fixture `sleep` module (9003) beside `/etc/issue` (1003), and
/// hosts `healthy` (loopback sshd) and `far` (at `far_address:far_port`). Its known-hosts file, in the returned
/// directory, holds the test environment's hosts and `extra_known` lines; `ssh_extra` is added to
/// `[backends.ssh]`.
fn server(env: &TestEnv, far_address: &str, far_port: u16, extra_known: &str, ssh_extra: &str) -> (Server, TempDir) {
    server_with_connect(env, far_address, far_port, extra_known, ssh_extra, CONNECT_TIMEOUT)
}

fn server_with_connect(
    env: &TestEnv,
    far_address: &str,
    far_port: u16,
    extra_known: &str,
    ssh_extra: &str,
    connect_timeout: u64,
) -> (Server, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let known = dir.path().join("known_hosts");
    let mut lines = fs::read_to_string(&env.ssh.known_hosts_file).expect("the ssh piece's known_hosts");
    lines.push_str(&fs::read_to_string(&env.netns.known_hosts_file).expect("the netns piece's known_hosts"));
    lines.push_str(extra_known);
    fs::write(&known, lines).expect("write known_hosts");
    let extra_config = format!(
        "auto_platform = \"ssh\"\ncommand_timeout_secs = {COMMAND_TIMEOUT}\njob_timeout_secs = 120\n\
         [backends.ssh]\nuser = \"root\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\n\
         connect_timeout_secs = {connect_timeout}\nkeepalive_secs = {KEEPALIVE}\n{ssh_extra}\n",
        env.ssh.port,
        env.ssh.identity_file.display(),
        known.display()
    );
    let server = Server::start_with(Options { extra_config, seed: vec![1003], ..Options::default() });
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    let healthy = env.ssh.addresses.last().expect("ssh addresses");
    add_host(&server, "healthy", healthy, env.ssh.port);
    add_host(&server, "far", far_address, far_port);
    (server, dir)
}

fn add_host(server: &Server, name: &str, ip: &str, port: u16) {
    let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip, "port": port }));
    assert_eq!(status, StatusCode::CREATED, "add {name}: {body}");
}

/// The namespaced host `index` (0-based) of the netns piece.
fn netns_host(env: &TestEnv, index: usize) -> NetnsHost {
    env.netns
        .hosts
        .get(index)
        .cloned()
        .unwrap_or_else(|| panic!("the netns piece is not up (no host {index}): run `cargo xtask testenv up netns`"))
}

fn first_line_of_issue() -> String {
    fs::read_to_string("/etc/issue").expect("/etc/issue").lines().next().unwrap_or_default().to_owned()
}

/// The result of `host` in a finished job.
fn result_of<'a>(job: &'a Value, host: &str) -> &'a Value {
    job["results"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["host"] == host))
        .unwrap_or_else(|| panic!("no result for {host}: {job}"))
}

fn assert_issue(job: &Value, host: &str) {
    let r = result_of(job, host);
    assert_eq!(r["status"], "ok", "{host}: {r}");
    assert_eq!(r["stdout"].as_str().unwrap_or_default().trim_end(), first_line_of_issue(), "{host}: {r}");
}

/// True while a process whose command line is exactly `sleep <seconds>` runs (the namespaces share this
/// machine's processes).
fn sleeping(seconds: u32) -> bool {
    Command::new("pgrep").args(["-x", "-f", &format!("sleep {seconds}")]).status().is_ok_and(|s| s.success())
}

fn wait_until(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A `sleep` of a length no other test uses, started on `far` as job 9003; returns (job id, seconds) once the
/// remote process runs.
fn start_sleep(server: &Server, base: u32) -> (i64, u32) {
    let seconds = base + rand::random_range(0..100);
    let id = server.submit(9003, &["far"], json!({ "seconds": seconds }));
    wait_until(Duration::from_secs(60), &format!("the remote `sleep {seconds}` started"), || sleeping(seconds));
    (id, seconds)
}

/// Cancels job `id` and checks that the job says so and its remote `sleep` is gone within `limit`.
fn cancel_and_check(server: &Server, id: i64, seconds: u32, limit: Duration) {
    let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = server.wait_job(id, limit);
    assert_eq!(job["status"], "cancelled", "{job}");
    wait_until(limit, &format!("`sleep {seconds}` stopped after its job was cancelled"), || !sleeping(seconds));
}

/// Runs module 1003 on both hosts once (pooled connections, worker, database all warm) and reads the server's
/// resources when they have settled.
fn warm_baseline(server: &Server) -> Resources {
    let job = server.run_job(1003, &["healthy", "far"], json!({}));
    assert_issue(&job, "healthy");
    assert_issue(&job, "far");
    // Let the blocking threads the first job started finish their work before reading.
    thread::sleep(Duration::from_secs(2));
    Resources::of(server.pid())
}

#[test]
fn thirty_percent_loss_slows_a_host_but_every_job_ends_ok_and_cancel_still_works() {
    let env = testenv();
    let far = netns_host(&env, 0);
    // Pooled connections live 1 s, so that rounds that wait 2 s open theirs through the loss too.
    let (server, _dir) =
        server_with_connect(&env, &far.address, env.netns.ssh_port, "", "idle_secs = 1", LOSSY_CONNECT_TIMEOUT);
    let baseline = warm_baseline(&server);
    let mut slowest = Duration::ZERO;
    {
        let loss = Fault::lose(&env.netns, &far, 30);
        for round in 0..6 {
            // Every other round lets the pooled connection expire, so that connections are also opened through
            // the loss, not only channels.
            if round % 2 == 1 {
                thread::sleep(Duration::from_secs(2));
            }
            let started = Instant::now();
            let job = server.wait_job(server.submit(1003, &["healthy", "far"], json!({})), Duration::from_secs(120));
            slowest = slowest.max(started.elapsed());
            assert_eq!(job["status"], "succeeded", "round {round}: {job}");
            assert_issue(&job, "healthy");
            assert_issue(&job, "far");
            let healthy_ms = result_of(&job, "healthy")["duration_ms"].as_i64().unwrap_or(i64::MAX);
            assert!(healthy_ms < 2_000, "round {round}: the healthy host waited for the lossy one: {job}");
        }
        let (id, seconds) = start_sleep(&server, 8100);
        cancel_and_check(&server, id, seconds, Duration::from_secs(30));
        assert!(loss.dropped() > 0, "the loss dropped nothing");
    }
    eprintln!("30 % loss: the slowest of 6 jobs took {slowest:?}");
    assert!(slowest < Duration::from_secs(COMMAND_TIMEOUT), "a job over the lossy link took {slowest:?}");
    // With the loss gone, the pooled connection serves at once.
    let job = server.run_job(1003, &["far"], json!({}));
    assert_issue(&job, "far");
    let settled = Resources::settle(server.pid(), &baseline, Duration::from_secs(30));
    eprintln!("resources: {baseline:?} before, {settled:?} after");
}

#[test]
fn a_link_cut_in_the_middle_of_a_job_makes_that_host_unreachable_and_the_pool_recovers() {
    let env = testenv();
    let far = netns_host(&env, 1);
    let (server, _dir) = server(&env, &far.address, env.netns.ssh_port, "", "");
    let baseline = warm_baseline(&server);
    for cycle in 0..3 {
        let id = server.submit(9003, &["healthy", "far"], json!({ "seconds": 6 }));
        // Both commands run (the fixture sleeps 6 s on each host), then the far host's link dies.
        thread::sleep(Duration::from_secs(2));
        let cut = Fault::cut(&env.netns, &far);
        let cut_at = Instant::now();
        let job = server.wait_job(id, Duration::from_secs(60));
        let noticed = cut_at.elapsed();
        eprintln!("cut, cycle {cycle}: the job ended {noticed:?} after the cut");
        let lost = result_of(&job, "far");
        assert_eq!(lost["status"], "unreachable", "cycle {cycle}: {job}");
        assert!(lost["stderr"].as_str().unwrap_or_default().contains("connection was lost"), "cycle {cycle}: {lost}");
        assert_eq!(result_of(&job, "healthy")["status"], "ok", "cycle {cycle}: {job}");
        // Keepalives every second, three unanswered: about 4 s, well before the command timeout.
        assert!(noticed < Duration::from_secs(12), "cycle {cycle}: the cut was noticed after {noticed:?}");
        // While the link is down, a new job on it fails at the connect deadline, and the healthy host is served.
        let started = Instant::now();
        let job = server.wait_job(server.submit(1003, &["healthy", "far"], json!({})), Duration::from_secs(60));
        let took = started.elapsed();
        assert_eq!(result_of(&job, "far")["status"], "unreachable", "cycle {cycle}: {job}");
        assert_issue(&job, "healthy");
        assert!(
            took >= Duration::from_secs(CONNECT_TIMEOUT) - Duration::from_millis(200)
                && took < Duration::from_secs(CONNECT_TIMEOUT * 2 + 5),
            "cycle {cycle}: a job on a cut host took {took:?} (connect timeout {CONNECT_TIMEOUT} s)"
        );
        assert!(cut.dropped() > 0, "cycle {cycle}: the cut dropped nothing");
        drop(cut);
        // The link is back: the next job reconnects.
        let job = server.run_job(1003, &["healthy", "far"], json!({}));
        assert_issue(&job, "far");
    }
    let settled = Resources::settle(server.pid(), &baseline, Duration::from_secs(30));
    eprintln!("resources: {baseline:?} before, {settled:?} after");
}

#[test]
fn three_hundred_ms_of_latency_with_jitter_slows_jobs_but_they_end_ok_and_cancel_works() {
    let env = testenv();
    let far = netns_host(&env, 2);
    let target: SocketAddr = format!("{}:{}", far.address, env.netns.ssh_port).parse().expect("address");
    // The relay listens on this side of the host's link: that is where the server thinks the host is, and where
    // its key is recorded.
    let relay = Relay::start(&far.server_address, target, Duration::from_millis(300), Duration::from_millis(50));
    let key = fs::read_to_string(&env.netns.known_hosts_file).expect("netns known_hosts");
    let key = key.lines().next().and_then(|l| l.split_once(' ')).map(|(_, k)| k.to_owned()).expect("a key");
    let known = format!("[{}]:{} {key}\n", far.server_address, relay.port);
    let (server, _dir) = server(&env, &far.server_address, relay.port, &known, "");
    let baseline = warm_baseline(&server);
    for round in 0..3 {
        let started = Instant::now();
        let job = server.wait_job(server.submit(1003, &["healthy", "far"], json!({})), Duration::from_secs(60));
        let took = started.elapsed();
        assert_issue(&job, "healthy");
        assert_issue(&job, "far");
        // A command on a pooled connection is at least one round trip (open, exec and close pipelined): 500 ms.
        let far_ms = result_of(&job, "far")["duration_ms"].as_i64().unwrap_or_default();
        eprintln!("latency, round {round}: the far host took {far_ms} ms, the job {took:?}");
        assert!(far_ms >= 500, "round {round}: the far host answered in {far_ms} ms through a 600 ms round trip");
        assert!(result_of(&job, "healthy")["duration_ms"].as_i64().unwrap_or(i64::MAX) < 2_000, "{job}");
        assert!(took < Duration::from_secs(20), "round {round}: {took:?}");
    }
    let (id, seconds) = start_sleep(&server, 8300);
    cancel_and_check(&server, id, seconds, Duration::from_secs(30));
    assert!(relay.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the jobs went through the relay");
    let settled = Resources::settle(server.pid(), &baseline, Duration::from_secs(30));
    eprintln!("resources: {baseline:?} before, {settled:?} after");
}

#[test]
fn a_host_that_accepts_and_never_speaks_is_unreachable_at_the_connect_deadline() {
    let env = testenv();
    let far = netns_host(&env, 3);
    let (server, _dir) = server(&env, &far.address, env.netns.silent_port, "", "");
    let job = server.run_job(1003, &["healthy"], json!({}));
    assert_issue(&job, "healthy");
    thread::sleep(Duration::from_secs(2));
    let baseline = Resources::of(server.pid());
    // Four rounds: a connection left open per round would show as more descriptors than the baseline allows.
    for round in 0..4 {
        let started = Instant::now();
        let job = server.wait_job(server.submit(1003, &["healthy", "far"], json!({})), Duration::from_secs(60));
        let took = started.elapsed();
        let silent = result_of(&job, "far");
        assert_eq!(silent["status"], "unreachable", "round {round}: {job}");
        assert!(silent["stderr"].as_str().unwrap_or_default().contains("within 5s"), "round {round}: {silent}");
        let ms = silent["duration_ms"].as_i64().unwrap_or_default();
        assert!((4_900..8_000).contains(&ms), "round {round}: the deadline holds: {ms} ms");
        assert_issue(&job, "healthy");
        assert!(took < Duration::from_secs(CONNECT_TIMEOUT + 5), "round {round}: {took:?}");
    }
    // Every connection to the silent host was closed at its deadline.
    let settled = Resources::settle(server.pid(), &baseline, Duration::from_secs(30));
    eprintln!("resources: {baseline:?} before, {settled:?} after");
}
