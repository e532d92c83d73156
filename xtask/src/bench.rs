//! The benchmark commands (`bench-*`, `soak`): each builds what it measures in release and runs an example of
//! `host/examples/` (or `agent/examples/`); BENCHMARKS.md has their figures.

use std::{fs, path::Path, process::Command};

use super::{cargo, fixtures, install_plugins, root, run, target_dir, testenv, Result};

/// chromedriver as the test environment's chromium piece runs it, and Debian's Chromium.
const CHROMEDRIVER: &str = "http://127.0.0.1:9515";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Builds the release `omserver` and module 1003, then runs the release example `name` with the server binary,
/// the module library, `more`, then the command's own `args`.
fn release_example(name: &str, more: &[&str], args: &[String]) -> Result {
    let plugins = target_dir().join("plugins-release");
    install_plugins(true, &plugins)?;
    run(cargo().args(["build", "--release", "--quiet", "-p", "omserver", "--bin", "omserver"]))?;
    let fixed = [target_dir().join("release/omserver"), plugins.join("Mid_1003.so")];
    run(cargo()
        .args(["run", "--release", "--quiet", "-p", "omserver", "--example", name, "--"])
        .args(fixed)
        .args(more)
        .args(args))
}

pub fn bench_plugins(args: &[String]) -> Result {
    install_plugins(true, &target_dir().join("plugins-release"))?;
    // The example runs the server in its own process; its module workers are the release `omserver` binary.
    run(cargo().args(["build", "--release", "--quiet", "-p", "omserver", "--bin", "omserver"]))?;
    run(cargo().args(["run", "--release", "--quiet", "-p", "omserver", "--example", "plugin_reload", "--"]).args(args))
}

/// `bench-console [EVENTS] [RATE] [JOBS]`: audit event and job result → visible in headless Chromium (see
/// host/examples/console_bench.rs). Starts chromedriver through the test environment.
pub fn bench_console(args: &[String]) -> Result {
    testenv(&["up".into(), "chromium".into()])?;
    release_example("console_bench", &[CHROMEDRIVER, CHROMIUM], args)
}

/// `bench-home [JOBS] [EVENTS] [ROUNDS] [sqlite|postgres]`: the home page and `/jobs` over a large history (see
/// host/examples/home_bench.rs). Starts chromedriver through the test environment.
pub fn bench_home(args: &[String]) -> Result {
    testenv(&["up".into(), "chromium".into()])?;
    release_example("home_bench", &[CHROMEDRIVER, CHROMIUM], args)
}

/// `bench-grants [HOSTS] [EVENTS] [ROUNDS]`: what grants cost a caller (see host/examples/grants_bench.rs).
pub fn bench_grants(args: &[String]) -> Result {
    release_example("grants_bench", &[], args)
}

/// `bench-cluster [SECONDS] [JOBS] [ROUNDS]`: host/examples/cluster_bench.rs, release build, haproxy installed.
pub fn bench_cluster(args: &[String]) -> Result {
    testenv(&["up".into(), "haproxy".into()])?;
    release_example("cluster_bench", &["/usr/sbin/haproxy"], args)
}

/// `bench-search [EVENTS] [ROUNDS] [sqlite|postgres|mariadb|both] [keep]`: audit search over a large history and
/// what the command index costs ingest (see host/examples/search_bench.rs).
pub fn bench_search(args: &[String]) -> Result {
    let plugins = target_dir().join("plugins-release");
    install_plugins(true, &plugins)?;
    run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "omserver",
        "--bin",
        "omserver",
        "--example",
        "search_bench",
    ]))?;
    let fixed = [target_dir().join("release/omserver"), plugins.join("Mid_1003.so")];
    run(Command::new(target_dir().join("release/examples/search_bench")).args(fixed).args(args))
}

/// Builds the release `omserver` and module 1003 of `--base REV` and of this tree, then runs the example
/// `worker_bench` on both. The base is built in its own worktree and target directory (`target/bench-base`) so
/// neither build disturbs the other's artefacts; a second run only rebuilds what changed.
pub fn bench_workers(args: &[String]) -> Result {
    let mut base = None;
    let mut jobs = "300".to_owned();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--base" => base = Some(rest.next().ok_or("--base needs a revision")?.clone()),
            n if n.parse::<u32>().is_ok() => jobs = n.to_owned(),
            other => return Err(format!("bench-workers: unexpected argument {other:?} (usage: [--base REV] [JOBS])")),
        }
    }
    let base = match base {
        Some(rev) => git_output(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])?,
        None => before_workers()?,
    };
    let base_tree = target_dir().join("bench-base");
    if base_tree.join(".git").exists() {
        run(Command::new("git").arg("-C").arg(&base_tree).args(["checkout", "--quiet", "--detach", &base]))?;
    } else {
        run(Command::new("git").current_dir(root()).args(["worktree", "add", "--detach"]).arg(&base_tree).arg(&base))?;
    }
    let base_target = base_tree.join("target");
    // Two invocations: `--bin omserver` would also filter mid_1003's targets (its library) away.
    let release_build = |tree: &Path, target: &Path| -> Result {
        for args in [&["-p", "omserver", "--bin", "omserver"][..], &["-p", "mid_1003"]] {
            let mut cmd = cargo();
            cmd.current_dir(tree).env("CARGO_TARGET_DIR", target).args(["build", "--release", "--quiet"]).args(args);
            run(&mut cmd)?;
        }
        Ok(())
    };
    eprintln!("xtask: building the base ({base}) in {}", base_tree.display());
    release_build(&base_tree, &base_target)?;
    eprintln!("xtask: building this tree");
    release_build(&root(), &target_dir())?;
    let (base_release, head_release) = (base_target.join("release"), target_dir().join("release"));
    run(cargo().args(["run", "--release", "--quiet", "-p", "omserver", "--example", "worker_bench", "--"]).args([
        base_release.join("omserver").display().to_string(),
        base_release.join("libmid_1003.so").display().to_string(),
        head_release.join("omserver").display().to_string(),
        head_release.join("libmid_1003.so").display().to_string(),
        jobs,
    ]))
}

/// The newest commit on main's first-parent line older than every commit whose subject starts with `workers:`.
fn before_workers() -> Result<String> {
    let log = git_output(&["log", "--first-parent", "--format=%H %s", "main"])?;
    let commits: Vec<(&str, &str)> = log.lines().filter_map(|l| l.split_once(' ')).collect();
    let oldest = commits
        .iter()
        .rposition(|(_, subject)| subject.starts_with("workers:"))
        .ok_or("no `workers:` commit on main: pass --base REV")?;
    commits.get(oldest + 1).map(|(hash, _)| (*hash).to_owned()).ok_or_else(|| "main begins with workers:".into())
}

fn git_output(args: &[&str]) -> Result<String> {
    let out = Command::new("git").current_dir(root()).args(args).output().map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        return Err(format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The legacy ingest figures come from `wrk` (Debian's package), the rest from the example's own clients.
pub fn bench_backends(args: &[String]) -> Result {
    testenv(&["up".into()])?;
    run(cargo().args(["run", "--release", "--quiet", "-p", "omserver", "--example", "backends_bench", "--"]).args(args))
}

/// `bench-schedules [FIRES] [ROUNDS]`: see host/examples/schedule_bench.rs. Starts the test environment (ssh).
pub fn bench_schedules(args: &[String]) -> Result {
    testenv(&["up".into()])?;
    let env = target_dir().join("testenv/env.json").display().to_string();
    release_example("schedule_bench", &[&env], args)
}

/// `soak [MINUTES]`: every backend, agents, streams and module reloads at once, the server's resources every
/// minute (see host/examples/soak.rs). Starts the test environment and leaves it running.
pub fn soak(args: &[String]) -> Result {
    testenv(&["up".into()])?;
    let plugins = target_dir().join("plugins-release");
    install_plugins(true, &plugins)?;
    fixtures()?;
    // The server and the example in one build: built apart, cargo unifies their features differently and each
    // build recompiles the library.
    run(cargo().args(["build", "--release", "--quiet", "-p", "omserver", "--bin", "omserver", "--example", "soak"]))?;
    run(cargo().args(["build", "--release", "--quiet", "-p", "omaudit-agent"]))?;
    let release = target_dir().join("release");
    let fixed = [
        release.join("omserver"),
        plugins.join("Mid_1003.so"),
        target_dir().join("fixtures/fx_echo_v1.so"),
        target_dir().join("fixtures/fx_echo_v2.so"),
        release.join("omaudit-agent"),
        target_dir().join("testenv/env.json"),
    ];
    run(Command::new(release.join("examples").join("soak")).args(&fixed).args(args))
}

/// `bench-notify [SECONDS] [ROUNDS]`: audit ingest with and without alert notifications (see
/// host/examples/notify_bench.rs).
pub fn bench_notify(args: &[String]) -> Result {
    release_example("notify_bench", &[], args)
}

pub fn bench_audit(args: &[String]) -> Result {
    let have_wrk = Command::new("wrk").arg("--version").output().is_ok();
    if !have_wrk {
        eprintln!("xtask: wrk is not installed; installing Debian's package");
        run(Command::new("apt-get").args(["install", "-y", "wrk"]))?;
    }
    run(cargo().args(["run", "--release", "--quiet", "-p", "omserver", "--example", "audit_ingest", "--"]).args(args))
}

/// `bench-exec [N] [ROUNDS]`: agent/examples/exec_bench.rs, release build.
pub fn bench_exec(args: &[String]) -> Result {
    if !Path::new("/usr/sbin/auditd").exists() {
        eprintln!("xtask: auditd is not installed; installing Debian's package (its service is not started)");
        // policy-rc.d answering 101 keeps the package's scripts from starting the daemon.
        let policy = Path::new("/usr/sbin/policy-rc.d");
        let had_policy = policy.exists();
        if !had_policy {
            fs::write(policy, "#!/bin/sh\nexit 101\n").map_err(|e| format!("write {}: {e}", policy.display()))?;
            run(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
        }
        let installed =
            run(Command::new("apt-get").args(["install", "-y", "auditd"]).env("DEBIAN_FRONTEND", "noninteractive"));
        if !had_policy {
            let _ = fs::remove_file(policy);
        }
        installed?;
    }
    run(cargo().args(["build", "--release", "--quiet", "-p", "omaudit-agent", "--bins", "--examples"]))?;
    run(Command::new(target_dir().join("release").join("examples").join("exec_bench")).args(args))
}
