//! The ansible backend against the real ansible-core and sshd of the test environment (`cargo xtask testenv up`;
//! `OMSERVER_TESTENV` may name its env.json). Every loopback address is a separate sshd "host" on this machine,
//! so what a command did remotely can be checked here.

mod common;

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use abi_stable::std_types::ROption;
use common::testenv::{testenv, TestEnv};
use omserver::backends::{
    ansible::AnsibleBackend,
    config::{AnsibleConfig, HostKeyPolicy},
    Host, Limits, Report,
};
use omserver_plugin_api::{HostResult, HostStatus};

fn config(env: &TestEnv) -> AnsibleConfig {
    AnsibleConfig {
        executable: env.ansible.executable.clone(),
        forks: 50,
        user: env.ssh.user.clone(),
        port: env.ssh.port,
        identity_file: env.ssh.identity_file.clone(),
        known_hosts_file: env.ssh.known_hosts_file.clone(),
        host_key_policy: HostKeyPolicy::Strict,
        connect_timeout_secs: 3,
    }
}

fn limits() -> Limits {
    Limits { command_timeout: Duration::from_secs(30), output_limit_bytes: 64 * 1024 }
}

fn backend(config: AnsibleConfig, limits: Limits, state: &Path) -> AnsibleBackend {
    AnsibleBackend::new(config, limits, state)
}

fn host(name: &str, address: &str, port: Option<u16>) -> Host {
    Host { name: name.into(), address: address.into(), port, user: None }
}

fn ssh_host(env: &TestEnv, i: usize) -> Host {
    host(&format!("web{i}"), &env.ssh.addresses[i], None)
}

/// Each reported host with the moment it was reported.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

fn recorder() -> (Report, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (Report::new(move |r: &HostResult| sink.lock().unwrap().push((r.host.to_string(), Instant::now()))), seen)
}

fn unique(tag: &str) -> String {
    format!("omserver-ansible-{tag}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

fn pgrep(pattern: &str) -> String {
    let out = std::process::Command::new("pgrep").args(["-af", pattern]).output().unwrap();
    // pgrep -f also matches itself in some setups; it never is `sleep`.
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.contains("pgrep")).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_arguments_arrive_byte_for_byte_and_run_nothing_else() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let pwned = format!("/tmp/{}", unique("pwned"));
    let hostile = [
        "it's \"quoted\"".to_owned(),
        format!("; touch {pwned}"),
        format!("$(touch {pwned})"),
        format!("`touch {pwned}`"),
        format!("| touch {pwned} > {pwned} & echo"),
        "back\\slash \\n".to_owned(),
        "line\nbreak".to_owned(),
        "  runs   of   spaces  ".to_owned(),
        "non-ASCII: grüße, 日本語, ✓".to_owned(),
        "{{ 7 * 7 }} {% raw %} {{ lookup('pipe', 'id') }}".to_owned(),
        "$HOME ~ ${PATH}".to_owned(),
        "trailing newline\n\n".to_owned(),
    ];
    let mut argv = vec!["printf".to_owned(), "%s\\0".to_owned()];
    argv.extend(hostile.iter().cloned());
    argv.push(format!("; touch {pwned}"));
    let hosts: Vec<Host> = (0..3).map(|i| ssh_host(&env, i)).collect();
    let (report, seen) = recorder();
    let results = backend(config(&env), limits(), state.path()).run(&hosts, &argv, &report).await;

    assert_eq!(results.len(), 3);
    let mut expected: String = hostile.iter().map(|a| format!("{a}\0")).collect();
    expected.push_str(&format!("; touch {pwned}\0"));
    for (result, host) in results.iter().zip(&hosts) {
        assert_eq!(result.host.as_str(), host.name, "results in host order");
        assert_eq!(result.status, HostStatus::Ok, "{}: {}", result.host, result.stderr);
        assert_eq!(result.rc, ROption::RSome(0));
        let got: Vec<&str> = result.stdout.as_str().split('\0').collect();
        let want: Vec<&str> = expected.split('\0').collect();
        assert_eq!(got, want, "each argument arrived as exactly itself");
    }
    assert!(!Path::new(&pwned).exists(), "an argument was run as a command");
    assert_eq!(seen.lock().unwrap().len(), 3, "every host reported once");
    // Nothing of the call is left in the state directory, and ansible's home is there, not in ours.
    assert_eq!(std::fs::read_dir(state.path().join("ansible/calls")).unwrap().count(), 0);
    assert!(state.path().join("ansible/home").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_output_and_missing_programs_are_per_host_outcomes() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let small = Limits { command_timeout: Duration::from_secs(30), output_limit_bytes: 1000 };
    let ansible = backend(config(&env), small, state.path());
    let hosts = [ssh_host(&env, 3)];
    let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"].map(String::from).to_vec();
    let r = &ansible.run(&hosts, &argv, &Report::discard()).await[0];
    assert_eq!((r.status, r.rc), (HostStatus::Failed, ROption::RSome(3)), "{}", r.stderr);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));

    let argv: Vec<String> = ["head", "-c", "100000", "/dev/zero"].map(String::from).to_vec();
    let r = &ansible.run(&hosts, &argv, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert!(r.stdout.ends_with("\n[output cut: 99000 more bytes]"), "{}", &r.stdout[1000..]);

    let r = &ansible.run(&hosts, &["/nonexistent/program".to_owned()], &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed);
    assert!(r.stderr.contains("No such file"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_writes_exact_bytes_and_mode() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    // 1 MiB of every byte value, not UTF-8.
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(std::str::from_utf8(&data).is_err());
    std::fs::write(&source, &data).unwrap();
    let target = tempfile::tempdir().unwrap();
    let dest = target.path().join("copied.bin");
    let dest_str = dest.to_str().unwrap();
    let ansible = backend(config(&env), limits(), state.path());
    let hosts = [ssh_host(&env, 4)];

    let r = &ansible.copy_file(&hosts, &source, dest_str, 0o640, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert_eq!(r.stdout.as_str(), format!("copied {} bytes to {dest_str}\n", data.len()));
    assert!(std::fs::read(&dest).unwrap() == data, "exact bytes");
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o640);

    // Same bytes, another mode: the mode is still applied.
    let r = &ansible.copy_file(&hosts, &source, dest_str, 0o600, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o600);

    let r = &ansible.copy_file(&hosts, &source, "/nonexistent-dir/x", 0o600, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed);
    assert!(!r.stderr.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_black_holed_hosts_are_unreachable_while_others_succeed_and_report_first() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    // Accepts TCP and never says a word.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming() {
            held.push(conn);
        }
    });
    let hosts = [
        ssh_host(&env, 5),
        host("refused", &env.ssh.addresses[6], Some(env.ssh.closed_port)),
        host("hole", "127.0.0.1", Some(hole_port)),
        ssh_host(&env, 7),
    ];
    let (report, seen) = recorder();
    let started = Instant::now();
    let slow_connect = AnsibleConfig { connect_timeout_secs: 5, ..config(&env) };
    let results = backend(slow_connect, limits(), state.path())
        .run(&hosts, &["uname".to_owned(), "-n".to_owned()], &report)
        .await;
    let took = started.elapsed();
    let status: Vec<HostStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        [HostStatus::Ok, HostStatus::Unreachable, HostStatus::Unreachable, HostStatus::Ok],
        "{results:#?}"
    );
    assert!(results[1].stderr.contains("refused"), "{}", results[1].stderr);
    // connect_timeout_secs = 5, plus ansible's start-up.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let seen = seen.lock().unwrap();
    let at = |name: &str| seen.iter().find(|(h, _)| h == name).map(|(_, t)| *t).unwrap();
    assert!(at("web5") + Duration::from_secs(2) < at("hole"), "the good host was reported before the dead one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_changed_host_keys_fail_and_nothing_runs() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("/tmp/{}", unique("hostkey"));
    let argv = vec!["touch".to_owned(), marker.clone()];
    let hosts = [ssh_host(&env, 8)];

    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let unknown = AnsibleConfig { known_hosts_file: empty, ..config(&env) };
    let r = &backend(unknown, limits(), state.path()).run(&hosts, &argv, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(
        r.stderr.contains("not in known_hosts_file") && r.stderr.contains("omserver hosts trust web8"),
        "{}",
        r.stderr
    );

    let other_key = dir.path().join("other");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let public = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    let changed_file = dir.path().join("changed_known_hosts");
    let entry = format!("[{}]:{} {}\n", env.ssh.addresses[8], env.ssh.port, public.join(" "));
    std::fs::write(&changed_file, entry).unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let changed = AnsibleConfig { known_hosts_file: changed_file.clone(), host_key_policy: policy, ..config(&env) };
        let r = &backend(changed, limits(), state.path()).run(&hosts, &argv, &Report::discard()).await[0];
        assert_eq!(r.status, HostStatus::Failed, "{policy:?}: {}", r.stderr);
        assert!(r.stderr.contains("CHANGED"), "{policy:?}: {}", r.stderr);
    }
    assert!(!Path::new(&marker).exists(), "the command ran on a host whose key was not trusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_an_unknown_key_then_runs() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, "").unwrap();
    let tofu =
        AnsibleConfig { known_hosts_file: file.clone(), host_key_policy: HostKeyPolicy::AcceptNew, ..config(&env) };
    let hosts = [ssh_host(&env, 9)];
    let r = &backend(tofu, limits(), state.path()).run(&hosts, &["true".to_owned()], &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Ok, "{}", r.stderr);
    assert!(!std::fs::read_to_string(&file).unwrap().trim().is_empty(), "the key was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_call_leaves_no_remote_process() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let ansible = backend(config(&env), limits(), state.path());
    let hosts = [ssh_host(&env, 10)];
    let pattern = "sleep 6002";
    assert_eq!(pgrep(pattern), "", "a sleep 6002 from an earlier run is still there");
    let argv = vec!["sleep".to_owned(), "6002".to_owned()];
    let report = Report::discard();
    let call = ansible.run(&hosts, &argv, &report);
    // Drive the call until the remote sleep runs, then drop it (a cancelled job).
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::pin!(call);
        loop {
            tokio::select! {
                _ = &mut call => panic!("the call ended by itself"),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if !pgrep(pattern).is_empty() { break; }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    assert!(waited.is_ok(), "the remote sleep never started");
    let dropped = Instant::now();
    while !pgrep(pattern).is_empty() {
        assert!(dropped.elapsed() < Duration::from_secs(5), "left behind after cancel:\n{}", pgrep(pattern));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nor is anything of ansible left here: its workers leave its process group (setsid), they must go too.
    let ours = state.path().to_str().unwrap();
    assert_eq!(pgrep(ours), "", "ansible processes of the cancelled call remain");
    assert_eq!(pgrep(&format!("ssh .*{}", env.ssh.addresses[10])), "", "ssh clients of the cancelled call remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_over_its_timeout_fails_and_is_stopped() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let short = Limits { command_timeout: Duration::from_secs(2), output_limit_bytes: 1024 };
    let hosts = [ssh_host(&env, 11)];
    let started = Instant::now();
    let argv = vec!["sleep".to_owned(), "6003".to_owned()];
    let r = &backend(config(&env), short, state.path()).run(&hosts, &argv, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let stopped = Instant::now();
    while !pgrep("sleep 6003").is_empty() {
        assert!(stopped.elapsed() < Duration::from_secs(5), "left behind after the timeout:\n{}", pgrep("sleep 6003"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hosts_in_one_call() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = (0..50).map(|i| ssh_host(&env, i)).collect();
    let started = Instant::now();
    let results = backend(config(&env), limits(), state.path())
        .run(&hosts, &["uname".to_owned(), "-n".to_owned()], &Report::discard())
        .await;
    let took = started.elapsed();
    let hostname = std::process::Command::new("uname").arg("-n").output().unwrap().stdout;
    let hostname = String::from_utf8(hostname).unwrap();
    for r in &results {
        assert_eq!((r.status, r.stdout.as_str()), (HostStatus::Ok, hostname.as_str()), "{}: {}", r.host, r.stderr);
    }
    eprintln!("ansible, 50 hosts, forks 50, uname -n: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_version_or_what_is_wrong() {
    let env = testenv();
    let state = tempfile::tempdir().unwrap();
    let line = backend(config(&env), limits(), state.path()).check().await.unwrap();
    assert!(line.contains("core 2.19"), "{line}");
    let no_key = AnsibleConfig { identity_file: "/nonexistent/key".into(), ..config(&env) };
    let problem = backend(no_key, limits(), state.path()).check().await.unwrap_err();
    assert!(problem.contains("/nonexistent/key"), "{problem}");
    let no_binary = AnsibleConfig { executable: "/nonexistent/ansible".into(), ..config(&env) };
    let problem = backend(no_binary, limits(), state.path()).check().await.unwrap_err();
    assert!(problem.contains("/nonexistent/ansible"), "{problem}");
}
