//! Module worker processes (issue 9): a module that crashes, hangs, loops or snoops costs one job, never the
//! server. The fixtures (`fx_fault`, `fx_ctor_crash`, `fx_snoop`) come from `cargo xtask fixtures`; every test runs
//! the real server binary, whose workers are the same binary (`omserver worker`).

mod common;

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{fixture, install, Options, Server};
use reqwest::{blocking::Client, StatusCode};
use serde_json::{json, Value};

fn loaded(e: Option<&Value>) -> bool {
    e.is_some_and(|e| e["status"] == "loaded")
}

fn rejected(e: Option<&Value>) -> bool {
    e.is_some_and(|e| e["status"] == "rejected")
}

fn with_fixture(server: &Server, name: &str, file: &str) {
    install(&fixture(name), &server.plugins_dir(), file);
    server.wait_for_module(file, Duration::from_secs(15), loaded);
}

/// One 1003 job's life as the stream saw it.
struct StreamJob {
    submitted: Instant,
    done: Instant,
    outcome: Result<(), String>,
}

/// 1003 jobs on 127.0.0.1, one after the other, from a thread of their own until stopped.
struct JobStream {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<StreamJob>>,
}

impl JobStream {
    fn start(server: &Server) -> JobStream {
        let (base, token) = (server.base.clone(), server.token.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let mut jobs = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let submitted = Instant::now();
                let outcome = one_stream_job(&client, &base, &token);
                jobs.push(StreamJob { submitted, done: Instant::now(), outcome });
            }
            jobs
        });
        JobStream { stop, thread }
    }

    fn finish(self) -> Vec<StreamJob> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the job stream's thread")
    }
}

fn one_stream_job(client: &Client, base: &str, token: &str) -> Result<(), String> {
    let body = json!({ "module": 1003, "hosts": ["127.0.0.1"] });
    let response = client.post(format!("{base}/api/jobs")).bearer_auth(token).json(&body).send();
    let response = response.map_err(|e| format!("submit: {e}"))?;
    if response.status() != StatusCode::ACCEPTED {
        return Err(format!("submit: {} {}", response.status(), response.text().unwrap_or_default()));
    }
    let id = response.json::<Value>().map_err(|e| e.to_string())?["id"].as_i64().ok_or("no id")?;
    let started = Instant::now();
    loop {
        let job: Value = client
            .get(format!("{base}/api/jobs/{id}"))
            .bearer_auth(token)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| format!("job {id}: {e}"))?;
        match job["status"].as_str() {
            Some("queued" | "running") if started.elapsed() < Duration::from_secs(60) => {}
            Some("succeeded") => return Ok(()),
            _ => return Err(format!("job {id}: {job}")),
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The sum of a metric's samples (all label sets) in GET /metrics.
fn metric(server: &Server, name: &str) -> f64 {
    let (status, body) = server.get("/metrics");
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.as_str().expect("metrics are text");
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_fault_fails_its_job_with_its_reason_while_other_jobs_succeed() {
    let mut server = Server::start();
    with_fixture(&server, "fx_fault", "Mid_9004.so");
    let pid = server.pid();
    let faults: &[(&str, &[&str])] = &[
        ("segfault", &["the module's worker crashed: killed by SIGSEGV (segmentation fault)"]),
        ("abort", &["killed by SIGABRT (aborted)"]),
        ("exit", &["the module's worker exited with code 3"]),
        ("stack_overflow", &["overflowed its stack"]),
        ("memory", &["memory limit", "module_memory_limit_mb"]),
        ("protocol", &["protocol error"]),
    ];
    let faults_before = metric(&server, "omserver_module_worker_faults_total");
    let stream = JobStream::start(&server);
    let mut problems = Vec::new();
    let mut spans = Vec::new();
    for (fault, reasons) in faults {
        let started = Instant::now();
        let job = server.run_job(9004, &["127.0.0.1"], json!({ "fault": fault }));
        spans.push((*fault, started, Instant::now()));
        let error = job["error"].as_str().unwrap_or_default();
        let row = &job["results"][0];
        if job["status"] != "failed" || !reasons.iter().all(|r| error.contains(r)) {
            problems.push(format!("{fault}: expected a failed job with {reasons:?}, got {job}"));
        } else if row["status"] != "failed" || !row["stderr"].as_str().unwrap_or_default().contains(error) {
            problems.push(format!("{fault}: the host row must be failed and carry the job's error: {job}"));
        }
        eprintln!("{fault}: {error} ({:?})", started.elapsed());
    }
    let stream = stream.finish();
    assert!(problems.is_empty(), "{}\nserver log:\n{}", problems.join("\n"), server.log());

    let failed: Vec<&String> = stream.iter().filter_map(|j| j.outcome.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {} stream jobs failed: {failed:?}", failed.len(), stream.len());
    // The stream ran beside every fault, not just before and after them.
    for (fault, from, to) in &spans {
        assert!(
            stream.iter().any(|j| j.submitted < *to && j.done > *from),
            "no 1003 job ran while the {fault} job did"
        );
    }
    eprintln!("{} stream jobs, all succeeded", stream.len());

    assert!(server.alive(), "the server died");
    assert_eq!(server.pid(), pid);
    assert_eq!(server.get("/healthz").0, StatusCode::OK);
    let faults_counted = metric(&server, "omserver_module_worker_faults_total") - faults_before;
    assert!(faults_counted >= faults.len() as f64, "omserver_module_worker_faults_total grew by {faults_counted}");
}

fn assert_rejected_for_crashing_on_load(server: &Server) {
    let entry = server.module_entry("Mid_9005.so").expect("listed");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains("crashed while loading") && error.contains("SIGSEGV"), "{entry}");
}

fn assert_serves(server: &mut Server) {
    let health = server.client.get(format!("{}/healthz", server.base)).send().expect("healthz answers");
    assert_eq!(health.status(), StatusCode::OK);
    let job = server.run_job(1003, &["127.0.0.1"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(server.alive());
}

#[test]
fn a_library_that_crashes_while_loading_is_rejected_at_start_and_the_server_serves() {
    let mut server = Server::start_with(Options {
        libraries: vec![(fixture("fx_ctor_crash"), "Mid_9005.so".into())],
        ..Options::default()
    });
    server.wait_for_module("Mid_9005.so", Duration::from_secs(15), rejected);
    assert_rejected_for_crashing_on_load(&server);
    assert_serves(&mut server);
}

#[test]
fn a_library_that_crashes_while_loading_is_rejected_when_dropped_in() {
    let mut server = Server::start();
    install(&fixture("fx_ctor_crash"), &server.plugins_dir(), "Mid_9005.so");
    server.wait_for_module("Mid_9005.so", Duration::from_secs(15), rejected);
    assert_rejected_for_crashing_on_load(&server);
    assert_serves(&mut server);
}

/// utime + stime (clock ticks) of `pid` and of every process descending from it, by pid.
fn cpu_ticks_of_tree(root: u32) -> HashMap<u32, u64> {
    let mut stats = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // After "pid (comm)": state ppid … with utime and stime the 12th and 13th fields (proc(5)).
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        stats.push((pid, number(1) as u32, number(11) + number(12)));
    }
    let mut tree = HashSet::from([root]);
    // Parents before children is not guaranteed by pid order: repeat until nothing joins.
    loop {
        let before = tree.len();
        for (pid, ppid, _) in &stats {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    stats.into_iter().filter(|(pid, _, _)| tree.contains(pid)).map(|(pid, _, ticks)| (pid, ticks)).collect()
}

/// CPU ticks each process of the server's tree used in 500 ms: (the server's own, each descendant's).
fn cpu_growth(server: &Server) -> (u64, Vec<(u32, u64)>) {
    let first = cpu_ticks_of_tree(server.pid());
    thread::sleep(Duration::from_millis(500));
    let second = cpu_ticks_of_tree(server.pid());
    let grew = |pid: &u32, ticks: &u64| ticks.saturating_sub(*first.get(pid).unwrap_or(ticks));
    let own = second.get(&server.pid()).map(|t| grew(&server.pid(), t)).unwrap_or(0);
    let descendants = second.iter().filter(|(pid, _)| **pid != server.pid()).map(|(p, t)| (*p, grew(p, t))).collect();
    (own, descendants)
}

#[test]
fn modules_that_ignore_cancellation_are_killed_and_free_their_slots() {
    let server = Server::start_with(Options {
        extra_config: "max_concurrent_jobs = 2\njob_timeout_secs = 2".into(),
        ..Options::default()
    });
    with_fixture(&server, "fx_fault", "Mid_9004.so");
    let spinning = [0, 1].map(|_| server.submit(9004, &["127.0.0.1"], json!({ "fault": "spin" })));

    // While they spin, the CPU they burn shows in the server's process tree: what is measured below can grow.
    thread::sleep(Duration::from_millis(600));
    let (own, descendants) = cpu_growth(&server);
    let burning: u64 = own + descendants.iter().map(|(_, t)| t).sum::<u64>();
    assert!(burning >= 20, "two spinning modules used only {burning} ticks in 500 ms: {descendants:?}");

    let mut done = [None, None];
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "the spinning jobs did not end in 20 s");
        for (i, id) in spinning.iter().enumerate() {
            if done[i].is_none() {
                let (_, job) = server.get(&format!("/api/jobs/{id}"));
                if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                    done[i] = Some((Instant::now(), job));
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    let [Some((first_done, first)), Some((second_done, second))] = done else { unreachable!("all done") };
    let last_done = first_done.max(second_done);
    for job in [&first, &second] {
        assert_eq!(
            (job["status"].as_str(), job["error"].as_str()),
            (Some("failed"), Some("timed out after 2s")),
            "{job}"
        );
    }

    // Their slots are free: a third job runs at once (submitted now, since queueing counts against its timeout).
    let third = server.run_job(1003, &["127.0.0.1"], json!({}));
    let after = last_done.elapsed();
    assert_eq!(third["status"], "succeeded", "{third}");
    assert!(after < Duration::from_millis(1500), "the third job finished {after:?} after the spinning ones");

    // Let whatever the finished jobs set in motion (reaping, a worker returning to the pool) settle first.
    thread::sleep(Duration::from_millis(500));
    let (own, descendants) = cpu_growth(&server);
    assert!(descendants.iter().all(|(_, ticks)| *ticks == 0), "descendants still burn CPU: {descendants:?}");
    assert!(own < 20, "the server itself used {own} ticks in 500 ms while idle");
}

/// `nobody` must be able to execute the worker: a copy of the binary in a fresh world-readable directory.
fn worker_program_for_nobody() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("omserver-worker-").tempdir_in("/tmp").unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let program = dir.path().join("omserver");
    fs::copy(env!("CARGO_BIN_EXE_omserver"), &program).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn snoop(server: &Server, params: Value) -> Value {
    let job = server.run_job(9006, &["127.0.0.1"], params);
    assert_eq!(job["results"].as_array().map(Vec::len), Some(1), "{job}");
    job
}

/// Variables the server has and its workers must not.
fn canaries() -> Vec<(String, String)> {
    vec![("OMSERVER_CANARY".into(), "1".into()), ("SECRET_CANARY".into(), "1".into())]
}

fn assert_empty_environment(server: &Server) {
    let job = snoop(server, json!({ "what": "env" }));
    assert_eq!(job["status"], "succeeded", "{job}");
    let names = job["results"][0]["stdout"].as_str().unwrap_or_default();
    assert!(!names.contains("OMSERVER_") && !names.contains("SECRET"), "the worker's environment: {names}");
    assert_eq!(names.trim(), "", "the worker's environment must be empty");
}

#[test]
fn a_worker_as_module_user_cannot_read_the_database_secret_key_or_configuration() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root: module_user makes the server start workers as nobody"
    );
    let worker_dir = worker_program_for_nobody();
    let mut server = Server::start_with(Options {
        extra_config: format!(
            "module_user = \"nobody\"\nmodule_worker_program = \"{}\"",
            worker_dir.path().join("omserver").display()
        ),
        env: canaries(),
        ..Options::default()
    });
    with_fixture(&server, "fx_snoop", "Mid_9006.so");

    let dir = server.dir.path().to_path_buf();
    // The server's directory is left as tempfile makes it (0755), so what protects the database is the server's
    // own file mode. The configuration is the operator's file: the harness writes it 0600 (with module_user the
    // server refuses one that others can read).
    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_ne!(
        dir_mode & 0o001,
        0,
        "the server's directory must be searchable by others for this test to mean anything"
    );
    for path in [dir.join("omserver.db"), dir.join("state").join("secret_key"), dir.join("omserver.toml")] {
        assert!(path.exists(), "{} must exist for this test to mean anything", path.display());
        let job = snoop(&server, json!({ "what": "file", "path": path }));
        let row = &job["results"][0];
        let stderr = row["stderr"].as_str().unwrap_or_default();
        assert!(row["status"] == "failed" && stderr.contains("Permission denied"), "{}: {job}", path.display());
    }
    // The control: the fixture does read what nobody may read.
    let job = snoop(&server, json!({ "what": "file", "path": "/etc/passwd" }));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["results"][0]["stdout"].as_str().unwrap_or_default().starts_with("read "), "{job}");

    assert_empty_environment(&server);
    assert!(server.alive());
}

/// Inodes of every TCP socket in this network namespace (listening ones included).
fn tcp_socket_inodes() -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
        inodes.extend(text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(9).map(str::to_owned)));
    }
    inodes
}

fn socket_inode(target: &str) -> Option<&str> {
    target.strip_prefix("socket:[")?.strip_suffix(']')
}

/// Each open descriptor of `pid` and what it refers to.
fn descriptors_of(pid: u32) -> Vec<(u32, String)> {
    let entries = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().map_while(Result::ok);
    let mut fds: Vec<(u32, String)> = entries
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            Some((fd, fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn a_worker_holds_no_database_file_and_no_listening_socket() {
    let server = Server::start_with(Options { env: canaries(), ..Options::default() });
    with_fixture(&server, "fx_snoop", "Mid_9006.so");
    let dir = server.dir.path();
    let tcp = tcp_socket_inodes();

    // The controls: the server itself holds both kinds, so the checks below can see them.
    let own = descriptors_of(server.pid());
    assert!(own.iter().any(|(_, t)| Path::new(t).starts_with(dir)), "the server holds nothing under its dir: {own:?}");
    assert!(own.iter().any(|(_, t)| socket_inode(t).is_some_and(|i| tcp.contains(i))), "no TCP socket: {own:?}");

    let job = snoop(&server, json!({ "what": "fds" }));
    assert_eq!(job["status"], "succeeded", "{job}");
    let listing = job["results"][0]["stdout"].as_str().unwrap_or_default().to_owned();
    let tcp = tcp_socket_inodes();
    let log = dir.join("server.log");
    let mut sockets = 0;
    for line in listing.lines() {
        let (fd, target) = line.split_once(" -> ").unwrap_or_else(|| panic!("not `fd -> target`: {line}"));
        let fd: u32 = fd.parse().unwrap();
        // The test harness gave the server `server.log` as stderr; the worker's stderr may be the same file.
        let harness_log = fd <= 2 && Path::new(target) == log;
        assert!(harness_log || !Path::new(target).starts_with(dir), "fd {line} is the server's:\n{listing}");
        if let Some(inode) = socket_inode(target) {
            assert!(!tcp.contains(inode), "fd {line} is a TCP socket:\n{listing}");
            sockets += u32::from(fd > 2);
        }
    }
    assert!(sockets >= 1, "no protocol socket among the worker's descriptors:\n{listing}");
    eprintln!("the worker's descriptors:\n{listing}");

    assert_empty_environment(&server);
}
