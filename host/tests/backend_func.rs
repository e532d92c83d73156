//! The func backend against the test suite's Func protocol stand-in (`testenv/func_standin.py`: XML-RPC over
//! mutual TLS, `command.run` and `copyfile.copyfile`), started by `cargo xtask testenv up`. Func itself cannot be
//! installed from any registry. The stand-ins run on this machine, so what a call did can be checked here.

mod common;

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use abi_stable::std_types::ROption;
use common::testenv::{testenv, TestEnv};
use omserver::backends::{config::FuncConfig, func::FuncBackend, Host, Limits, Report};
use omserver_plugin_api::HostStatus;

fn config(env: &TestEnv) -> FuncConfig {
    FuncConfig {
        port: env.func.port,
        ca_file: env.func.ca_file.clone(),
        cert_file: env.func.cert_file.clone(),
        key_file: env.func.key_file.clone(),
        connect_timeout_secs: 3,
        max_parallel: 10,
    }
}

fn limits() -> Limits {
    Limits { command_timeout: Duration::from_secs(20), output_limit_bytes: 64 * 1024 }
}

fn hosts(env: &TestEnv) -> Vec<Host> {
    env.func.hosts.iter().map(|h| host(&h.name, &h.address)).collect()
}

fn host(name: &str, address: &str) -> Host {
    Host { name: name.into(), address: address.into(), port: None, user: None }
}

fn marker(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    PathBuf::from(format!("/tmp/omserver-func-{tag}-{}-{nanos}", std::process::id()))
}

fn touch(path: &Path) -> Vec<String> {
    vec!["touch".to_owned(), path.to_str().unwrap().to_owned()]
}

/// A self-signed certificate and key from a CA nobody trusts.
fn stranger(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("stranger.cert"), dir.join("stranger.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=f1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_on_every_host_with_their_exit_codes() {
    let env = testenv();
    let func = FuncBackend::new(config(&env), limits());
    let hosts = hosts(&env);
    let seen = Arc::new(Mutex::new(0));
    let count = seen.clone();
    let report = Report::new(move |_| *count.lock().unwrap() += 1);
    let results = func.run(&hosts, &["echo".into(), "hello;$(id)".into(), "`x`|&>".into()], &report).await;
    assert_eq!(*seen.lock().unwrap(), hosts.len());
    for (r, h) in results.iter().zip(&hosts) {
        assert_eq!(r.host.as_str(), h.name);
        assert_eq!((r.status, r.rc), (HostStatus::Ok, ROption::RSome(0)), "{}: {}", r.host, r.stderr);
        assert_eq!(r.stdout.as_str(), "hello;$(id) `x`|&>\n", "no shell on the way");
    }
    let r = &func.run(&hosts[..1], &["false".into()], &Report::discard()).await[0];
    assert_eq!((r.status, r.rc), (HostStatus::Failed, ROption::RSome(1)));
    let r = &func.run(&hosts[..1], &["/nonexistent/program".into()], &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed);
    assert!(r.stderr.contains("fault") && r.stderr.contains("/nonexistent/program"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argument_with_whitespace_is_refused_and_nothing_is_sent() {
    let env = testenv();
    let func = FuncBackend::new(config(&env), limits());
    let (a, b) = (marker("split-a"), marker("split-b"));
    let joined = format!("{} {}", a.display(), b.display());
    for arg in [joined.clone(), format!("{}\n", a.display()), format!("{}\t{}", a.display(), b.display())] {
        let r = &func.run(&hosts(&env)[..1], &["touch".into(), arg.clone()], &Report::discard()).await[0];
        assert_eq!(r.status, HostStatus::Failed);
        assert!(r.stderr.contains("whitespace") && r.stderr.contains("nothing was sent"), "{arg:?}: {}", r.stderr);
    }
    assert!(!a.exists() && !b.exists(), "the command was sent after all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_certificate_names_another_host_fails_and_runs_nothing() {
    let env = testenv();
    let func = FuncBackend::new(config(&env), limits());
    let wrong = &env.func.wrong_cn_host;
    let path = marker("wrong-cn");
    let r = &func.run(&[host(&wrong.name, &wrong.address)], &touch(&path), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("expected {:?}", wrong.name)) && r.stderr.contains("\"not-f4\""),
        "names the expected and the presented CN: {}",
        r.stderr
    );
    assert!(!path.exists(), "the command ran on a host with the wrong certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_or_a_client_the_minion_does_not_trust_fails_and_runs_nothing() {
    let env = testenv();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = stranger(dir.path());
    let path = marker("untrusted");

    // We do not trust the minion: its certificate is not from our CA.
    let unknown_ca = FuncConfig { ca_file: cert.clone(), ..config(&env) };
    let r = &FuncBackend::new(unknown_ca, limits()).run(&hosts(&env)[..1], &touch(&path), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(r.stderr.contains("TLS") && r.stderr.contains("UnknownIssuer"), "{}", r.stderr);

    // The minion does not trust us: our certificate is not from its certmaster.
    let stranger_client = FuncConfig { cert_file: cert, key_file: key, ..config(&env) };
    let r =
        &FuncBackend::new(stranger_client, limits()).run(&hosts(&env)[..1], &touch(&path), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(!path.exists(), "the command ran without mutual trust");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_writes_exact_bytes_and_mode_and_says_when_unchanged() {
    let env = testenv();
    let func = FuncBackend::new(config(&env), limits());
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(std::str::from_utf8(&data).is_err());
    std::fs::write(&source, &data).unwrap();
    let target = tempfile::tempdir().unwrap();
    let dest = target.path().join("copied.bin");
    let dest_str = dest.to_str().unwrap();
    let one = &hosts(&env)[..1];

    let r = &func.copy_file(one, &source, dest_str, 0o640, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert_eq!(r.stdout.as_str(), format!("copied {} bytes to {dest_str}\n", data.len()));
    assert!(std::fs::read(&dest).unwrap() == data, "exact bytes");
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o640);

    let r = &func.copy_file(one, &source, dest_str, 0o640, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert!(r.stdout.starts_with("unchanged"), "{}", r.stdout);

    let r = &func.copy_file(one, &source, dest_str, 0o600, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o600);

    let r = &func.copy_file(one, &source, "/proc/omserver-cannot-write-here", 0o600, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_black_holed_hosts_are_unreachable_while_others_succeed() {
    let env = testenv();
    // Accepts TCP on the funcd port of another loopback address and never says a word.
    let hole = TcpListener::bind(("127.0.0.75", env.func.port)).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming() {
            held.push(conn);
        }
    });
    let mut hosts = hosts(&env);
    hosts.insert(1, host("refused", "127.0.0.76"));
    hosts.insert(2, host("hole", "127.0.0.75"));
    let reported = Arc::new(Mutex::new(Vec::new()));
    let sink = reported.clone();
    let report = Report::new(move |r| sink.lock().unwrap().push((r.host.to_string(), Instant::now())));
    let started = Instant::now();
    let results = FuncBackend::new(config(&env), limits()).run(&hosts, &["uname".into(), "-n".into()], &report).await;
    let took = started.elapsed();
    let status: Vec<HostStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        [HostStatus::Ok, HostStatus::Unreachable, HostStatus::Unreachable, HostStatus::Ok, HostStatus::Ok],
        "{results:#?}"
    );
    assert!(results[1].stderr.contains("refused"), "{}", results[1].stderr);
    assert!(results[2].stderr.contains("did not complete TLS"), "{}", results[2].stderr);
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(6), "connect_timeout_secs = 3, took {took:?}");
    let reported = reported.lock().unwrap();
    let at = |name: &str| reported.iter().find(|(h, _)| h == name).map(|(_, t)| *t).unwrap();
    assert!(at("f1") + Duration::from_secs(2) < at("hole"), "the good hosts were reported first");
}

#[tokio::test]
async fn check_loads_the_certificates_or_says_which_file_is_wrong() {
    let env = testenv();
    let line = FuncBackend::new(config(&env), limits()).check().await.unwrap();
    assert!(line.contains("certificates loaded"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    let (_, other_key) = stranger(dir.path());
    let mismatched = FuncConfig { key_file: other_key.clone(), ..config(&env) };
    let problem = FuncBackend::new(mismatched, limits()).check().await.unwrap_err();
    assert!(problem.contains("does not belong to cert_file"), "{problem}");
    let missing = FuncConfig { ca_file: "/nonexistent/ca.cert".into(), ..config(&env) };
    let problem = FuncBackend::new(missing, limits()).check().await.unwrap_err();
    assert!(problem.contains("ca_file /nonexistent/ca.cert"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_command_timeout_fails_at_the_timeout() {
    let env = testenv();
    let short = Limits { command_timeout: Duration::from_secs(2), output_limit_bytes: 1024 };
    let started = Instant::now();
    let r = &FuncBackend::new(config(&env), short)
        .run(&hosts(&env)[..1], &["sleep".into(), "4".into()], &Report::discard())
        .await[0];
    let took = started.elapsed();
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(r.stderr.contains("timed out after 2s"), "{}", r.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
