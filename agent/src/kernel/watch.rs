//! The running watcher, and `watch --check`.
//!
//! Three threads. The *reader* only drains the multicast socket into a bounded queue, so the kernel's copy is
//! taken as fast as it comes; when the queue is full it waits, and the socket's 64 MiB receive buffer absorbs the
//! burst. The *writer* (the calling thread) reassembles execs, filters them, and appends them to
//! `<spool_dir>/execve.spool` in batches (one lock and one state write per batch). The *deliverer* runs the same
//! flush as the prompt's background flusher, once a second, so a slow or dead server never slows reading.
//!
//! Losses are never silent: records the kernel dropped (its `lost` counter, read every 2 s) and records lost
//! when the receive buffer overflowed (`ENOBUFS`, counted by the serials skipped) become gaps in the stream. Both
//! are upper bounds: serials and records also belong to events that were not execs.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::exec::{Assembler, Exec, Names};
use super::netlink::{self, AuditSocket};
use super::record;
use super::rules::{self, Installed};
use super::KernelError;
use crate::config::Config;
use crate::deliver::{self, FlushOptions, HttpTransport};
use crate::error::Result;
use crate::identity::user_name;
use crate::local_log::LocalLog;
use crate::spool::{Loss, Spool};

/// Kernel memory for records not yet read (forced past `rmem_max` when root).
const RCVBUF: usize = 64 << 20;
/// Datagrams between the reader and the writer (each a few hundred bytes; bounded memory).
const QUEUE: usize = 16_384;
/// Largest datagram (the kernel's `MAX_AUDIT_MESSAGE_LENGTH` is 8970).
const DATAGRAM: usize = 16 * 1024;
/// Execs being assembled at most, and how long one waits for its end.
const MAX_OPEN: usize = 4096;
const MAX_AGE: Duration = Duration::from_secs(2);
/// How often the reader looks at the stop flag, and the writer at the kernel's lost counter.
const POLL: Duration = Duration::from_millis(200);
const STATUS_EVERY: Duration = Duration::from_secs(2);
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The largest loss one overrun is counted as (a serial jump beyond it is not a plausible overrun).
const MAX_OVERRUN_ESTIMATE: u64 = 1_000_000;
/// Execs appended to the spool per batch at most.
const BATCH: usize = 2048;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGTERM/SIGINT/SIGHUP handlers that ask the watcher to stop, and returns the flag they set.
pub fn stop_on_signals() -> &'static AtomicBool {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
    &STOP
}

/// What a watcher did, logged when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Exec events spooled.
    pub spooled: u64,
    /// Execs not reported: the agent's own, or a configured program or user.
    pub ignored: u64,
    /// Events counted lost (gaps): kernel backlog, receive buffer overruns, spool full.
    pub lost: u64,
}

enum Message {
    Datagram(Vec<u8>),
    /// The receive buffer overflowed before the next datagram.
    Overrun,
}

/// Runs until `stop` is set: rules in (with `manage_rules`), records read, execs spooled and delivered, rules out.
pub fn run(config: &Config, stop: &'static AtomicBool) -> Result<Summary> {
    rules::abis()?;
    let spool = Spool::open_watch(&config.spool_dir, config.spool_max_events)?;
    // Join the group before the rules exist, so no exec between the two is missed.
    let reader = AuditSocket::reader(RCVBUF, POLL)?;
    let mut control = AuditSocket::control()?;
    let status = control.status()?;
    let mut installed = if config.manage_rules { Some(Installed::install(&mut control)?) } else { None };
    if let Some(installed) = &installed {
        info!(rules = installed.rules().len(), key = rules::RULE_KEY, "execve rules installed");
    } else if status.enabled == 0 {
        warn!("auditing is off and manage_rules is false: no exec will be reported until auditd enables it");
    }
    let result = watch(config, stop, spool, reader, &mut control, status.lost);
    if let Some(installed) = installed.as_mut() {
        let errors = installed.remove(&mut control);
        for err in &errors {
            error!(error = %err, "could not undo a rule change");
        }
        if errors.is_empty() {
            info!("execve rules removed");
        }
    }
    result
}

fn watch(
    config: &Config,
    stop: &'static AtomicBool,
    spool: Spool,
    reader: AuditSocket,
    control: &mut AuditSocket,
    lost_at_start: u32,
) -> Result<Summary> {
    let (tx, rx) = mpsc::sync_channel::<Message>(QUEUE);
    let reading = thread::Builder::new()
        .name("audit-reader".into())
        .spawn(move || read(reader, tx, stop))
        .map_err(|e| crate::Error::io("start the reader thread for", "/proc/self", e))?;
    let delivering = start_delivery(config, spool.clone(), stop);
    let filter = Filter::new(config);
    info!(spool = %spool.path().display(), pid = std::process::id(), "watch: ready");

    let mut names = PasswdNames::default();
    let mut asm = Assembler::new(MAX_OPEN, MAX_AGE);
    let mut summary = Summary::default();
    let mut last_lost = lost_at_start;
    let mut last_status = Instant::now();
    let mut overrun_after: Option<u64> = None;
    let mut last_report = Instant::now();
    let mut open = true;
    while open {
        let mut execs = Vec::new();
        let mut losses = Vec::new();
        let mut take = |message: Message, execs: &mut Vec<Exec>, losses: &mut Vec<Loss>| match message {
            Message::Overrun => {
                overrun_after.get_or_insert(asm.last_serial);
            }
            Message::Datagram(data) => {
                for (ty, _, payload) in netlink::messages(&data) {
                    let text = String::from_utf8_lossy(payload);
                    if let Some(before) = overrun_after.take() {
                        let serial = record::parse_stamp(&text).map_or(before + 1, |(s, _)| s.serial);
                        losses.push(overrun_loss(before, serial));
                    }
                    asm.push(ty, &text, Instant::now(), execs);
                }
            }
        };
        match rx.recv_timeout(POLL) {
            Ok(message) => take(message, &mut execs, &mut losses),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        while execs.len() < BATCH {
            match rx.try_recv() {
                Ok(message) => take(message, &mut execs, &mut losses),
                Err(_) => break,
            }
        }
        asm.expire(Instant::now(), &mut execs);
        if !open {
            asm.drain(&mut execs);
        }
        if last_status.elapsed() >= STATUS_EVERY || !open {
            last_status = Instant::now();
            match control.status() {
                Ok(status) => {
                    let lost = status.lost.wrapping_sub(last_lost);
                    last_lost = status.lost;
                    if lost > 0 {
                        warn!(lost, "the kernel lost audit records");
                        losses.push(Loss {
                            count: u64::from(lost),
                            reason: format!("kernel audit backlog full: at most {lost} events lost"),
                        });
                    }
                }
                Err(err) => warn!(error = %err, "cannot read the kernel's lost counter"),
            }
        }
        let before = execs.len() as u64;
        execs.retain(|exec| !filter.ignores(exec));
        summary.ignored += before - execs.len() as u64;
        let local = local_time;
        match spool.record_many(execs, &losses, |exec, stream, seq| exec.into_event(stream, seq, &mut names, &local)) {
            Ok(done) => {
                summary.spooled += done.appended;
                summary.lost += done.lost + done.full;
            }
            Err(err) => {
                // The spool itself records what it could not append as a gap; keep reading.
                error!(error = %err, "cannot spool exec events");
            }
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            info!(spooled = summary.spooled, ignored = summary.ignored, lost = summary.lost, open = asm.len(), "watch");
        }
    }
    let _ = reading.join();
    if let Some(delivering) = delivering {
        let _ = delivering.join();
    }
    info!(spooled = summary.spooled, ignored = summary.ignored, lost = summary.lost, "watch: stopped");
    Ok(summary)
}

/// What an overrun lost, from the last serial seen before it and the first after it. Serials count every audit
/// event, execs or not, so this is an upper bound; before the first record there is nothing to count from.
fn overrun_loss(before: u64, after: u64) -> Loss {
    if before == 0 {
        return Loss {
            count: 1,
            reason: "audit receive buffer overrun before the first record: events lost, count unknown".into(),
        };
    }
    let skipped = after.saturating_sub(before + 1).clamp(1, MAX_OVERRUN_ESTIMATE);
    Loss { count: skipped, reason: format!("audit receive buffer overrun: at most {skipped} events lost") }
}

/// The reader thread: datagrams into the queue until `stop`.
fn read(socket: AuditSocket, tx: mpsc::SyncSender<Message>, stop: &AtomicBool) {
    let mut buf = vec![0u8; DATAGRAM];
    while !stop.load(Ordering::SeqCst) {
        let message = match socket.recv(&mut buf) {
            Ok(n) => Message::Datagram(buf[..n].to_vec()),
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => Message::Overrun,
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            Err(err) => {
                error!(error = %err, "reading audit records failed");
                thread::sleep(POLL);
                continue;
            }
        };
        // Waits when the writer is behind: the socket's buffer holds the rest, and an overflow there is counted.
        if tx.send(message).is_err() {
            return;
        }
    }
}

fn start_delivery(config: &Config, spool: Spool, stop: &'static AtomicBool) -> Option<thread::JoinHandle<()>> {
    if let Err(err) = config.endpoint() {
        warn!(error = %err, "events stay in the spool");
        return None;
    }
    let transport = match HttpTransport::new(config) {
        Ok(transport) => transport,
        Err(err) => {
            error!(error = %err, "events stay in the spool");
            return None;
        }
    };
    let ip = config.ip.clone().unwrap_or_else(|| {
        config.server.as_deref().and_then(deliver::detect_ip).map(|ip| ip.to_string()).unwrap_or_default()
    });
    let options = FlushOptions { wait_for_lock: false, batch_max: config.batch_max };
    let log = LocalLog::new(match &config.log_file {
        Some(pattern) => PathBuf::from(pattern.replace("{uid}", "execve")),
        None => config.spool_dir.join("execve.log"),
    });
    let handle = thread::Builder::new().name("audit-deliver".into()).spawn(move || loop {
        let last = stop.load(Ordering::SeqCst);
        match deliver::flush(&spool, &transport, &ip, options, &log) {
            Ok(report) if report.error.is_some() => {
                if let Some(err) = report.error {
                    warn!(error = %err, remaining = report.remaining, "delivery stopped");
                }
            }
            Ok(_) => {}
            Err(err) => error!(error = %err, "delivery failed"),
        }
        if last {
            return;
        }
        let until = Instant::now() + FLUSH_EVERY;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            thread::sleep(POLL);
        }
    });
    handle.map_err(|err| error!(error = %err, "cannot start the delivery thread")).ok()
}

/// Which execs are not reported.
struct Filter {
    pid: u32,
    own_exe: Option<Vec<u8>>,
    programs: Vec<Vec<u8>>,
    auids: Vec<u32>,
}

impl Filter {
    fn new(config: &Config) -> Filter {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let auids = config
            .ignore_users
            .iter()
            .filter_map(|user| match user.parse::<u32>() {
                Ok(uid) => Some(uid),
                Err(_) => {
                    let uid = passwd.lines().find_map(|line| {
                        let mut f = line.split(':');
                        (f.next()? == user).then(|| f.nth(1)?.parse::<u32>().ok()).flatten()
                    });
                    if uid.is_none() {
                        warn!(user = %user, "ignore_users names an unknown user");
                    }
                    uid
                }
            })
            .collect();
        let own_exe =
            std::env::current_exe().ok().map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec());
        Filter {
            pid: std::process::id(),
            own_exe,
            programs: config.ignore_programs.iter().map(|p| p.as_bytes().to_vec()).collect(),
            auids,
        }
    }

    fn ignores(&self, exec: &Exec) -> bool {
        let exe = exec.executable();
        // The agent itself (the prompt form, the flusher, this watcher's children): never a loop through itself.
        exec.pid == self.pid
            || exec.ppid == self.pid
            || (exe.is_some() && exe == self.own_exe.as_deref())
            || exe.is_some_and(|e| self.programs.iter().any(|p| p == e))
            || self.auids.contains(&exec.auid)
    }
}

/// User names from /etc/passwd, re-read at most every 10 s when a uid is not found.
#[derive(Default)]
struct PasswdNames {
    passwd: String,
    cache: HashMap<u32, String>,
    read_at: Option<Instant>,
}

impl Names for PasswdNames {
    fn user(&mut self, uid: u32) -> String {
        if let Some(name) = self.cache.get(&uid) {
            return name.clone();
        }
        if self.read_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            self.read_at = Some(Instant::now());
            self.cache.clear();
        }
        let name = user_name(&self.passwd, uid).unwrap_or_else(|| uid.to_string());
        if self.cache.len() < 4096 {
            self.cache.insert(uid, name.clone());
        }
        name
    }
}

/// `YYYY-MM-DD HH:MM:SS` in the host's time zone, as bash's history prints it.
fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it and returns null on failure, which is checked.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return crate::local_log::utc_timestamp(secs);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// What `watch --check` found: one line per finding, and whether kernel capture can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// True: `watch` will capture execs. False: only the history path applies here.
    pub ok: bool,
    /// What was found, in order.
    pub lines: Vec<String>,
}

/// Looks at this host without changing anything: audit in the kernel, the capabilities, auditing on, the rules.
pub fn check(config: &Config) -> Check {
    let mut lines = Vec::new();
    let fail = |mut lines: Vec<String>, why: String| {
        lines.push(format!("history only: {why}"));
        Check { ok: false, lines }
    };
    if let Err(err) = rules::abis() {
        return fail(lines, err.to_string());
    }
    let mut control = match AuditSocket::control() {
        Ok(control) => control,
        Err(KernelError::Socket(_, err)) if err.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
            return fail(lines, "this kernel has no audit support (CONFIG_AUDIT)".into());
        }
        Err(err) => return fail(lines, err.to_string()),
    };
    let status = match control.status() {
        Ok(status) => status,
        Err(KernelError::Request { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
            return fail(lines, "no CAP_AUDIT_CONTROL (run watch as root; in a container, it needs the capability and the host's audit namespace)".into());
        }
        Err(KernelError::Request { source, .. }) if source.raw_os_error() == Some(libc::ECONNREFUSED) => {
            return fail(lines, "the kernel refuses audit requests from this namespace (a container)".into());
        }
        Err(err) => return fail(lines, err.to_string()),
    };
    lines.push(format!(
        "kernel audit: enabled={} backlog_limit={} lost={} auditd pid={}",
        status.enabled, status.backlog_limit, status.lost, status.pid
    ));
    if let Err(err) = AuditSocket::reader(4096, POLL) {
        return fail(lines, err.to_string());
    }
    lines.push("multicast group: readable (CAP_AUDIT_READ)".into());
    if status.pid != 0 {
        lines.push(format!("auditd (pid {}) reads the unicast stream; watch reads the multicast copy", status.pid));
    }
    if config.manage_rules {
        if status.enabled == 2 {
            return fail(lines, KernelError::Locked.to_string());
        }
        lines.push(format!("manage_rules: watch will enable auditing and add its rules (key {})", rules::RULE_KEY));
    } else {
        if status.enabled == 0 {
            return fail(
                lines,
                "auditing is off and manage_rules = false (enable it through auditd, or set manage_rules = true)"
                    .into(),
            );
        }
        match control.list_rules() {
            Ok(loaded) if loaded.iter().any(rules::reports_execs) => {
                lines.push("an execve rule is loaded (auditd's rules)".into());
            }
            Ok(_) => {
                return fail(lines, "no execve rule is loaded and manage_rules = false (add `-a always,exit -F arch=b64 -S execve -F auid!=unset` to auditd's rules, or set manage_rules = true)".into());
            }
            Err(err) => return fail(lines, err.to_string()),
        }
    }
    lines.push("kernel capture: omaudit-agent watch can run here".into());
    Check { ok: true, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overrun_is_counted_by_the_serials_it_skipped() {
        assert_eq!(overrun_loss(100, 131).count, 30);
        assert_eq!(overrun_loss(100, 131).reason, "audit receive buffer overrun: at most 30 events lost");
        // Only records of events in flight were lost: still a loss.
        assert_eq!(overrun_loss(100, 101).count, 1);
        assert_eq!(overrun_loss(100, 100 + 10 * MAX_OVERRUN_ESTIMATE).count, MAX_OVERRUN_ESTIMATE);
        assert!(overrun_loss(0, 5000).reason.contains("count unknown"));
        assert_eq!(overrun_loss(0, 5000).count, 1);
    }

    #[test]
    fn local_time_is_shaped_like_bash_history() {
        let text = local_time(1_764_767_100);
        assert_eq!(text.len(), 19, "{text}");
        assert_eq!((&text[4..5], &text[10..11], &text[13..14]), ("-", " ", ":"));
    }
}
