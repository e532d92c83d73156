//! `omaudit-agent watch` against the real kernel: the built binary with `manage_rules`, reading the audit
//! multicast group, with commands run in login sessions (a login uid written to `/proc/self/loginuid`, as
//! pam_loginuid does, or a real sshd login through PAM).
//!
//! These tests need root and the kernel's audit netlink; without them they fail and say why. They run one at a
//! time (the rules are the kernel's, shared), and each puts back the audit status and rules it found.

mod kernel_harness;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kernel_harness::{as_login, control, interactive, marker, run, text, Restore, Watcher, AGENT};
use omaudit_agent::event::{Arg, Source};
use omaudit_agent::kernel::rules::RULE_KEY;

#[test]
fn commands_history_never_sees_arrive_as_execs() {
    let _restore = Restore::begin();
    let watcher = Watcher::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let cwd_text = cwd.to_str().unwrap();

    // Typed at an interactive bash that records nothing: HISTFILE=/dev/null, set +o history, --norc.
    for (case, setup) in [("histfile", "HISTFILE=/dev/null"), ("nohistory", "set +o history"), ("norc", "true")] {
        let mark = marker(case);
        let tty_file = cwd.join(format!("tty-{case}"));
        interactive(&[
            setup.to_owned(),
            format!("cd {cwd_text}"),
            format!("tty > {}", tty_file.display()),
            format!("/bin/echo '{mark} x'"),
        ]);
        let event = watcher.wait_for(&[b"/bin/echo", format!("{mark} x").as_bytes()]);
        let tty = std::fs::read_to_string(&tty_file).unwrap().trim().to_owned();
        assert!(tty.starts_with("/dev/pts/"), "{tty}");
        assert_eq!(event.tty, tty, "{case}");
        assert_eq!(event.cwd.as_deref(), Some(cwd_text), "{case}");
        assert_eq!((event.login_user.as_str(), event.auid, event.user.as_str()), ("root", Some(0), "root"), "{case}");
        assert_eq!(event.source, Source::Execve);
        assert_eq!(event.exe.as_deref(), Some("/usr/bin/echo"));
        assert_eq!(event.command, format!("/bin/echo '{mark} x'"));
        assert_eq!(event.exit, Some(0));
        assert!(event.session.is_some());
    }

    // sh -c, without a terminal.
    let mark = marker("sh");
    run(as_login(0, "/bin/sh", &[text("-c"), text(&format!("cd {cwd_text} && /bin/echo {mark}"))]));
    let event = watcher.wait_for(&[b"/bin/echo", mark.as_bytes()]);
    assert_eq!((event.tty.as_str(), event.cwd.as_deref()), ("", Some(cwd_text)));

    // Python's os.system: the shell it starts, and what that shell runs.
    let mark = marker("python");
    let code = format!("import os; os.chdir({cwd_text:?}); os.system('/bin/echo {mark}')");
    run(as_login(0, "/usr/bin/python3", &[text("-c"), text(&code)]));
    let echo = watcher.wait_for(&[b"/bin/echo", mark.as_bytes()]);
    let shell = watcher.wait_for(&[b"sh", b"-c", format!("/bin/echo {mark}").as_bytes()]);
    assert_eq!(echo.cwd.as_deref(), Some(cwd_text));
    assert_eq!(shell.cwd.as_deref(), Some(cwd_text));
    assert_eq!(echo.login_user, "root");

    // Arguments with spaces, quotes, a newline, bytes that are not UTF-8, and one longer than an audit record.
    let long = format!("{} tail", "x".repeat(10_000));
    let odd: Vec<Vec<u8>> = vec![
        b"a b".to_vec(),
        b"q\"uo'te".to_vec(),
        b"line1\nline2".to_vec(),
        b"\xff\xfe\x01raw".to_vec(),
        long.into_bytes(),
        marker("odd").into_bytes(),
    ];
    run(as_login(0, "/bin/echo", &odd.iter().cloned().map(OsString::from_vec).collect::<Vec<_>>()));
    let mut want: Vec<&[u8]> = vec![b"/bin/echo"];
    want.extend(odd.iter().map(Vec::as_slice));
    let event = watcher.wait_for(&want);
    assert!(matches!(&event.argv.as_ref().unwrap()[4], Arg::Bytes { .. }));
    // The display line pastes back into bash as the same argument vector.
    let rest = event.command.strip_prefix("/bin/echo ").expect("command starts with the program");
    let printed = run({
        let mut c = Command::new("/bin/bash");
        c.arg("-c").arg(format!("printf '%s\\0' {rest}"));
        c
    });
    let back: Vec<Vec<u8>> = printed.split(|&b| b == 0).filter(|p| !p.is_empty()).map(<[u8]>::to_vec).collect();
    assert_eq!(back, odd);

    // A failed exec is an event too, naming the file tried.
    let mark = marker("missing");
    let failed = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo 0 > /proc/self/loginuid && cd {cwd_text} && ./{mark}"))
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let event = watcher.wait_for(&[format!("./{mark}").as_bytes()]);
    assert_eq!((event.exit, event.exe.as_deref()), (Some(-2), Some(format!("./{mark}").as_str())));

    // The agent's own execs (the prompt form, a flusher) are not reported; what runs after them is.
    let mark = marker("after-agent");
    run(as_login(0, AGENT, &[text("--version")]));
    run(as_login(0, "/bin/echo", &[text(&mark)]));
    watcher.wait_for(&[b"/bin/echo", mark.as_bytes()]);
    let agent_path = Path::new(AGENT).canonicalize().unwrap();
    let own: Vec<_> = watcher
        .events()
        .into_iter()
        .filter(|e| e.exe.as_deref().map(PathBuf::from) == Some(agent_path.clone()))
        .collect();
    assert!(own.is_empty(), "the agent's own exec was reported: {own:?}");
    assert!(watcher.events().iter().all(|e| e.pid != Some(watcher.pid()) && e.ppid != Some(watcher.pid())));
}

#[test]
fn configured_programs_and_users_are_not_reported() {
    let _restore = Restore::begin();
    let watcher = Watcher::start(&[("OMAUDIT_IGNORE_PROGRAMS", "/usr/bin/printf"), ("OMAUDIT_IGNORE_USERS", "bin")]);
    let (printf, by_bin, last) = (marker("printf"), marker("bin"), marker("last"));
    run(as_login(0, "/usr/bin/printf", &[text(&printf)]));
    run(as_login(2, "/bin/echo", &[text(&by_bin)]));
    run(as_login(0, "/bin/echo", &[text(&last)]));
    watcher.wait_for(&[b"/bin/echo", last.as_bytes()]);
    let commands: Vec<String> = watcher.events().into_iter().map(|e| e.command).collect();
    assert!(!commands.iter().any(|c| c.contains(&printf) || c.contains(&by_bin)), "{commands:?}");
}

/// `watch --check` and `manage_rules = false`: what the loaded rules allow, said and done.
#[test]
fn without_manage_rules_the_loaded_rules_decide() {
    let _restore = Restore::begin();
    let check = |manage: bool| {
        let out = Command::new(AGENT)
            .args(["watch", "--check"])
            .env_clear()
            .env("OMAUDIT_CONFIG", "")
            .env("OMAUDIT_MANAGE_RULES", manage.to_string())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, said) = check(true);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.ends_with("kernel capture: omaudit-agent watch can run here\n"), "{said}");

    let mut control = control();
    control.set_enabled(0).unwrap();
    let (code, said) = check(false);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("history only: auditing is off and manage_rules = false"), "{said}");

    control.set_enabled(1).unwrap();
    let loaded = control.list_rules().unwrap();
    if !loaded.iter().any(omaudit_agent::kernel::rules::reports_execs) {
        let (code, said) = check(false);
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains("history only: no execve rule is loaded"), "{said}");
    }
    // auditd's kind of rule (another key, another field for "has a login uid"): check says yes, and the watcher
    // reports through it without adding its own.
    let added = Command::new("auditctl")
        .args(["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", "auid!=-1", "-k", "site-exec"])
        .status()
        .expect("auditctl (Debian's auditd package)");
    assert!(added.success());
    let (code, said) = check(false);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("an execve rule is loaded"), "{said}");
    let before = control.list_rules().unwrap();
    let watcher = Watcher::start_with(&[], false);
    assert_eq!(control.list_rules().unwrap(), before, "manage_rules = false adds no rule");
    let mark = marker("site-rule");
    run(as_login(0, "/bin/echo", &[text(&mark)]));
    let event = watcher.wait_for(&[b"/bin/echo", mark.as_bytes()]);
    assert_eq!(event.login_user, "root");
}

/// Without the capabilities (as in a container that lacks them), `--check` says the history path applies and why,
/// and `watch` refuses to start, changing nothing.
#[test]
fn without_the_capabilities_check_says_why_and_watch_changes_nothing() {
    let _restore = Restore::begin();
    let before = (control().status().unwrap().enabled, control().list_rules().unwrap());
    let spool = tempfile::tempdir().unwrap();
    let agent = |keep: &str, args: &[&str]| {
        let out = Command::new("setpriv")
            .arg(format!("--bounding-set=-all{keep}"))
            .arg("--inh-caps=-all")
            .arg(AGENT)
            .args(args)
            .env_clear()
            .env("OMAUDIT_CONFIG", "")
            .env("OMAUDIT_MANAGE_RULES", "true")
            .env("OMAUDIT_SPOOL_DIR", spool.path())
            .output()
            .expect("setpriv (util-linux)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, said, _) = agent("", &["watch", "--check"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.starts_with("history only: no CAP_AUDIT_CONTROL"), "{said}");
    let (code, said, _) = agent(",+audit_control", &["watch", "--check"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("history only: cannot read the kernel's audit records"), "{said}");
    let (code, _, err) = agent(",+audit_control", &["watch"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CAP_AUDIT_READ"), "{err}");
    assert_eq!((control().status().unwrap().enabled, control().list_rules().unwrap()), before);
}

#[test]
fn su_and_sudo_keep_the_login_user() {
    let _restore = Restore::begin();
    let watcher = Watcher::start(&[]);
    // Logged in as `daemon` (uid 1), then root, then another user: the login user stays daemon.
    let mark = marker("su");
    run(as_login(
        1,
        "/usr/bin/su",
        &[text("-s"), text("/bin/sh"), text("nobody"), text("-c"), text(&format!("/bin/echo {mark}"))],
    ));
    let event = watcher.wait_for(&[b"/bin/echo", mark.as_bytes()]);
    assert_eq!((event.user.as_str(), event.uid), ("nobody", 65534));
    assert_eq!((event.login_user.as_str(), event.auid), ("daemon", Some(1)));

    let mark = marker("sudo");
    run(as_login(1, "/usr/bin/sudo", &[text("-u"), text("nobody"), text("/bin/echo"), text(&mark)]));
    let event = watcher.wait_for(&[b"/bin/echo", mark.as_bytes()]);
    assert_eq!((event.user.as_str(), event.uid), ("nobody", 65534));
    assert_eq!((event.login_user.as_str(), event.auid), ("daemon", Some(1)));
    // sudo itself ran setuid root under the same login.
    let sudo = watcher.wait_for(&[b"/usr/bin/sudo", b"-u", b"nobody", b"/bin/echo", mark.as_bytes()]);
    assert_eq!(sudo.login_user, "daemon");
}

/// The shared test environment's sshd runs without PAM, so its sessions have no login uid; this test runs an
/// sshd with the environment's keys and configuration, plus PAM (pam_loginuid), on 127.0.0.2.
#[test]
fn a_command_over_ssh_is_a_login_session() {
    let env_path = std::env::var("OMSERVER_TESTENV")
        .unwrap_or_else(|_| format!("{}/../target/testenv/env.json", env!("CARGO_MANIFEST_DIR")));
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env_path).unwrap_or_else(|err| {
            panic!("the test environment is not up ({env_path}: {err}); cargo xtask testenv up")
        }))
        .unwrap();
    let identity = PathBuf::from(env["ssh"]["identity_file"].as_str().expect("ssh.identity_file"));
    let ssh_dir = identity.parent().unwrap().to_owned();
    let _restore = Restore::begin();
    let watcher = Watcher::start(&[]);

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port();
    let base = std::fs::read_to_string(ssh_dir.join("sshd-1.conf")).expect("the environment's sshd configuration");
    let mut conf: String = base
        .lines()
        .filter(|l| {
            !l.starts_with("ListenAddress")
                && !l.starts_with("Port")
                && !l.starts_with("PidFile")
                && !l.starts_with("UsePAM")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    conf.push_str(&format!(
        "Port {port}\nListenAddress 127.0.0.2\nUsePAM yes\nPidFile {}\n",
        dir.path().join("pid").display()
    ));
    std::fs::write(dir.path().join("sshd.conf"), conf).unwrap();
    let host_key = std::fs::read_to_string(ssh_dir.join("host_ed25519.pub")).unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.2]:{port} {host_key}")).unwrap();
    let mut sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.path().join("sshd.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.2", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "sshd did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("ssh")
        .arg("-n")
        .arg("-i")
        .arg(&identity)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-p", &port.to_string(), "root@127.0.0.2", "id; uname -a"])
        .output()
        .unwrap();
    let _ = sshd.kill();
    let _ = sshd.wait();
    assert!(out.status.success(), "ssh: {}", String::from_utf8_lossy(&out.stderr));
    // This process has no login uid: only the login sets it, so these execs can only come from the session.
    assert_eq!(std::fs::read_to_string("/proc/self/loginuid").unwrap().trim(), "4294967295");
    let id = watcher.wait_for(&[b"id"]);
    let uname = watcher.wait_for(&[b"uname", b"-a"]);
    for event in [&id, &uname] {
        assert_eq!((event.login_user.as_str(), event.auid), ("root", Some(0)));
        assert_eq!((event.tty.as_str(), event.cwd.as_deref()), ("", Some("/root")));
    }
    assert_eq!(id.session, uname.session);
}

#[test]
fn stopping_the_watcher_removes_exactly_its_rules() {
    let _restore = Restore::begin();
    let auditctl = |args: &[&str]| {
        let out = Command::new("auditctl")
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("auditctl (Debian's auditd package) is needed to look at the rules: {err}"));
        assert!(out.status.success(), "auditctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Someone else's rules, one of them the same as ours but for its key.
    auditctl(&[
        "-a",
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "execve",
        "-S",
        "execveat",
        "-F",
        "auid!=-1",
        "-k",
        "someone-else",
    ]);
    auditctl(&["-w", "/etc/omaudit-test-watch", "-p", "wa", "-k", "someone-else-watch"]);
    let before = auditctl(&["-l"]);
    let enabled_before = control().status().unwrap().enabled;

    let mut watcher = Watcher::start(&[]);
    let during = auditctl(&["-l"]);
    let ours: Vec<&str> = during.lines().filter(|l| l.contains(&format!("key={RULE_KEY}"))).collect();
    assert_eq!(ours.len(), 2, "one rule per ABI: {during}");
    assert!(ours.iter().any(|l| l.contains("arch=b64")) && ours.iter().any(|l| l.contains("arch=b32")));
    for line in before.lines() {
        assert!(during.contains(line), "{line} vanished while watching");
    }
    assert_eq!(control().status().unwrap().enabled, 1);
    watcher.stop();

    assert_eq!(auditctl(&["-l"]), before);
    assert_eq!(control().status().unwrap().enabled, enabled_before);
    watcher.wait_log("execve rules removed", Duration::from_secs(1));
}

/// 20 000 execs as fast as four shells can start them: every one arrives, or the shortfall is counted in gaps
/// (kernel `lost` plus receive-buffer overruns); the watcher's peak RSS stays under 64 MiB.
#[test]
fn a_burst_of_execs_arrives_or_is_counted() {
    const EXECS: usize = 20_000;
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    let _restore = Restore::begin();
    let mut watcher = Watcher::start(&[]);
    let mark = marker("burst");
    // Four shells at once: as fast as this machine starts processes.
    let q = EXECS / 4;
    let script = format!(
        "loop() {{ i=$1; while [ $i -lt $2 ]; do /bin/true {mark} $i; i=$((i+1)); done; }}; \
         loop 0 {q} & loop {q} {} & loop {} {} & loop {} {EXECS}; wait",
        2 * q,
        2 * q,
        3 * q,
        3 * q
    );
    let started = Instant::now();
    run(as_login(0, "/bin/sh", &[text("-c"), text(&script)]));
    let took = started.elapsed();

    // Wait until no new event arrived for 3 s (the lost counter is read every 2 s).
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(250));
        let n = watcher.events().len();
        if n != seen {
            seen = n;
            quiet_since = Instant::now();
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", watcher.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    watcher.stop();

    let got: BTreeSet<usize> = watcher
        .events()
        .iter()
        .filter_map(|e| match e.argv.as_deref() {
            Some([Arg::Text(p), Arg::Text(m), Arg::Text(i)]) if p == "/bin/true" && *m == mark => i.parse().ok(),
            _ => None,
        })
        .collect();
    let state = watcher.state();
    let gap_events: u64 = state.gaps.iter().map(|g| g.to_seq - g.from_seq + 1).sum();
    let missing = EXECS - got.len();
    eprintln!(
        "burst: {EXECS} execs in {:.1} s, {} arrived, {missing} missing, {gap_events} counted lost in {} gap(s), \
         peak RSS {} KiB",
        took.as_secs_f64(),
        got.len(),
        state.gaps.len(),
        hwm_kib
    );
    assert!(gap_events >= missing as u64, "{missing} execs missing but only {gap_events} counted: {:?}", state.gaps);
    assert!(hwm_kib < RSS_BOUND_KIB, "peak RSS {hwm_kib} KiB");
}
