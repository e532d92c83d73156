//! The harness of `kernel.rs`: the kernel's audit state put back after each test ([`Restore`]), a running
//! `omaudit-agent watch` and the events it spools ([`Watcher`]), and commands run in login sessions.

use omaudit_agent::event::{Arg, Event};
use omaudit_agent::kernel::netlink::{AuditSocket, Rule, Status};
use omaudit_agent::spool::State;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_omaudit-agent");

static SERIAL: Mutex<()> = Mutex::new(());

/// The kernel's audit state when a test began; put back when it ends, whatever happened.
pub struct Restore {
    _serial: MutexGuard<'static, ()>,
    status: Status,
    rules: Vec<Rule>,
}

pub fn control() -> AuditSocket {
    AuditSocket::control().unwrap_or_else(|err| panic!("these tests need the kernel's audit netlink and root: {err}"))
}

impl Restore {
    pub fn begin() -> Restore {
        let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut control = control();
        let status = control.status().unwrap_or_else(|err| panic!("cannot read the audit status (root?): {err}"));
        let rules = control.list_rules().expect("list the audit rules");
        Restore { _serial: serial, status, rules }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let mut control = control();
        if let Ok(now) = control.list_rules() {
            for rule in now.iter().filter(|r| !self.rules.contains(r)) {
                let _ = control.delete_rule(rule);
            }
        }
        let _ = control.set_backlog_limit(self.status.backlog_limit);
        if self.status.enabled != 2 {
            let _ = control.set_enabled(self.status.enabled);
        }
    }
}

/// A running `omaudit-agent watch` with its own spool directory and no server.
pub struct Watcher {
    child: Child,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    pub fn start(env: &[(&str, &str)]) -> Watcher {
        Watcher::start_with(env, true)
    }

    pub fn start_with(env: &[(&str, &str)], manage_rules: bool) -> Watcher {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(AGENT);
        command
            .arg("watch")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("OMAUDIT_CONFIG", "")
            .env("OMAUDIT_SPOOL_DIR", dir.path())
            .env("OMAUDIT_MANAGE_RULES", manage_rules.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start omaudit-agent watch");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let watcher = Watcher { child, dir, log };
        watcher.wait_log("watch: ready", Duration::from_secs(20));
        watcher
    }

    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                start.elapsed() < timeout,
                "no {text:?} from the watcher in {timeout:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "watch exited with {status}: {:?}", self.log.lock().unwrap());
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "watch did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn events(&self) -> Vec<Event> {
        let text = std::fs::read(self.dir.path().join("execve.spool")).unwrap_or_default();
        text.split_inclusive(|&b| b == b'\n') // whole lines only: the watcher may be writing the last one
            .filter_map(|l| l.strip_suffix(b"\n").filter(|l| !l.is_empty()))
            .map(|l| serde_json::from_slice(l).expect("a spool line is an event"))
            .collect()
    }

    pub fn state(&self) -> State {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("execve.state")).expect("state")).expect("state")
    }

    /// Waits until an event with this exact argv arrives.
    pub fn wait_for(&self, argv: &[&[u8]]) -> Event {
        let want: Vec<Arg> = argv.iter().map(|a| Arg::from_bytes(a.to_vec())).collect();
        let start = Instant::now();
        loop {
            if let Some(event) = self.events().into_iter().find(|e| e.argv.as_ref() == Some(&want)) {
                return event;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no exec of {want:?} arrived; got {:?}",
                self.events().iter().map(|e| &e.command).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// `program args…` in a new login session of `auid` (what pam_loginuid does at login).
pub fn as_login(auid: u32, program: &str, args: &[OsString]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("echo \"$1\" > /proc/self/loginuid && shift && exec \"$@\"")
        .arg("sh")
        .arg(auid.to_string())
        .arg(program)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

pub fn run(mut command: Command) -> Vec<u8> {
    let out = command.stdin(Stdio::null()).output().expect("run");
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `lines` typed into `bash --norc -i` on a terminal (`script` gives it a pty), in a login session of root.
pub fn interactive(lines: &[String]) {
    let script = lines.join("\n") + "\nexit\n";
    let mut child = as_login(0, "/usr/bin/script", &["-qec".into(), "bash --norc -i".into(), "/dev/null".into()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "interactive bash: {status}");
}

pub fn marker(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("om-{}-{nanos}-{name}", std::process::id())
}

pub fn text(arg: &str) -> OsString {
    OsString::from(arg)
}
