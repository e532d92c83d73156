//! Every backend through the real server, side by side: the seed modules give the same outcome on local, ssh,
//! ansible, saltstack and func; module 1005 places exact bytes and mode on each; a black-holed host does not hold
//! back the others' live events; a cancelled `sleep` leaves nothing behind. Needs the test environment
//! (`cargo xtask testenv up`, which `cargo xtask test` runs); Func is the test suite's protocol stand-in.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    cli, fixture, install,
    testenv::{testenv, TestEnv},
    Options, Server,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Each backend with the inventory hosts it is tested on.
const BACKENDS: &[(&str, &[&str])] = &[
    ("local", &["localhost"]),
    ("ssh", &["s1", "s2"]),
    ("ansible", &["s1", "s2"]),
    ("saltstack", &["m1", "m2"]),
    ("func", &["f1", "f2"]),
];

/// A server with every backend configured and the test hosts in its inventory.
fn server_with(env: &TestEnv, seed: Vec<u32>, extra: &str) -> Server {
    let extra_config = format!("{}{extra}", env.backends_config());
    let server = Server::start_with(Options { extra_config, seed, ..Options::default() });
    let ssh = &env.ssh.addresses;
    let mut hosts = vec![("s1", ssh[0].as_str()), ("s2", ssh[1].as_str())];
    hosts.extend([("m1", "127.0.0.90"), ("m2", "127.0.0.91"), (env.salt.stopped_minion.as_str(), "127.0.0.99")]);
    hosts.extend(env.func.hosts.iter().map(|h| (h.name.as_str(), h.address.as_str())));
    for (name, ip) in hosts {
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

fn run_on(server: &Server, module: u32, backend: &str, hosts: &[&str], params: Value) -> Value {
    let body = json!({ "module": module, "hosts": hosts, "params": params, "backend": backend });
    let (status, answer) = server.post("/api/jobs", &body);
    assert_eq!(status, StatusCode::ACCEPTED, "{backend}: {answer}");
    server.wait_job(answer["id"].as_i64().unwrap(), Duration::from_secs(120))
}

/// What must be the same on every backend: the status, and for a host that succeeded its exit code and output.
type Outcome = (String, Option<i64>, String);

fn outcome(result: &Value) -> Outcome {
    let status = result["status"].as_str().unwrap_or_default().to_owned();
    if status == "ok" {
        (status, result["rc"].as_i64(), result["stdout"].as_str().unwrap_or_default().to_owned())
    } else {
        (status, None, String::new())
    }
}

#[test]
fn seed_modules_give_the_same_outcome_on_every_backend() {
    let env = testenv();
    let dir = tempfile::tempdir().unwrap();
    let messages = dir.path().join("messages");
    let secure = dir.path().join("secure");
    let config = dir.path().join("nginx.conf");
    fs::write(&messages, (1..=80).map(|i| format!("message line {i}\n")).collect::<String>()).unwrap();
    fs::write(&secure, "login one\nlogin two\nlogin three\n").unwrap();
    fs::write(&config, "worker_processes 4;\nevents {}\n").unwrap();
    let settings = format!(
        "[modules.1001]\npath = \"{}\"\n[modules.1002]\npath = \"{}\"\n[modules.1006]\n\"path.nginx\" = \"{}\"\n\
         [modules.1007]\n\"command.nginx\" = \"echo nginx restarted\"\n",
        messages.display(),
        secure.display(),
        config.display()
    );
    let server = server_with(&env, vec![1001, 1002, 1003, 1004, 1006, 1007], &settings);
    let cases: &[(u32, Value)] = &[
        (1001, json!({ "lines": 7 })),
        (1002, json!({})),
        (1003, json!({})),
        (1004, json!({})),
        (1006, json!({ "service": "nginx" })),
        (1006, json!({ "service": "squid" })),
        (1007, json!({ "service": "nginx" })),
    ];
    for (module, params) in cases {
        let mut seen: BTreeMap<&str, Vec<Outcome>> = BTreeMap::new();
        for (backend, hosts) in BACKENDS {
            let job = run_on(&server, *module, backend, hosts, params.clone());
            let results = job["results"].as_array().unwrap();
            assert_eq!(results.len(), hosts.len(), "{backend} {module}: {job}");
            seen.insert(backend, results.iter().map(outcome).collect());
        }
        let local = seen["local"][0].clone();
        for (backend, outcomes) in &seen {
            for got in outcomes {
                assert_eq!(got, &local, "module {module} {params} on {backend} differs from local: {seen:#?}");
            }
        }
    }
    // The cases above must not all be failures that agree: the point is equal output.
    let job = run_on(&server, 1001, "ssh", &["s1"], json!({ "lines": 2 }));
    assert_eq!(job["results"][0]["stdout"], "message line 79\nmessage line 80\n", "{job}");
}

#[test]
fn module_1005_places_exact_bytes_and_mode_on_every_backend() {
    let env = testenv();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("resin.conf");
    let settings = format!("[modules.1005]\n\"dest.resin\" = \"{}\"\n", dest.display());
    let server = server_with(&env, vec![1005], &settings);
    // Not UTF-8, with NULs, CRs and a missing final newline: every byte must arrive as it is.
    let mut bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    bytes.extend_from_slice(b"\r\nlast line without newline");
    fs::write(server.files_dir().join("resin.conf"), &bytes).unwrap();
    for (backend, hosts) in BACKENDS {
        // One host per job: every "host" here is this machine, so two would write the same file.
        fs::write(&dest, b"old content").unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        let job = run_on(&server, 1005, backend, &hosts[..1], json!({ "file": "resin" }));
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        let written = fs::read(&dest).unwrap();
        assert!(written == bytes, "{backend}: {} bytes written, {} expected", written.len(), bytes.len());
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644, "{backend}: mode {mode:o}");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{backend} left temporary files: {leftovers:?}");
    }
}

/// A TCP listener that accepts connections and never says a word (a host whose service hangs).
fn black_hole(address: &str, port: u16) -> (TcpListener, u16) {
    let listener = TcpListener::bind((address, port)).expect("bind the black hole");
    let port = listener.local_addr().unwrap().port();
    let holder = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in holder.incoming().flatten() {
            held.push(stream);
        }
    });
    (listener, port)
}

#[test]
fn a_black_holed_host_does_not_hold_back_the_others_events() {
    let env = testenv();
    let server = server_with(&env, vec![1003], "");
    let (_ssh_hole, port) = black_hole("127.0.0.61", 0);
    let (status, body) = server.post("/api/hosts", &json!({ "name": "hole", "ip": "127.0.0.61", "port": port }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_func_hole, _) = black_hole("127.0.0.74", env.func.port);
    let (status, body) = server.post("/api/hosts", &json!({ "name": "fhole", "ip": "127.0.0.74" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stopped = env.salt.stopped_minion.as_str();
    let cases: &[(&str, &[&str], &str)] = &[
        ("ssh", &["s1", "hole", "s2"], "hole"),
        ("ansible", &["s1", "hole", "s2"], "hole"),
        ("saltstack", &["m1", stopped, "m2"], stopped),
        ("func", &["f1", "fhole", "f2"], "fhole"),
    ];
    for (backend, hosts, dead) in cases {
        let body = json!({ "module": 1003, "hosts": hosts, "backend": backend });
        let (status, answer) = server.post("/api/jobs", &body);
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let events = server.job_events(answer["id"].as_i64().unwrap()).until_end(Duration::from_secs(90));
        let end = events.last().unwrap();
        let dead_result = end.data["results"].as_array().unwrap().iter().find(|r| r["host"] == *dead).unwrap();
        assert_eq!(dead_result["status"], "unreachable", "{backend}: {dead_result}");
        for good in hosts.iter().filter(|h| *h != dead) {
            let seen = events.iter().find(|e| e.event == "host" && e.data["host"] == *good);
            let seen = seen.unwrap_or_else(|| panic!("{backend}: no host event for {good}: {events:?}"));
            assert_eq!(seen.data["status"], "ok", "{backend}: {seen:?}");
            assert!(
                seen.at + Duration::from_secs(2) < end.at,
                "{backend}: {good} arrived at {:?}, the end at {:?}: not well before",
                seen.at,
                end.at
            );
        }
    }
}

/// True while a process whose command line is exactly `sleep <seconds>` runs on this machine (every test host).
fn sleeping(seconds: u32) -> bool {
    Command::new("pgrep").args(["-x", "-f", &format!("sleep {seconds}")]).status().is_ok_and(|s| s.success())
}

#[test]
fn cancelling_a_remote_sleep_leaves_none_behind() {
    let env = testenv();
    let server = server_with(&env, vec![], "");
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    for (i, (backend, hosts)) in [("ssh", "s1"), ("ansible", "s2"), ("saltstack", "m1")].into_iter().enumerate() {
        let seconds = 6100 + i as u32;
        let body = json!({ "module": 9003, "hosts": [hosts], "params": { "seconds": seconds }, "backend": backend });
        let (status, answer) = server.post("/api/jobs", &body);
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let id = answer["id"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sleeping(seconds) {
            assert!(Instant::now() < deadline, "{backend}: the remote sleep never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
        assert_eq!(status, StatusCode::OK, "{body}");
        let job = server.wait_job(id, Duration::from_secs(30));
        assert_eq!(job["status"], "cancelled", "{backend}: {job}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while sleeping(seconds) {
            assert!(Instant::now() < deadline, "{backend}: `sleep {seconds}` outlived its cancelled job");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_cli_runs_on_a_named_backend_and_prints_each_host() {
    let env = testenv();
    let server = server_with(&env, vec![1003], "");
    let out = cli(&server, &["run", "--module", "1003", "--host", "s1", "--host", "s2", "--backend", "ssh"]);
    assert!(out.status.success(), "{out:?}");
    let issue = fs::read_to_string("/etc/issue").unwrap();
    let first = issue.lines().next().unwrap();
    for host in ["s1", "s2"] {
        assert!(out.stdout.contains(&format!("host: {host}\nstatus: ok (rc 0)\n{first}")), "{out:?}");
    }
    let check = cli(&server, &["backends", "check"]);
    assert!(check.status.success(), "every backend of the test environment is healthy: {check:?}");
    assert!(Path::new(&env.ssh.known_hosts_file).exists());
}

#[test]
fn hosts_trust_records_the_presented_key_and_never_replaces_a_different_one() {
    let env = testenv();
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let config =
        env.backends_config().replace(&env.ssh.known_hosts_file.display().to_string(), &known.display().to_string());
    let server = Server::start_with(Options { extra_config: config, seed: vec![1003], ..Options::default() });
    let address = &env.ssh.addresses[20];
    let (status, body) = server.post("/api/hosts", &json!({ "name": "fresh", "ip": address }));
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let refused = run_on(&server, 1003, "ssh", &["fresh"], json!({}));
    let stderr = refused["results"][0]["stderr"].as_str().unwrap().to_owned();
    assert_eq!(refused["results"][0]["status"], "failed", "{refused}");
    assert!(stderr.contains("omserver hosts trust fresh"), "the refusal says how to fix it: {stderr}");

    let trusted = cli(&server, &["hosts", "trust", "fresh"]);
    assert!(trusted.status.success(), "{trusted:?}");
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(env.ssh.identity_file.with_file_name("host_ed25519.pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout).split_whitespace().nth(1).unwrap().to_owned();
    assert!(trusted.stdout.contains(&fingerprint), "prints the fingerprint {fingerprint}: {trusted:?}");
    assert!(trusted.stdout.contains("recorded in"), "{trusted:?}");
    let job = run_on(&server, 1003, "ssh", &["fresh"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
    let again = cli(&server, &["hosts", "trust", "fresh"]);
    assert!(again.stdout.contains("already trusted"), "{again:?}");

    // Another ed25519 key recorded for the same address: trust refuses to replace it.
    let other = dir.path().join("other");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other).status().unwrap();
    assert!(made.success());
    let other_key = fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    fs::write(&known, format!("[{address}]:{} {}\n", env.ssh.port, other_key.join(" "))).unwrap();
    let conflict = cli(&server, &["hosts", "trust", "fresh"]);
    assert!(!conflict.status.success(), "{conflict:?}");
    assert!(conflict.stderr.contains("different ssh-ed25519 key"), "{conflict:?}");
    let kept = fs::read_to_string(&known).unwrap();
    assert_eq!(kept.lines().count(), 1, "nothing was added: {kept}");
}
