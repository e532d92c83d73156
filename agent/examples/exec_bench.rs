//! What kernel exec auditing costs the processes being audited: the time of N `/bin/true` execs (spawn and wait,
//! one after the other, from a process with a login uid) in four set-ups, one run:
//!
//! 1. `no rule`: the agent's execve rule not loaded;
//! 2. `rule, no reader`: the rule loaded, nobody reading (the kernel drops the records after a rate-limited printk);
//! 3. `auditd`: Debian's auditd as the reader (unicast socket, writing /var/log/audit/audit.log);
//! 4. `watch`: `omaudit-agent watch` as the reader (multicast group, spooling to a temp dir, no server).
//!
//! Root only. Puts back the audit status and rules it found. auditd must be installed (`apt-get install auditd`)
//! and not running. Run through `cargo xtask bench-exec [N] [ROUNDS]` (release build), figures in BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use omaudit_agent::kernel::netlink::AuditSocket;
use omaudit_agent::kernel::rules::Installed;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    if let Err(err) = run(n, rounds) {
        eprintln!("exec_bench: {err}");
        std::process::exit(1);
    }
}

fn execs(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("/bin/true").status().expect("spawn /bin/true");
        assert!(status.success());
    }
    start.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn measure(n: usize, rounds: usize) -> Duration {
    execs(n / 10); // warm the page cache and the allocator
    median((0..rounds).map(|_| execs(n)).collect())
}

fn run(n: usize, rounds: usize) -> Result<(), String> {
    let mut control = AuditSocket::control().map_err(|e| format!("{e} (run as root)"))?;
    let found = control.status().map_err(|e| e.to_string())?;
    if found.pid != 0 {
        return Err(format!("an audit daemon (pid {}) is running: stop it first", found.pid));
    }
    // A login session for this process, as pam_loginuid makes one: the rule audits processes with a login uid.
    std::fs::write("/proc/self/loginuid", "0").map_err(|e| format!("set the login uid: {e}"))?;
    let agent = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("omaudit-agent"))
        .ok_or("cannot find the agent binary beside the example")?;
    let mut rows: Vec<(&str, Duration, String)> = Vec::new();

    rows.push(("no rule", measure(n, rounds), String::new()));

    let mut installed = Installed::install(&mut control).map_err(|e| e.to_string())?;
    let result = (|| -> Result<(), String> {
        rows.push(("rule, no reader", measure(n, rounds), String::new()));
        rows.push(auditd(n, rounds, &mut control)?);
        rows.push(watch(n, rounds, &agent)?);
        Ok(())
    })();
    let errors = installed.remove(&mut control);
    if !errors.is_empty() {
        eprintln!("exec_bench: could not undo every rule change: {errors:?}");
    }
    result?;

    let base = rows[0].1;
    println!("{n} execs of /bin/true, median of {rounds} round(s), spawn + wait one after the other");
    println!("{:<17} {:>9} {:>10} {:>10}  notes", "mode", "total", "per exec", "overhead");
    for (mode, took, notes) in &rows {
        let per = took.as_secs_f64() * 1e6 / n as f64;
        let over = (took.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0;
        println!("{mode:<17} {:>8.2}s {:>8.1}µs {:>+9.1}%  {notes}", took.as_secs_f64(), per, over);
    }
    Ok(())
}

fn auditd(n: usize, rounds: usize, control: &mut AuditSocket) -> Result<(&'static str, Duration, String), String> {
    // auditd rotates its log (8 MiB by default): add up every file of the log directory.
    let log_bytes = || -> u64 {
        std::fs::read_dir("/var/log/audit")
            .map(|dir| dir.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    let before = log_bytes();
    let mut daemon = Command::new("/usr/sbin/auditd")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start auditd (apt-get install auditd): {e}"))?;
    let wait_pid = |control: &mut AuditSocket, running: bool| -> Result<(), String> {
        let start = Instant::now();
        while (control.status().map_err(|e| e.to_string())?.pid != 0) != running {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("auditd did not {}", if running { "register" } else { "stop" }));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    let result = wait_pid(control, true).map(|()| measure(n, rounds));
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let _ = daemon.wait();
    wait_pid(control, false)?;
    let took = result?;
    let wrote = log_bytes().saturating_sub(before);
    let note = format!("{:.1} MiB of log written (less if it rotated one away)", wrote as f64 / (1 << 20) as f64);
    Ok(("auditd", took, note))
}

fn watch(n: usize, rounds: usize, agent: &Path) -> Result<(&'static str, Duration, String), String> {
    let spool = std::env::temp_dir().join(format!("exec-bench-{}", std::process::id()));
    let mut child = Command::new(agent)
        .arg("watch")
        .env("OMAUDIT_CONFIG", "")
        .env("OMAUDIT_SPOOL_DIR", &spool)
        .env("OMAUDIT_MANAGE_RULES", "false")
        .env_remove("OMAUDIT_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", agent.display()))?;
    let mut lines = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("watch: ready"));
    std::thread::spawn(move || lines.for_each(drop));
    let result = if ready { Ok(measure(n, rounds)) } else { Err("the watcher did not start".to_owned()) };
    // Everything it was sent, spooled: count the lines once they stop growing.
    let count =
        || std::fs::read(spool.join("execve.spool")).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0);
    let expected = n / 10 + n * rounds;
    let start = Instant::now();
    while count() < expected && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let lag = start.elapsed();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    let spooled = count();
    let _ = std::fs::remove_dir_all(&spool);
    Ok((
        "watch",
        result?,
        format!("{spooled} of {expected} execs spooled, last {:.1} s after the loop", lag.as_secs_f64()),
    ))
}
