//! The saltstack backend against the test environment's real salt-master, minions (m1, m2 running; m9 accepted
//! but stopped) and salt-api. The minions run on this machine, so what they did can be checked here.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{testenv::testenv, Options, Server};
use omserver::backends::{
    config::{SaltConfig, SaltTarget, Secret},
    saltstack::SaltBackend,
    Host, Limits, Report,
};
use omserver_plugin_api::{HostResult, HostStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

const LIMITS: Limits = Limits { command_timeout: Duration::from_secs(60), output_limit_bytes: 1024 * 1024 };

fn config(timeout_secs: u64) -> SaltConfig {
    let env = testenv().salt;
    SaltConfig {
        url: env.url,
        username: env.username,
        password: Secret::new(env.password),
        eauth: env.eauth,
        timeout_secs,
        target: SaltTarget::Name,
        ca_file: None,
    }
}

fn backend(timeout_secs: u64) -> SaltBackend {
    SaltBackend::new(config(timeout_secs), LIMITS)
}

fn host(name: &str) -> Host {
    Host { name: name.into(), address: "127.0.0.1".into(), port: None, user: None }
}

fn minions() -> Vec<Host> {
    testenv().salt.minions.iter().map(|m| host(m)).collect()
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A report that remembers each host's result and when it came, relative to the report's creation.
#[derive(Clone)]
struct Seen(Arc<Mutex<Vec<(String, HostStatus, Duration)>>>, Instant);

impl Seen {
    fn new() -> (Seen, Report) {
        let seen = Seen(Arc::default(), Instant::now());
        let sink = seen.clone();
        let report = Report::new(move |r: &HostResult| {
            sink.0.lock().unwrap().push((r.host.to_string(), r.status, sink.1.elapsed()));
        });
        (seen, report)
    }

    fn get(&self, host: &str) -> (HostStatus, Duration) {
        let seen = self.0.lock().unwrap();
        let matching: Vec<_> = seen.iter().filter(|(h, ..)| h == host).collect();
        assert_eq!(matching.len(), 1, "{host} reported exactly once: {seen:?}");
        (matching[0].1, matching[0].2)
    }
}

fn names(results: &[HostResult]) -> Vec<&str> {
    results.iter().map(|r| r.host.as_str()).collect()
}

#[tokio::test]
async fn commands_run_on_every_minion_with_rc_stdout_and_stderr() {
    let salt = backend(20);
    let hosts = minions();
    let (seen, report) = Seen::new();
    let results = salt.run(&hosts, &argv(&["printf", "%s\\n", "hello", "two  words "]), &report).await;
    assert_eq!(names(&results), testenv().salt.minions, "one result per host, in host order");
    for r in &results {
        assert_eq!((r.status, r.rc.into_option()), (HostStatus::Ok, Some(0)), "{r:?}");
        assert_eq!(r.stdout.as_str(), "hello\ntwo  words \n", "output as written, trailing whitespace kept");
        assert_eq!(seen.get(&r.host).0, HostStatus::Ok);
    }

    let results = salt.run(&hosts[..1], &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]), &report).await;
    let r = &results[0];
    assert_eq!((r.status, r.rc.into_option()), (HostStatus::Failed, Some(3)), "{r:?}");
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));

    let results = salt.run(&hosts[..1], &argv(&["/nonexistent/omserver-program"]), &report).await;
    let r = &results[0];
    assert_eq!((r.status, r.rc.into_option()), (HostStatus::Failed, None), "{r:?}");
    assert!(r.stderr.contains("Unable to run command") && r.stderr.contains("No such file"), "{r:?}");
}

#[tokio::test]
async fn a_hostile_argument_arrives_as_one_argument_byte_for_byte_and_runs_nothing() {
    let marker = format!("/tmp/pwned-{:016x}", rand_u64());
    let hostile = format!(
        "it's \"q\" ; touch {marker}; $(touch {marker}) `touch {marker}` | tee {marker} > {marker} & \\ back\\slash\n\
         new line   three   spaces\ttab ünïcødé 中文 x=y  "
    );
    let args = vec![
        hostile.clone(),
        format!("; touch {marker}"),
        "python_shell=True".to_owned(),
        "a=b".to_owned(),
        "0644".to_owned(),
        "".to_owned(),
    ];
    let script = "import json, sys; sys.stdout.write(json.dumps(sys.argv[1:]))";
    let mut command = argv(&["python3", "-c", script]);
    command.extend(args.iter().cloned());
    let results = backend(20).run(&minions(), &command, &Report::discard()).await;
    for r in &results {
        assert_eq!(r.status, HostStatus::Ok, "{r:?}");
        let got: Vec<String> = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        assert_eq!(got, args, "every argument arrived as itself, none split, none taken as a keyword");
    }
    // printf %s writes the argument's bytes back exactly.
    let results = backend(20).run(&minions()[..1], &argv(&["printf", "%s", &hostile]), &Report::discard()).await;
    assert_eq!(results[0].stdout.as_str(), hostile, "{:?}", results[0]);
    assert!(!Path::new(&marker).exists(), "{marker} was created: something ran through a shell");
}

#[tokio::test]
async fn stopped_and_unknown_minions_are_unreachable_while_the_others_report_first() {
    let env = testenv().salt;
    let timeout = 6;
    let salt = backend(timeout);
    let mut hosts = vec![host(&env.minions[0]), host(&env.stopped_minion), host("no-such-minion")];
    hosts.extend(env.minions[1..].iter().map(|m| host(m)));
    let (seen, report) = Seen::new();
    let started = Instant::now();
    let results = salt.run(&hosts, &argv(&["true"]), &report).await;
    let took = started.elapsed();
    assert_eq!(names(&results), names_of(&hosts), "host order");

    for m in &env.minions {
        let (status, at) = seen.get(m);
        assert_eq!(status, HostStatus::Ok);
        assert!(at < Duration::from_secs(timeout - 1), "{m} reported at {at:?}, not at the timeout");
    }
    let (status, at) = seen.get("no-such-minion");
    assert_eq!(status, HostStatus::Unreachable);
    assert!(at < Duration::from_secs(2), "an unknown id is known at once, reported at {at:?}");
    let unknown = &results[2];
    assert!(unknown.stderr.contains("not known to the master"), "{unknown:?}");

    let (status, at) = seen.get(&env.stopped_minion);
    assert_eq!(status, HostStatus::Unreachable);
    assert!(at >= Duration::from_secs(timeout), "the stopped minion is waited for: {at:?}");
    let stopped = &results[1];
    assert_eq!(stopped.stderr.as_str(), format!("no return within {timeout} s"), "{stopped:?}");
    assert!(took < Duration::from_secs(timeout + 3), "the call ends at the timeout, took {took:?}");
}

fn names_of(hosts: &[Host]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

#[tokio::test]
async fn files_are_copied_through_salt_with_exact_bytes_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let source_dir = tempfile::tempdir().unwrap();
    let mut big = Vec::with_capacity(1024 * 1024);
    let mut x = rand_u64();
    while big.len() < 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    let all_bytes: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00, 0xc3, 0x28, b'\n']).collect();
    let cases: [(&str, Vec<u8>, u32); 3] =
        [("binary.bin", all_bytes, 0o640), ("big.bin", big, 0o755), ("empty", Vec::new(), 0o600)];
    let hosts = &minions()[..1];
    for (name, data, mode) in cases {
        let source = source_dir.path().join(name);
        std::fs::write(&source, &data).unwrap();
        let dest = dir.path().join(name);
        // Something already at the destination is replaced.
        std::fs::write(&dest, b"old contents").unwrap();
        let dest_text = dest.to_str().unwrap();
        let (seen, report) = Seen::new();
        let results = backend(30).copy_file(hosts, &source, dest_text, mode, &report).await;
        let r = &results[0];
        assert_eq!(r.status, HostStatus::Ok, "{name}: {r:?}");
        assert_eq!(r.stdout.as_str(), format!("copied {} bytes to {dest_text}\n", data.len()));
        assert_eq!(seen.get(&r.host).0, HostStatus::Ok);
        assert!(std::fs::read(&dest).unwrap() == data, "{name}: the bytes differ");
        let got = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "{name}: mode {got:o}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "no temporary files left behind: {left:?}");

    // A destination the minion cannot write is a failed host with Salt's reason.
    let source = source_dir.path().join("binary.bin");
    let results = backend(30).copy_file(hosts, &source, "/proc/omserver-no/x", 0o644, &Report::discard()).await;
    assert_eq!(results[0].status, HostStatus::Failed, "{:?}", results[0]);
    assert!(results[0].stderr.contains("cp.recv_chunked"), "{:?}", results[0]);
}

#[tokio::test]
async fn dropping_the_call_kills_the_job_on_the_minion() {
    let salt = backend(60);
    let running = || {
        let out = Command::new("pgrep").args(["-f", "sleep 6003"]).output().unwrap();
        !out.stdout.is_empty()
    };
    assert!(!running(), "a sleep 6003 is already running: the test cannot tell");
    let (hosts, command, report) = (minions(), argv(&["sleep", "6003"]), Report::discard());
    let call = salt.run(&hosts[..1], &command, &report);
    let dropped = tokio::time::timeout(Duration::from_secs(2), call).await;
    assert!(dropped.is_err(), "sleep 6003 cannot have finished");
    let started = Instant::now();
    // The job's process is running (it was published before the drop) and goes away after kill_job.
    let mut seen_running = false;
    while started.elapsed() < Duration::from_secs(10) {
        if running() {
            seen_running = true;
        } else if seen_running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sleep 6003 {} after the call was dropped", if seen_running { "still runs" } else { "never ran" });
}

#[tokio::test]
async fn bad_credentials_make_every_host_unreachable_with_the_reason() {
    let mut config = config(10);
    config.password = Secret::new("wrong password");
    let salt = SaltBackend::new(config, LIMITS);
    let (seen, report) = Seen::new();
    let results = salt.run(&minions(), &argv(&["true"]), &report).await;
    assert_eq!(names(&results), testenv().salt.minions);
    for r in &results {
        assert_eq!(r.status, HostStatus::Unreachable, "{r:?}");
        assert!(r.stderr.contains("salt-api rejected the credentials (401)"), "{r:?}");
        assert!(!r.stderr.contains("wrong password"), "the password is never shown");
        assert_eq!(seen.get(&r.host).0, HostStatus::Unreachable);
    }
    let problem = salt.check().await.unwrap_err();
    assert!(problem.contains("rejected the credentials"), "{problem}");
}

#[tokio::test]
async fn a_salt_api_that_refuses_connections_makes_every_host_unreachable_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = config(10);
    config.url = format!("http://127.0.0.1:{port}");
    let salt = SaltBackend::new(config, LIMITS);
    let started = Instant::now();
    let results = salt.run(&minions(), &argv(&["true"]), &Report::discard()).await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    for r in &results {
        assert_eq!(r.status, HostStatus::Unreachable, "{r:?}");
        let expected = format!("salt-api at http://127.0.0.1:{port} refused the connection");
        assert!(r.stderr.starts_with(&expected), "{r:?}");
    }
    let problem = salt.check().await.unwrap_err();
    assert!(problem.contains("refused the connection"), "{problem}");

    let mut ftp = self::config(10);
    ftp.url = "ftp://salt".to_owned();
    let results = SaltBackend::new(ftp, LIMITS).run(&minions(), &argv(&["true"]), &Report::discard()).await;
    assert!(results[0].stderr.contains("must start with http:// or https://"), "{:?}", results[0]);
}

#[tokio::test]
async fn check_logs_in_and_the_token_is_reused() {
    let env = testenv().salt;
    let salt = backend(10);
    let line = salt.check().await.unwrap();
    assert_eq!(line, format!("salt-api at {}: logged in as {} (eauth {})", env.url, env.username, env.eauth));
    // Several calls, one after the other and at once, on the one token.
    for _ in 0..2 {
        let results = salt.run(&minions(), &argv(&["true"]), &Report::discard()).await;
        assert!(results.iter().all(|r| r.status == HostStatus::Ok), "{results:?}");
    }
    let (hosts, echo_a, echo_b, report) = (minions(), argv(&["echo", "a"]), argv(&["echo", "b"]), Report::discard());
    let (a, b) = tokio::join!(salt.run(&hosts, &echo_a, &report), salt.run(&hosts, &echo_b, &report));
    assert!(a.iter().all(|r| r.stdout.as_str() == "a\n"), "{a:?}");
    assert!(b.iter().all(|r| r.stdout.as_str() == "b\n"), "{b:?}");

    // A token the master no longer honours (expired, revoked) is replaced by one new login.
    salt.spoil_token_for_tests().await;
    let results = salt.run(&minions(), &argv(&["true"]), &Report::discard()).await;
    assert!(results.iter().all(|r| r.status == HostStatus::Ok), "after a 401: {results:?}");
}

#[test]
fn a_job_through_the_server_runs_on_the_minions() {
    let env = testenv().salt;
    let extra = format!(
        "[backends.saltstack]\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\neauth = \"{}\"\ntimeout_secs = 10\n",
        env.url, env.username, env.password, env.eauth
    );
    let server = Server::start_with(Options { extra_config: extra, seed: vec![1003], ..Options::default() });
    server.wait_for_module("Mid_1003.so", Duration::from_secs(5), |e| e.is_some_and(|e| e["status"] == "loaded"));
    for (i, m) in env.minions.iter().enumerate() {
        // Salt targets by name (`target = "name"`); the addresses only need to be distinct in the inventory.
        let (status, body) = server.post("/api/hosts", &json!({ "name": m, "ip": format!("127.0.0.{}", i + 101) }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) =
        server.post("/api/jobs", &json!({ "module": 1003, "hosts": env.minions, "backend": "saltstack" }));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(30));
    assert_eq!(job["status"], "succeeded", "{job}");
    let issue = std::fs::read_to_string("/etc/issue").unwrap();
    let first = format!("{}\n", issue.lines().next().unwrap());
    let results = job["results"].as_array().unwrap();
    assert_eq!(results.len(), env.minions.len(), "{job}");
    for r in results {
        assert_eq!((r["status"].as_str(), r["stdout"].as_str()), (Some("ok"), Some(first.as_str())), "{r}");
    }
    let (_, backends) = server.get("/api/backends");
    let salt = backends.as_array().unwrap().iter().find(|b| b["backend"] == "saltstack").cloned();
    let salt: Value = salt.unwrap_or_else(|| panic!("{backends}"));
    assert_eq!(salt["ok"], true, "{salt}");
    assert!(!server.log().contains(&env.password), "the password is never logged");
}

fn rand_u64() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    (nanos as u64) ^ (u64::from(std::process::id()) << 32) | 1
}
