//! `cargo xtask <command>`: the project's chores, in Rust so they run wherever cargo does.
//!
//! - `serve [ARGS…]`: build the seven seed modules, install them into plugins.d, run `omserver serve ARGS…`.
//! - `test [ARGS…]`: prepare everything the test suite talks to (databases, module and fixture libraries, the
//!   backends' test environment), then `cargo test --workspace ARGS…`, then stop the test environment again, also
//!   when tests fail. This is the one command CI runs after fmt and clippy.
//! - `testenv up|down|status [PIECE…]`: the backends' test environment (sshd, ansible-core and salt in `.venv`,
//!   salt-master/minions/salt-api, the Func stand-in), run by `testenv/testenv.sh`; see `testenv/README.md`.
//! - `install-plugins [--release] [--dir DIR]`: build the seed modules and install them as `Mid_<ID>.so`.
//! - `fixtures`: build the test-only module fixtures into `target/fixtures/`.
//! - `bench-plugins [ARGS…]`: the plugin reload benchmark (see BENCHMARKS.md).
//! - `bench-workers [--base REV] [JOBS]`: job latency of module 1003 on the local backend, before and after module
//!   workers, in one run: builds the release server of REV (default: the newest commit on main before the first
//!   `workers:` commit) in a git worktree under `target/bench-base` and of the current tree, starts both and
//!   alternates JOBS (default 300) jobs between them (see BENCHMARKS.md).
//! - `bench-audit [ARGS…]`: the audit ingest benchmarks (see BENCHMARKS.md); installs Debian's `wrk` when missing.
//! - `bench-console [EVENTS] [RATE] [JOBS]`: audit event and job result → visible in the console (BENCHMARKS.md).
//! - `bench-backends [ROUNDS]`: `uname -n` on 50 loopback hosts through each backend and the tools' own clients
//!   (see BENCHMARKS.md); starts the test environment first and leaves it running (`testenv down` stops it).
//! - `bench-home [JOBS] [EVENTS] [ROUNDS] [sqlite|postgres]`: the home page and `/jobs` over a large history,
//!   server time and Chromium (BENCHMARKS.md).
//! - `bench-notify [SECONDS] [ROUNDS]`: audit ingest with and without an alert subscription (BENCHMARKS.md).
//! - `bench-schedules [FIRES] [ROUNDS]`: schedule fire lag, and a rolling job with one batch of all 50 ssh hosts
//!   against the same job without a rollout, through the API of the release server (see BENCHMARKS.md).
//!
//! - `bench-exec [N] [ROUNDS]`: the cost of kernel exec auditing to the audited processes: N `/bin/true` execs
//!   with no rule, with the rule and no reader, with auditd, with `omaudit-agent watch` (root; see BENCHMARKS.md).
//!   Installs Debian's `auditd` when missing, without starting its service.
//! - `bench-grants [HOSTS] [EVENTS] [ROUNDS] [BATCH]`: job submission and audit queries as an unscoped admin and as an
//!   operator holding 20 grants, alternating, through the release server's API (BENCHMARKS.md).
//! - `bench-search [EVENTS] [ROUNDS] [sqlite|postgres|mariadb|both] [keep]`: audit search over a large history
//!   (p50/p95 per query), batch ingest with and without the command index, and an archive pass (BENCHMARKS.md).
//!   `keep` fills once, keeps the database and reuses it for the queries alone.
//! - `bench-cluster [SECONDS] [JOBS] [ROUNDS]`: audit ingest and job throughput through one server and through three
//!   behind haproxy, on one PostgreSQL (BENCHMARKS.md); installs haproxy through the test environment's piece.
//!
//! - `soak [MINUTES]`: jobs on every backend, agent ingest, console streams and module reloads together for MINUTES
//!   (default 60), printing the server's RSS, descriptors, threads, database size and errors every minute.
//! - `fuzz [TARGET] [SECONDS]`: each fuzz target in `fuzz/` (or one) for SECONDS (default 60) with cargo fuzz on
//!   nightly, installing cargo-fuzz when missing; prints executions and coverage per target and fails on a crash
//!   (see FUZZING.md). `test` runs every target for 15 s after the tests.
//!
//! - `contract [EXAMPLES] [SEED]`: schemathesis against the API as each kind of caller (`host/tests/contract.rs`),
//!   with EXAMPLES per operation (the suite uses 10) and SEED (the suite's is fixed); brings up the venv piece.
//!
//! No dependencies: it must build in seconds on a fresh clone.

use std::{
    env, fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    thread,
    time::{Duration, Instant},
};

mod bench;

const SEED_MODULES: &[u32] = &[1001, 1002, 1003, 1004, 1005, 1006, 1007];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest.to_vec()),
        None => ("help", Vec::new()),
    };
    let outcome = match command {
        "serve" => serve(&rest),
        "test" => test(&rest),
        "testenv" => testenv(&rest),
        "install-plugins" => install_plugins_cmd(&rest),
        "fixtures" => fixtures(),
        "bench-plugins" => bench::bench_plugins(&rest),
        "bench-workers" => bench::bench_workers(&rest),
        "bench-audit" => bench::bench_audit(&rest),
        "bench-backends" => bench::bench_backends(&rest),
        "bench-console" => bench::bench_console(&rest),
        "bench-schedules" => bench::bench_schedules(&rest),
        "bench-notify" => bench::bench_notify(&rest),
        "bench-home" => bench::bench_home(&rest),
        "bench-search" => bench::bench_search(&rest),
        "bench-grants" => bench::bench_grants(&rest),
        "bench-cluster" => bench::bench_cluster(&rest),
        "bench-exec" => bench::bench_exec(&rest),
        "fuzz" => fuzz(&rest),
        "soak" => bench::soak(&rest),
        "contract" => contract(&rest),
        _ => {
            eprintln!(
                "usage: cargo xtask serve|test|testenv|install-plugins|fixtures|bench-plugins|bench-workers|bench-audit|\
                 bench-backends|bench-console|bench-schedules|bench-notify|bench-home|bench-search|bench-grants|bench-cluster|bench-exec|\
                 fuzz|soak|\
                 contract [ARGS…]"
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result {
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

/// Copies `from` to `dir/name` through a temporary name and a rename, as every deployer to plugins.d must.
fn install(from: &Path, dir: &Path, name: &str) -> Result {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::copy(from, &tmp).map_err(|e| format!("copy {} → {}: {e}", from.display(), tmp.display()))?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| format!("rename into {}: {e}", dir.display()))
}

fn build_seed_modules(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.arg("build");
    if release {
        cmd.arg("--release");
    }
    for id in SEED_MODULES {
        cmd.args(["-p", &format!("mid_{id}")]);
    }
    run(&mut cmd)?;
    Ok(target_dir().join(if release { "release" } else { "debug" }))
}

fn install_plugins(release: bool, dir: &Path) -> Result {
    let built = build_seed_modules(release)?;
    for id in SEED_MODULES {
        install(&built.join(format!("libmid_{id}.so")), dir, &format!("Mid_{id}.so"))?;
    }
    println!("installed {} modules into {}", SEED_MODULES.len(), dir.display());
    Ok(())
}

fn install_plugins_cmd(args: &[String]) -> Result {
    let release = args.iter().any(|a| a == "--release");
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("plugins.d"));
    install_plugins(release, &dir)
}

fn serve(args: &[String]) -> Result {
    install_plugins(false, &root().join("plugins.d"))?;
    run(cargo().args(["run", "--quiet", "-p", "omserver", "--", "serve"]).args(args))
}

/// Builds each fixture and copies it to `target/fixtures/<name>.so` (fx_echo twice: 1.0.0 and 2.0.0).
fn fixtures() -> Result {
    let out = target_dir().join("fixtures");
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let debug = target_dir().join("debug");
    let builds: &[(&str, &[&str], &str)] = &[
        ("fx_echo", &[], "fx_echo_v1"),
        ("fx_echo", &["--features", "v2"], "fx_echo_v2"),
        ("fx_panic", &[], "fx_panic"),
        ("fx_hang", &[], "fx_hang"),
        ("fx_old_api", &[], "fx_old_api"),
        ("fx_sleep", &[], "fx_sleep"),
        ("fx_fault", &[], "fx_fault"),
        ("fx_ctor_crash", &[], "fx_ctor_crash"),
        ("fx_snoop", &[], "fx_snoop"),
        ("fx_markup", &[], "fx_markup"),
        ("fx_roll", &[], "fx_roll"),
    ];
    for (package, extra, name) in builds {
        run(cargo().args(["build", "--quiet", "-p", package]).args(*extra))?;
        install(&debug.join(format!("lib{package}.so")), &out, &format!("{name}.so"))?;
    }
    println!("fixtures in {}", out.display());
    Ok(())
}

fn test(args: &[String]) -> Result {
    let started = Instant::now();
    ensure_databases()?;
    install_plugins(false, &target_dir().join("plugins"))?;
    fixtures()?;
    // The audit tests run the agent binary itself; build it explicitly rather than rely on test ordering.
    run(cargo().args(["build", "--quiet", "-p", "omaudit-agent"]))?;
    if let Err(e) = testenv(&["up".into()]) {
        // Stop whatever part of it did come up before reporting.
        let _ = testenv(&["down".into()]);
        return Err(e);
    }
    let tested = run(cargo().args(["test", "--workspace"]).args(args));
    // The environment is stopped whatever the tests did; their outcome is the command's outcome.
    let stopped = testenv(&["down".into()]);
    if let (Err(_), Err(e)) = (&tested, &stopped) {
        eprintln!("xtask: {e}");
    }
    tested?;
    stopped?;
    // Every parser's fuzz target for a short while (FUZZING.md).
    fuzz_targets(FUZZ_TARGETS, CI_FUZZ_SECONDS)?;
    println!("xtask test: done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `cargo xtask contract [EXAMPLES] [SEED]`: the contract test, longer or with another seed.
fn contract(args: &[String]) -> Result {
    let mut test = cargo();
    test.args(["test", "-p", "omserver", "--test", "contract", "--", "--nocapture"]);
    if let Some(examples) = args.first() {
        examples.parse::<u32>().map_err(|_| format!("EXAMPLES must be a number, not {examples:?}"))?;
        test.env("OMSERVER_ST_EXAMPLES", examples);
    }
    if let Some(seed) = args.get(1) {
        test.env("OMSERVER_ST_SEED", seed);
    }
    install_plugins(false, &target_dir().join("plugins"))?;
    testenv(&["up".into(), "venv".into()])?;
    run(&mut test)
}

/// `testenv/testenv.sh up|down|status [PIECE…]`, with its runtime directory in this target directory (where the
/// tests look for `testenv/env.json`).
fn testenv(args: &[String]) -> Result {
    let script = root().join("testenv").join("testenv.sh");
    run(Command::new("bash").arg(script).args(args).env("OMSERVER_TESTENV_DIR", target_dir().join("testenv")))
}

/// PostgreSQL and MariaDB run on this kind of machine before a session; start whichever is down (the storage
/// tests run against both and fail, not skip, without them).
fn ensure_databases() -> Result {
    let services: &[(&str, u16, &str)] = &[
        ("PostgreSQL", 5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
        ("MariaDB", 3306, "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"),
    ];
    for (name, port, start) in services {
        if listening(*port) {
            continue;
        }
        eprintln!("xtask: {name} is not listening on 127.0.0.1:{port}; starting it");
        run(Command::new("sh").args(["-c", start]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening(*port) {
            if Instant::now() > deadline {
                return Err(format!("{name} did not start listening on 127.0.0.1:{port}"));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500)).is_ok()
}

// ---- fuzzing (FUZZING.md) ----

/// The fuzz targets, one per parser, as `fuzz/Cargo.toml` declares them.
const FUZZ_TARGETS: &[&str] = &[
    "legacy_query",
    "agent_batch",
    "known_hosts",
    "xmlrpc",
    "salt_events",
    "ansible_lines",
    "inventory_csv",
    "inventory_ini",
    "worker_frames",
    "form_body",
    "cron",
    "kernel_records",
    "notify_message",
];

/// Seconds per target in `cargo xtask test`: enough to replay the seeds and every fixed crash's input (kept in
/// the seed corpus) and to explore a little, short enough that the thirteen fit in about four minutes.
const CI_FUZZ_SECONDS: u64 = 15;

/// `cargo xtask fuzz [TARGET] [SECONDS]`: each target (or one) for SECONDS (default 60), one after the other.
fn fuzz(args: &[String]) -> Result {
    let mut targets: Vec<&str> = FUZZ_TARGETS.to_vec();
    let mut seconds = 60;
    for arg in args {
        if let Ok(n) = arg.parse() {
            seconds = n;
        } else if FUZZ_TARGETS.contains(&arg.as_str()) {
            targets = vec![arg.as_str()];
        } else {
            return Err(format!("unknown fuzz target {arg:?} (known: {})", FUZZ_TARGETS.join(", ")));
        }
    }
    fuzz_targets(&targets, seconds)
}

/// One target's run, from libFuzzer's final statistics.
struct FuzzRun {
    target: String,
    execs: u64,
    cov: u64,
    ft: u64,
    seconds: f64,
    crashed: bool,
}

/// Builds the fuzz crate once (nightly, AddressSanitizer), then runs each target with a scratch corpus that starts
/// from the committed seeds, so the seeds stay as committed. Fails if any target found a crash, a leak, a timeout
/// or ran out of memory; its input is then in `fuzz/artifacts/TARGET/`.
fn fuzz_targets(targets: &[&str], seconds: u64) -> Result {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("fuzz");
    let started = Instant::now();
    run(cargo_fuzz().args(["build"]).args(if targets.len() == 1 { targets } else { &[] }))?;
    println!("xtask fuzz: built in {:.0}s", started.elapsed().as_secs_f64());
    let mut runs = Vec::new();
    for target in targets {
        let scratch = fuzz_dir.join("target").join("corpus").join(target);
        let logs = fuzz_dir.join("target").join("logs");
        fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let log_path = logs.join(format!("{target}.log"));
        let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let begun = Instant::now();
        // One worker: the machine is shared (and CI has two cores).
        let status = cargo_fuzz()
            .args(["run", target])
            .arg(&scratch)
            .arg(&seeds)
            .args(["--", "-print_final_stats=1", "-rss_limit_mb=2048", "-malloc_limit_mb=2048", "-timeout=10"])
            .arg("-max_len=8192")
            .arg(format!("-max_total_time={seconds}"))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let stat = |name: &str| -> u64 {
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.trim().strip_prefix(':')?.trim().parse().ok())
                .next_back()
                .unwrap_or(0)
        };
        // The last progress line (`#N DONE cov: C ft: F …`) has the coverage reached.
        let progress = |key: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with('#'))
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    words.find(|w| *w == key)?;
                    words.next()?.parse().ok()
                })
                .next_back()
                .unwrap_or(0)
        };
        let run = FuzzRun {
            target: target.to_string(),
            execs: stat("stat::number_of_executed_units"),
            cov: progress("cov:"),
            ft: progress("ft:"),
            seconds: begun.elapsed().as_secs_f64(),
            crashed: !status.success(),
        };
        if run.crashed {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            eprintln!("xtask fuzz: {target} FAILED (log: {})", log_path.display());
        }
        println!(
            "xtask fuzz: {:<15} {:>12} execs  cov {:>6}  ft {:>7}  {:>5.0}s  {}",
            run.target,
            run.execs,
            run.cov,
            run.ft,
            run.seconds,
            if run.crashed { "CRASH" } else { "ok" }
        );
        runs.push(run);
    }
    let crashed: Vec<&str> = runs.iter().filter(|r| r.crashed).map(|r| r.target.as_str()).collect();
    println!("xtask fuzz: {} target(s) in {:.0}s", runs.len(), started.elapsed().as_secs_f64());
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzzing found a failure in {} (inputs in fuzz/artifacts/)", crashed.join(", ")))
    }
}

/// `cargo +nightly fuzz …` in `fuzz/`'s parent (cargo fuzz finds the crate there).
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    // The toolchain is chosen by rustup's `+nightly`; a CARGO inherited from `cargo xtask` would pin stable. The
    // `CARGO_*` variables cargo sets for xtask itself (`CARGO_PKG_NAME`, `CARGO_PRIMARY_PACKAGE`…) are dropped
    // too: a dependency that reads one at compile time would see it change and be rebuilt.
    cmd.env_remove("CARGO").env_remove("RUSTC").env_remove("RUSTDOC").env_remove("RUSTUP_TOOLCHAIN");
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(root()).args(["+nightly", "fuzz"]);
    cmd
}

fn ensure_cargo_fuzz() -> Result {
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("xtask fuzz: installing cargo-fuzz");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}
