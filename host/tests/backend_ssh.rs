//! The native `ssh` backend against real sshd on loopback (the test environment's, and for RSA keys a small sshd
//! of this file's own). Every address 127.0.0.x is a separate host to sshd; `$SSH_CONNECTION` tells them apart and
//! names the client port, which shows whether a connection was reused.

mod common;

use std::{
    collections::HashSet,
    io::Read,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use omserver::backends::{
    config::{HostKeyPolicy, SshConfig},
    ssh::{self, SshBackend},
    Host, Limits, Report,
};
use omserver_plugin_api::{HostResult, HostStatus};
use serde_json::json;

fn env() -> common::testenv::SshEnv {
    common::testenv::testenv().ssh
}

fn config(known_hosts: &Path, policy: HostKeyPolicy) -> SshConfig {
    let env = env();
    SshConfig {
        user: env.user,
        port: env.port,
        identity_file: env.identity_file,
        known_hosts_file: known_hosts.to_path_buf(),
        host_key_policy: policy,
        connect_timeout_secs: 10,
        max_parallel: 100,
        ..SshConfig::default()
    }
}

const LIMITS: Limits = Limits { command_timeout: Duration::from_secs(60), output_limit_bytes: 4 << 20 };

fn backend() -> SshBackend {
    SshBackend::new(config(&env().known_hosts_file, HostKeyPolicy::Strict), LIMITS)
}

/// The test environment's hosts `from..to` (indexes into its address list), named `h<index>`.
fn hosts(range: std::ops::Range<usize>) -> Vec<Host> {
    let env = env();
    range.map(|i| host(&format!("h{i}"), &env.addresses[i], None)).collect()
}

fn host(name: &str, address: &str, port: Option<u16>) -> Host {
    Host { name: name.into(), address: address.into(), port, user: None }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn unique() -> String {
    format!("{:x}{:x}", std::process::id(), rand::random::<u32>())
}

/// A report that remembers the order hosts were reported in.
fn recording() -> (Report, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (Report::new(move |r: &HostResult| sink.lock().unwrap().push(r.host.to_string())), seen)
}

fn assert_ok(r: &HostResult) {
    assert_eq!(r.status, HostStatus::Ok, "{}: {} / {}", r.host, r.stdout, r.stderr);
}

/// `$SSH_CONNECTION` of a host: (client port, server address).
async fn connection_of(backend: &SshBackend, hosts: &[Host]) -> Vec<(String, String)> {
    let results = backend.run(hosts, &argv(&["sh", "-c", "echo $SSH_CONNECTION"]), &Report::discard()).await;
    results
        .iter()
        .map(|r| {
            assert_ok(r);
            let words: Vec<&str> = r.stdout.split_whitespace().collect();
            (words[1].to_owned(), words[2].to_owned())
        })
        .collect()
}

fn pgrep(pattern: &str) -> bool {
    Command::new("pgrep").args(["-f", pattern]).output().unwrap().status.success()
}

async fn eventually(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let bits: &[&str] = if kind == "rsa" { &["-b", "3072"] } else { &[] };
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind])
        .args(bits)
        .args(["-N", passphrase, "-C", "omserver-test", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn fingerprint_of(pub_file: &Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(pub_file).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts_in_one_call_each_report_as_they_finish() {
    let hosts = hosts(0..8);
    let (report, seen) = recording();
    let results =
        backend().run(&hosts, &argv(&["sh", "-c", "echo $SSH_CONNECTION; echo to-stderr >&2"]), &report).await;
    assert_eq!(results.len(), 8);
    for (host, result) in hosts.iter().zip(&results) {
        assert_ok(result);
        assert_eq!(result.host, host.name.as_str(), "results come back in host order");
        let server_address = result.stdout.split_whitespace().nth(2).unwrap();
        assert_eq!(server_address, host.address, "each host is its own address");
        assert_eq!(result.stderr, "to-stderr\n");
        assert_eq!(result.rc, abi_stable::std_types::ROption::RSome(0));
    }
    let reported: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(reported.len(), 8, "every host reported once");
}

/// `max_parallel` bounds the hosts worked on at once: measured from the commands' own start and end times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_bounds_the_hosts_worked_on_at_once() {
    let mut config = config(&env().known_hosts_file, HostKeyPolicy::Strict);
    config.max_parallel = 2;
    let backend = SshBackend::new(config, LIMITS);
    let script = "date +%s.%N; sleep 0.4; date +%s.%N";
    let results = backend.run(&hosts(53..59), &argv(&["sh", "-c", script]), &Report::discard()).await;
    let spans: Vec<(f64, f64)> = results
        .iter()
        .map(|r| {
            assert_ok(r);
            let t: Vec<f64> = r.stdout.split_whitespace().map(|w| w.parse().unwrap()).collect();
            (t[0], t[1])
        })
        .collect();
    let most = spans.iter().map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count()).max();
    assert_eq!(most, Some(2), "at most two at once, and two did overlap: {spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_output_caps() {
    let limits = Limits { command_timeout: Duration::from_secs(60), output_limit_bytes: 1000 };
    let backend = SshBackend::new(config(&env().known_hosts_file, HostKeyPolicy::Strict), limits);
    let hosts = hosts(8..9);
    let r = &backend.run(&hosts, &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]), &Report::discard()).await[0];
    assert_eq!((r.status, r.rc), (HostStatus::Failed, abi_stable::std_types::ROption::RSome(3)));
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));
    let r = &backend.run(&hosts, &argv(&["head", "-c", "300000", "/dev/zero"]), &Report::discard()).await[0];
    assert_ok(r);
    assert!(r.stdout.ends_with("\n[output cut: 299000 more bytes]"), "{:?}", &r.stdout[1000..]);
    let r = &backend.run(&hosts, &argv(&["/nonexistent/program"]), &Report::discard()).await[0];
    assert_eq!((r.status, r.rc), (HostStatus::Failed, abi_stable::std_types::ROption::RSome(127)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_argument_arrives_as_one_argument_and_runs_nothing() {
    let canary = format!("/tmp/omserver-pwned-{}", unique());
    let hostile = format!(
        "it's \"quoted\"; touch {canary}; $(touch {canary}) `touch {canary}` | tee {canary} > {canary} & \
         touch {canary} \\ back\\slash\nnew line   runs  of   spaces grüße 日本 ';touch {canary};'"
    );
    let args = argv(&["printf", "%s\\0", &hostile, "", "'", "; touch", &canary]);
    let results = backend().run(&hosts(9..11), &args, &Report::discard()).await;
    let want = format!("{hostile}\0\0'\0; touch\0{canary}\0");
    for r in &results {
        assert_ok(r);
        assert_eq!(r.stdout.as_bytes(), want.as_bytes(), "byte for byte, argument for argument");
    }
    assert!(!Path::new(&canary).exists(), "nothing else ran");
    // And python sees the same argument vector.
    let results = backend()
        .run(
            &hosts(9..10),
            &argv(&["python3", "-c", "import sys; print(repr(sys.argv[1:]))", &hostile, ""]),
            &Report::discard(),
        )
        .await;
    assert_ok(&results[0]);
    let python_repr =
        Command::new("python3").args(["-c", "import sys; print(repr(sys.argv[1:]))", &hostile, ""]).output().unwrap();
    assert_eq!(results[0].stdout.as_bytes(), python_repr.stdout);
}

/// Accepts TCP connections and never says a word (a host whose sshd hangs, or a tarpit).
fn black_hole() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match listener.accept() {
                Ok((socket, _)) => held.push(socket),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            if held.len() >= 4 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    (port, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_black_holed_hosts_are_unreachable_at_the_deadline_while_others_succeed() {
    let env = env();
    let (hole, _holder) = black_hole();
    let mut config = config(&env.known_hosts_file, HostKeyPolicy::Strict);
    config.connect_timeout_secs = 3;
    let backend = SshBackend::new(config, LIMITS);
    let mut hosts =
        vec![host("hole", "127.0.0.1", Some(hole)), host("refused", &env.addresses[11], Some(env.closed_port))];
    hosts.extend(self::hosts(12..16));
    let (report, seen) = recording();
    let started = Instant::now();
    let results = backend.run(&hosts, &argv(&["uname", "-n"]), &report).await;
    let took = started.elapsed();
    let (hole, refused) = (&results[0], &results[1]);
    assert_eq!(hole.status, HostStatus::Unreachable, "{}", hole.stderr);
    assert!(hole.stderr.contains("within 3s"), "{}", hole.stderr);
    assert!((2900..8000).contains(&hole.duration_ms), "the deadline holds: {} ms", hole.duration_ms);
    assert_eq!(refused.status, HostStatus::Unreachable, "{}", refused.stderr);
    assert!(refused.stderr.contains("cannot connect"), "{}", refused.stderr);
    assert!(refused.duration_ms < 2000, "a refused port is known at once: {} ms", refused.duration_ms);
    for r in &results[2..] {
        assert_ok(r);
    }
    assert!(took < Duration::from_secs(10), "the call took {took:?}");
    assert_eq!(seen.lock().unwrap().last().map(String::as_str), Some("hole"), "the good hosts were reported first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_fails_under_strict_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let canary = format!("/tmp/omserver-ran-{}", unique());
    let backend = SshBackend::new(config(&known, HostKeyPolicy::Strict), LIMITS);
    let hosts = hosts(16..17);
    let r = &backend.run(&hosts, &argv(&["touch", &canary]), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    let host_pub = env().identity_file.with_file_name("host_ed25519.pub");
    for part in
        ["unknown", &format!("[{}]:2222", hosts[0].address), &fingerprint_of(&host_pub), "omserver hosts trust h16"]
    {
        assert!(r.stderr.contains(part), "{part:?} missing from {}", r.stderr);
    }
    assert!(!Path::new(&canary).exists(), "nothing ran");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), "", "strict records nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_fails_under_both_policies_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("other"), "ed25519", "");
    let other = std::fs::read_to_string(dir.path().join("other.pub")).unwrap();
    let hosts = hosts(17..18);
    let known = dir.path().join("known_hosts");
    let recorded = format!("[{}]:2222 {}", hosts[0].address, other.trim());
    std::fs::write(&known, format!("{recorded}\n")).unwrap();
    let canary = format!("/tmp/omserver-ran-{}", unique());
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let backend = SshBackend::new(config(&known, policy), LIMITS);
        let r = &backend.run(&hosts, &argv(&["touch", &canary]), &Report::discard()).await[0];
        assert_eq!(r.status, HostStatus::Failed, "{policy:?}: {}", r.stderr);
        for part in ["CHANGED", "man-in-the-middle", "line 1", "omserver hosts trust h17", "SHA256:"] {
            assert!(r.stderr.contains(part), "{policy:?}: {part:?} missing from {}", r.stderr);
        }
        assert!(!Path::new(&canary).exists(), "nothing ran under {policy:?}");
        assert_eq!(std::fs::read_to_string(&known).unwrap(), format!("{recorded}\n"), "the file is untouched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_unknown_keys_once_then_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let backend = SshBackend::new(config(&known, HostKeyPolicy::AcceptNew), LIMITS);
    let hosts = hosts(18..30);
    for r in backend.run(&hosts, &argv(&["true"]), &Report::discard()).await {
        assert_ok(&r);
    }
    let text = std::fs::read_to_string(&known).unwrap();
    let host_key = std::fs::read_to_string(env().identity_file.with_file_name("host_ed25519.pub")).unwrap();
    let key_part: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut want: Vec<String> = hosts.iter().map(|h| format!("[{}]:2222 {}", h.address, key_part.join(" "))).collect();
    want.sort();
    assert_eq!(lines, want, "one whole line per host, none garbled");
    // Recorded keys are now checked strictly, by us and by OpenSSH's own client.
    let strict = SshBackend::new(config(&known, HostKeyPolicy::Strict), LIMITS);
    assert_ok(&strict.run(&hosts[..1], &argv(&["true"]), &Report::discard()).await[0]);
    let env = env();
    let openssh = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(&env.identity_file)
        .args(["-p", "2222", &format!("root@{}", hosts[0].address), "true"])
        .output()
        .unwrap();
    assert!(openssh.status.success(), "OpenSSH accepts our file: {}", String::from_utf8_lossy(&openssh.stderr));
    drop(backend);
    let again = SshBackend::new(config(&known, HostKeyPolicy::AcceptNew), LIMITS);
    assert_ok(&again.run(&hosts[..3], &argv(&["true"]), &Report::discard()).await[0]);
    assert_eq!(std::fs::read_to_string(&known).unwrap(), text, "known keys are not recorded twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entries_are_understood() {
    let env = env();
    let backend = SshBackend::new(config(&env.known_hosts_hashed_file, HostKeyPolicy::Strict), LIMITS);
    for r in backend.run(&hosts(30..34), &argv(&["true"]), &Report::discard()).await {
        assert_ok(&r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_reused_across_calls_and_expire_when_idle() {
    let backend = SshBackend::with_idle_expiry(
        config(&env().known_hosts_file, HostKeyPolicy::Strict),
        LIMITS,
        Duration::from_secs(3),
    );
    let hosts = hosts(34..40);
    let cold_started = Instant::now();
    let first = connection_of(&backend, &hosts).await;
    let cold = cold_started.elapsed();
    let warm_started = Instant::now();
    let second = connection_of(&backend, &hosts).await;
    let warm = warm_started.elapsed();
    assert_eq!(first, second, "the same TCP connections (same client ports) carried the second call");
    eprintln!("6 hosts: cold {cold:?}, warm {warm:?}");
    // Many channels on one connection at once: the same host listed four times.
    let same = vec![hosts[0].clone(); 4];
    let parallel = connection_of(&backend, &same).await;
    assert!(parallel.iter().all(|c| *c == first[0]), "{parallel:?} vs {:?}", first[0]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let third = connection_of(&backend, &hosts).await;
    for (old, new) in first.iter().zip(&third) {
        assert_ne!(old.0, new.0, "an idle connection was closed and a new one opened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_that_died_while_idle_is_replaced() {
    let backend = backend();
    let hosts = hosts(40..41);
    let r = &backend.run(&hosts, &argv(&["sh", "-c", "echo $SSH_CONNECTION $PPID"]), &Report::discard()).await[0];
    assert_ok(r);
    let words: Vec<&str> = r.stdout.split_whitespace().collect();
    let (port, sshd_session) = (words[1].to_owned(), words[4].to_owned());
    // Kill the sshd process that serves our connection, as a restart or an idle timeout on the host would.
    assert!(Command::new("kill").args(["-9", &sshd_session]).status().unwrap().success());
    let after = connection_of(&backend, &hosts).await;
    assert_ne!(after[0].0, port, "a new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_places_exact_bytes_and_mode_through_a_temporary_name() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend(b"\xff\xfe not UTF-8 \xc3\x28 \0 NUL\n");
    let mut random = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut random).unwrap();
    data.extend(&random);
    std::fs::write(&source, &data).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let dest = remote_dir.path().join("it's $(odd) name.conf");
    std::fs::write(&dest, "old contents").unwrap();
    let dest_text = dest.to_str().unwrap();
    let results = backend().copy_file(&hosts(41..43), &source, dest_text, 0o640, &Report::discard()).await;
    for r in &results {
        assert_ok(r);
        assert_eq!(r.stdout, format!("copied {} bytes to {dest_text}\n", data.len()));
    }
    assert_eq!(std::fs::read(&dest).unwrap(), data, "exact bytes");
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o640);
    let left: Vec<_> = std::fs::read_dir(remote_dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    // A directory that does not exist: failed, with the shell's reason.
    let missing = remote_dir.path().join("no/such/dir/file");
    let r =
        &backend().copy_file(&hosts(41..42), &source, missing.to_str().unwrap(), 0o644, &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed);
    assert!(r.stderr.contains("could not install"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_call_kills_the_remote_command() {
    let duration = format!("6{}1", rand::random::<u16>() % 1000);
    let pattern = format!("sleep {duration}");
    let backend = backend();
    let hosts = hosts(43..45);
    let args = argv(&["sleep", &duration]);
    let report = Report::discard();
    tokio::select! {
        _ = backend.run(&hosts, &args, &report) => panic!("sleep {duration} ended on its own"),
        _ = eventually(Duration::from_secs(20), "the remote sleep", || pgrep(&pattern)) => {}
    }
    // The `run` future is dropped here, as a cancelled job drops it.
    eventually(Duration::from_secs(10), "no sleep left behind", || !pgrep(&pattern)).await;
    // The connection stays usable.
    assert_ok(&backend.run(&hosts, &argv(&["true"]), &Report::discard()).await[0]);
}

/// A job cancelled at any moment of its start (before exec, before the pid line, after) leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_call_at_any_moment_leaves_no_process() {
    let backend = backend();
    let hosts = hosts(52..53);
    assert_ok(&backend.run(&hosts, &argv(&["true"]), &Report::discard()).await[0]);
    let mut patterns = Vec::new();
    for delay_ms in [0u64, 5, 20, 50, 100, 200] {
        let duration = format!("7{}{delay_ms}", rand::random::<u16>() % 1000);
        let args = argv(&["sleep", &duration]);
        let report = Report::discard();
        let run = backend.run(&hosts, &args, &report);
        let _ = tokio::time::timeout(Duration::from_millis(delay_ms), run).await;
        patterns.push(format!("sleep {duration}"));
    }
    for pattern in &patterns {
        eventually(Duration::from_secs(15), &format!("no {pattern} left"), || !pgrep(pattern)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_outlives_its_timeout_fails_and_is_killed() {
    let duration = format!("6{}2", rand::random::<u16>() % 1000);
    let limits = Limits { command_timeout: Duration::from_secs(2), output_limit_bytes: 1000 };
    let backend = SshBackend::new(config(&env().known_hosts_file, HostKeyPolicy::Strict), limits);
    let started = Instant::now();
    let r = &backend.run(&hosts(45..46), &argv(&["sleep", &duration]), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed);
    assert!(r.stderr.starts_with("timed out after"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());
    eventually(Duration::from_secs(10), "the timed-out sleep killed", || !pgrep(&format!("sleep {duration}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_problems_are_clear_in_check_and_per_host() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    assert!(backend().check().await.unwrap().contains("ssh-ed25519"), "a healthy configuration passes");
    let hosts = hosts(46..47);
    // Missing identity file.
    let mut missing = config(&env.known_hosts_file, HostKeyPolicy::Strict);
    missing.identity_file = dir.path().join("no_such_key");
    let b = SshBackend::new(missing, LIMITS);
    let problem = b.check().await.unwrap_err();
    assert!(problem.contains("no_such_key"), "{problem}");
    let r = &b.run(&hosts, &argv(&["true"]), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed);
    assert!(r.stderr.contains("cannot read identity_file"), "{}", r.stderr);
    // An encrypted key.
    let encrypted = dir.path().join("encrypted");
    keygen(&encrypted, "ed25519", "a passphrase");
    let mut enc = config(&env.known_hosts_file, HostKeyPolicy::Strict);
    enc.identity_file = encrypted;
    let b = SshBackend::new(enc, LIMITS);
    assert!(b.check().await.unwrap_err().contains("encrypted"));
    let r = &b.run(&hosts, &argv(&["true"]), &Report::discard()).await[0];
    assert!(r.status == HostStatus::Failed && r.stderr.contains("encrypted"), "{}", r.stderr);
    // A key the host does not know: the host answered, so failed (not unreachable).
    let stranger = dir.path().join("stranger");
    keygen(&stranger, "ed25519", "");
    let mut rejected = config(&env.known_hosts_file, HostKeyPolicy::Strict);
    rejected.identity_file = stranger;
    let r = &SshBackend::new(rejected, LIMITS).run(&hosts, &argv(&["true"]), &Report::discard()).await[0];
    assert_eq!(r.status, HostStatus::Failed, "{}", r.stderr);
    assert!(r.stderr.contains("did not accept the key"), "{}", r.stderr);
    // A missing known-hosts file under strict.
    let b = SshBackend::new(config(&dir.path().join("nowhere"), HostKeyPolicy::Strict), LIMITS);
    assert!(b.check().await.unwrap_err().contains("nowhere"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presented_key_and_record_key_make_a_host_trusted() {
    let env = env();
    let address = &env.addresses[47];
    let presented = ssh::presented_key(address, env.port, Duration::from_secs(10)).await.unwrap();
    let host_pub = env.identity_file.with_file_name("host_ed25519.pub");
    assert_eq!(presented.fingerprint, fingerprint_of(&host_pub));
    assert_eq!(presented.algorithm, "ssh-ed25519");
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    ssh::record_key(&known, &presented.known_hosts_line).unwrap();
    let b = SshBackend::new(config(&known, HostKeyPolicy::Strict), LIMITS);
    assert_ok(&b.run(&[host("h47", address, None)], &argv(&["true"]), &Report::discard()).await[0]);
    let refused = ssh::presented_key(address, env.closed_port, Duration::from_secs(5)).await.unwrap_err();
    assert!(refused.to_string().contains("cannot connect"), "{refused}");
}

/// A throw-away sshd of this test's own, with RSA and ECDSA host keys and an RSA user key, on a free port.
struct OwnSshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnSshd {
    fn start() -> OwnSshd {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        keygen(&p("host_rsa"), "rsa", "");
        keygen(&p("host_ecdsa"), "ecdsa", "");
        keygen(&p("id_rsa"), "rsa", "");
        std::fs::copy(p("id_rsa.pub"), p("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nUseDNS no\nStrictModes no\nLogLevel INFO\n",
            p("host_rsa").display(),
            p("host_ecdsa").display(),
            p("sshd.pid").display(),
            p("authorized_keys").display()
        );
        std::fs::write(p("sshd.conf"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(p("sshd.conf"))
            .stderr(std::fs::File::create(p("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "own sshd did not start: {}",
                std::fs::read_to_string(p("sshd.log")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnSshd { child, port, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for OwnSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_identity_and_other_host_key_types() {
    let sshd = OwnSshd::start();
    let known = sshd.path("known_hosts");
    // Both host keys recorded, as `ssh-keyscan` would: several key types for one host.
    let mut lines = String::new();
    for name in ["host_rsa.pub", "host_ecdsa.pub"] {
        let key = std::fs::read_to_string(sshd.path(name)).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        lines.push_str(&format!("[127.0.0.1]:{} {}\n", sshd.port, key.join(" ")));
    }
    std::fs::write(&known, &lines).unwrap();
    let config = SshConfig {
        user: "root".into(),
        port: sshd.port,
        identity_file: sshd.path("id_rsa"),
        known_hosts_file: known.clone(),
        host_key_policy: HostKeyPolicy::Strict,
        connect_timeout_secs: 10,
        max_parallel: 10,
        ..SshConfig::default()
    };
    let backend = SshBackend::new(config, LIMITS);
    assert!(backend.check().await.unwrap().contains("ssh-rsa"));
    let r = &backend.run(&[host("own", "127.0.0.1", None)], &argv(&["echo", "rsa ok"]), &Report::discard()).await[0];
    assert_ok(r);
    assert_eq!(r.stdout, "rsa ok\n");
    let presented = ssh::presented_key("127.0.0.1", sshd.port, Duration::from_secs(10)).await.unwrap();
    let which = if presented.algorithm.contains("rsa") { "host_rsa.pub" } else { "host_ecdsa.pub" };
    assert_eq!(presented.fingerprint, fingerprint_of(&sshd.path(which)));
}

/// A real server with `[backends.ssh]` as its default, hosts added over the API with their own port.
#[test]
fn a_job_runs_through_the_server_on_ssh_hosts() {
    let env = env();
    let extra = format!(
        "auto_platform = \"ssh\"\n[backends.ssh]\nuser = \"root\"\nport = 22\nidentity_file = \"{}\"\n\
         known_hosts_file = \"{}\"\nconnect_timeout_secs = 5\n",
        env.identity_file.display(),
        env.known_hosts_file.display()
    );
    let server = common::Server::start_with(common::Options { extra_config: extra, ..Default::default() });
    let mut names = Vec::new();
    for (i, address) in env.addresses[48..51].iter().enumerate() {
        let name = format!("web{i}");
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": address, "port": env.port }));
        assert!(status.is_success(), "{body}");
        names.push(name);
    }
    let (status, body) =
        server.post("/api/hosts", &json!({ "name": "closed", "ip": env.addresses[51], "port": env.closed_port }));
    assert!(status.is_success(), "{body}");
    let (status, backends) = server.get("/api/backends");
    assert!(status.is_success(), "{backends}");
    let ssh_health = backends.as_array().unwrap().iter().find(|b| b["backend"] == "ssh").unwrap().clone();
    assert_eq!(ssh_health["ok"], true, "{ssh_health}");
    let mut targets: Vec<&str> = names.iter().map(String::as_str).collect();
    targets.push("closed");
    let job = server.run_job(1003, &targets, json!({}));
    let results = job["results"].as_array().unwrap_or_else(|| panic!("{job}"));
    let issue = std::fs::read_to_string("/etc/issue").unwrap();
    let first_line = issue.lines().next().unwrap_or_default();
    for name in &names {
        let r = results.iter().find(|r| r["host"] == name.as_str()).unwrap_or_else(|| panic!("{job}"));
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["stdout"].as_str().unwrap().trim_end(), first_line, "{r}");
    }
    let closed = results.iter().find(|r| r["host"] == "closed").unwrap();
    assert_eq!(closed["status"], "unreachable", "{closed}");
}

/// Informal figures for the benchmark: `uname -n` on 50 hosts, new connections, then pooled ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hosts_cold_then_warm() {
    let backend = backend();
    let hosts = hosts(0..50);
    let args = argv(&["uname", "-n"]);
    let started = Instant::now();
    let cold = backend.run(&hosts, &args, &Report::discard()).await;
    let cold_time = started.elapsed();
    let started = Instant::now();
    let warm = backend.run(&hosts, &args, &Report::discard()).await;
    let warm_time = started.elapsed();
    for r in cold.iter().chain(&warm) {
        assert_ok(r);
    }
    eprintln!("50 hosts uname -n: cold {cold_time:?}, warm {warm_time:?}");
    assert!(warm_time < cold_time, "pooled connections are faster: cold {cold_time:?}, warm {warm_time:?}");
}
