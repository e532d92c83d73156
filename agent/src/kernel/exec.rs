//! Reassembling an exec from its records, and turning it into an audit event.
//!
//! An event's records arrive one datagram each and share a serial: `SYSCALL` first, then `EXECVE` (one or more),
//! `CWD`, `PATH`s, `PROCTITLE`, and `EOE` last. Only a `SYSCALL` of an exec from a login session opens an entry, so
//! unrelated records cost a hash lookup; entries are bounded in number and age, and one that is evicted is still
//! reported with what arrived.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::record::{self, Stamp};
use super::rules;
use crate::event::{Arg, Event, Source};
use crate::identity::parse_id;

/// An exec as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// When and which event.
    pub stamp: Stamp,
    /// 0 or the negative errno.
    pub exit: i64,
    /// Process and parent.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real and effective uid after the exec.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Login uid.
    pub auid: u32,
    /// Audit session id.
    pub session: Option<u32>,
    /// `pts0`, `tty1`, or `(none)`.
    pub tty: String,
    /// The running executable after the syscall (for a failed exec: the caller's).
    pub exe: Option<Vec<u8>>,
    /// The argument vector (`EXECVE`); `None` when the exec failed (the kernel records arguments only on success).
    pub argv: Option<Vec<Vec<u8>>>,
    /// The working directory.
    pub cwd: Option<Vec<u8>>,
    /// The first `PATH` item's name: the file the exec was asked to run.
    pub path: Option<Vec<u8>>,
    /// `PROCTITLE`, split at NULs (at most 128 bytes: a fallback for a missing EXECVE).
    pub proctitle: Option<Vec<Vec<u8>>>,
}

struct Partial {
    exec: Exec,
    execve: Vec<String>,
    opened: Instant,
}

/// Events being assembled, by serial.
pub struct Assembler {
    open: HashMap<u64, Partial>,
    order: VecDeque<u64>,
    max_open: usize,
    max_age: Duration,
    /// Highest serial seen, for estimating what an overrun lost.
    pub last_serial: u64,
}

impl Assembler {
    /// At most `max_open` events at once; one older than `max_age` is given up waiting for its EOE.
    pub fn new(max_open: usize, max_age: Duration) -> Assembler {
        Assembler { open: HashMap::new(), order: VecDeque::new(), max_open, max_age, last_serial: 0 }
    }

    /// Takes one record; returns the execs it completed (or evicted).
    pub fn push(&mut self, ty: u16, text: &str, now: Instant, out: &mut Vec<Exec>) {
        let text = text.trim_end_matches('\0');
        let Some((stamp, body)) = record::parse_stamp(text) else { return };
        self.last_serial = self.last_serial.max(stamp.serial);
        match ty {
            record::SYSCALL => {
                if let Some(exec) = syscall(stamp, body) {
                    if self.open.len() >= self.max_open {
                        self.evict_oldest(out);
                    }
                    self.order.push_back(stamp.serial);
                    self.open.insert(stamp.serial, Partial { exec, execve: Vec::new(), opened: now });
                }
            }
            record::EOE => {
                if let Some(partial) = self.open.remove(&stamp.serial) {
                    out.push(finish(partial));
                }
            }
            _ => {
                if let Some(partial) = self.open.get_mut(&stamp.serial) {
                    add(partial, ty, body);
                }
            }
        }
        self.expire(now, out);
    }

    /// Gives up on events older than the age limit.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Exec>) {
        while let Some(&serial) = self.order.front() {
            match self.open.get(&serial) {
                None => {
                    self.order.pop_front();
                }
                Some(p) if now.duration_since(p.opened) > self.max_age => self.evict_oldest(out),
                Some(_) => break,
            }
        }
    }

    /// Every open event, finished with what arrived (at stop).
    pub fn drain(&mut self, out: &mut Vec<Exec>) {
        while !self.open.is_empty() {
            self.evict_oldest(out);
        }
    }

    /// Events being assembled.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Nothing being assembled.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn evict_oldest(&mut self, out: &mut Vec<Exec>) {
        while let Some(serial) = self.order.pop_front() {
            if let Some(partial) = self.open.remove(&serial) {
                out.push(finish(partial));
                return;
            }
        }
    }
}

/// The SYSCALL record of an exec from a login session; anything else is `None`.
fn syscall(stamp: Stamp, body: &str) -> Option<Exec> {
    let f = record::fields(body);
    let arch = u32::from_str_radix(record::get(&f, "arch")?, 16).ok()?;
    let nr: u32 = record::number(&f, "syscall")?;
    if !rules::is_exec(arch, nr) {
        return None;
    }
    let auid = parse_id(record::get(&f, "auid")?)?;
    Some(Exec {
        stamp,
        exit: record::number(&f, "exit").unwrap_or(0),
        pid: record::number(&f, "pid").unwrap_or(0),
        ppid: record::number(&f, "ppid").unwrap_or(0),
        uid: record::number(&f, "uid").unwrap_or(0),
        euid: record::number(&f, "euid").unwrap_or(0),
        auid,
        session: record::get(&f, "ses").and_then(parse_id),
        tty: record::get(&f, "tty").unwrap_or("(none)").to_owned(),
        exe: record::get(&f, "exe").and_then(record::decode),
        argv: None,
        cwd: None,
        path: None,
        proctitle: None,
    })
}

fn add(partial: &mut Partial, ty: u16, body: &str) {
    match ty {
        record::EXECVE => partial.execve.push(body.to_owned()),
        record::CWD => partial.exec.cwd = record::get(&record::fields(body), "cwd").and_then(record::decode),
        record::PATH => {
            let f = record::fields(body);
            if record::get(&f, "item") == Some("0") {
                partial.exec.path = record::get(&f, "name").and_then(record::decode);
            }
        }
        record::PROCTITLE => {
            partial.exec.proctitle = record::get(&record::fields(body), "proctitle")
                .and_then(record::decode)
                .map(|raw| raw.split(|&b| b == 0).map(<[u8]>::to_vec).collect());
        }
        _ => {}
    }
}

fn finish(partial: Partial) -> Exec {
    let mut exec = partial.exec;
    if !partial.execve.is_empty() {
        exec.argv = Some(record::execve_args(&partial.execve));
    }
    exec
}

/// What a finished exec needs from outside to become an event: names and the host's clock.
pub trait Names {
    /// The user name of `uid`, or its digits.
    fn user(&mut self, uid: u32) -> String;
}

impl Exec {
    /// The argument vector to report: EXECVE's, else (a successful exec whose EXECVE was lost) the process
    /// title's, else (a failed exec) just the file that was tried.
    pub fn arguments(&self) -> Vec<Vec<u8>> {
        if let Some(argv) = &self.argv {
            return argv.clone();
        }
        if self.exit == 0 {
            if let Some(title) = &self.proctitle {
                return title.clone();
            }
        }
        self.path.clone().or_else(|| self.exe.clone()).into_iter().collect()
    }

    /// The executable to report: the new program, or for a failed exec the file that was tried.
    pub fn executable(&self) -> Option<&[u8]> {
        if self.exit == 0 {
            self.exe.as_deref()
        } else {
            self.path.as_deref().or(self.exe.as_deref())
        }
    }

    /// The audit event at `(stream, seq)`.
    pub fn into_event(
        self,
        stream: &str,
        seq: u64,
        names: &mut dyn Names,
        local_time: &dyn Fn(u64) -> String,
    ) -> Event {
        let argv = self.arguments();
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Event {
            stream: stream.to_owned(),
            seq,
            history_id: 0,
            user: names.user(self.uid),
            login_user: names.user(self.auid),
            uid: self.uid,
            tty: tty_path(&self.tty),
            ip: String::new(),
            time: local_time(self.stamp.secs),
            command: shell_line(&argv),
            source: Source::Execve,
            session: self.session,
            exe: self.executable().map(lossy),
            cwd: self.cwd.as_deref().map(lossy),
            argv: Some(argv.into_iter().map(Arg::from_bytes).collect()),
            pid: Some(self.pid),
            ppid: Some(self.ppid),
            euid: Some(self.euid),
            auid: Some(self.auid),
            exit: Some(self.exit),
        }
    }
}

/// The kernel's terminal name as a device path, as the prompt reports it (`pts0` → `/dev/pts/0`); none → `""`.
pub fn tty_path(name: &str) -> String {
    match name {
        "" | "(none)" => String::new(),
        _ => match name.strip_prefix("pts") {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("/dev/pts/{n}"),
            _ => format!("/dev/{name}"),
        },
    }
}

/// The arguments as one bash command line that runs the same argv when pasted: bare words where safe, single
/// quotes for other text, `$'…'` with escapes for control characters, quotes and bytes that are not UTF-8.
pub fn shell_line(args: &[Vec<u8>]) -> String {
    let words = args.iter().enumerate().map(|(i, a)| if i == 0 { command_word(a) } else { shell_word(a) });
    words.collect::<Vec<_>>().join(" ")
}

/// Bash's reserved words that are also plain words: first on a line they are syntax, not a command.
const RESERVED: [&str; 17] = [
    "case", "coproc", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in", "select", "then",
    "time", "until", "while",
];

/// The first word: bare `NAME=value` (or `NAME+=value`) there is an assignment and `if`, `time`, … are syntax,
/// so those are quoted (found by the `kernel_records` fuzz target: `_x=1 ''` ran `''` with `_x` set).
fn command_word(arg: &[u8]) -> String {
    let word = shell_word(arg);
    let bare = word.as_bytes() == arg;
    let assignment = word.split_once('=').is_some_and(|(name, _)| {
        let name = name.strip_suffix('+').unwrap_or(name);
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if bare && (assignment || RESERVED.contains(&word.as_str())) {
        // A bare word holds only safe ASCII, no quote.
        format!("'{word}'")
    } else {
        word
    }
}

fn shell_word(arg: &[u8]) -> String {
    let safe = |b: &u8| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(b);
    if !arg.is_empty() && arg.iter().all(safe) {
        // Only ASCII here, so this is the same text.
        return String::from_utf8_lossy(arg).into_owned();
    }
    match std::str::from_utf8(arg) {
        Ok(text) if !text.contains('\'') && !text.chars().any(char::is_control) => format!("'{text}'"),
        _ => {
            let mut out = String::from("$'");
            let mut rest = arg;
            while !rest.is_empty() {
                // Keep printable UTF-8 as it is; escape everything else byte by byte.
                let (valid, bad) = match std::str::from_utf8(rest) {
                    Ok(s) => (s, 0),
                    Err(e) => {
                        let (good, _) = rest.split_at(e.valid_up_to());
                        // `valid_up_to` bytes are UTF-8, so this never falls back.
                        (
                            std::str::from_utf8(good).unwrap_or_default(),
                            e.error_len().unwrap_or(rest.len() - good.len()),
                        )
                    }
                };
                for c in valid.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\'' => out.push_str("\\'"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c if c.is_control() => {
                            let mut buf = [0u8; 4];
                            for b in c.encode_utf8(&mut buf).bytes() {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                        }
                        c => out.push(c),
                    }
                }
                let skip = valid.len();
                for b in &rest[skip..skip + bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &rest[skip + bad..];
            }
            out.push('\'');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Names for Fixed {
        fn user(&mut self, uid: u32) -> String {
            if uid == 0 {
                "root".into()
            } else {
                uid.to_string()
            }
        }
    }

    fn datagrams(serial: u64) -> Vec<(u16, String)> {
        let stamp = format!("audit(1764767100.250:{serial}): ");
        vec![
            (1300, format!("{stamp}arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=10 pid=11 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts3 ses=7 comm=\"printf\" exe=\"/usr/bin/printf\" key=\"omaudit-exec\"")),
            (1309, format!("{stamp}argc=2 a0=\"printf\" a1=61270A")),
            (1307, format!("{stamp}cwd=\"/tmp\"")),
            (1302, format!("{stamp}item=0 name=\"/usr/bin/printf\" inode=1 nametype=NORMAL")),
            (1327, format!("{stamp}proctitle=7072696E74660061")),
            (1320, stamp.clone()),
        ]
    }

    #[test]
    fn an_exec_is_assembled_and_becomes_an_event() {
        let mut asm = Assembler::new(16, Duration::from_secs(5));
        let now = Instant::now();
        let mut out = Vec::new();
        // Unrelated record with another serial in between.
        asm.push(1105, "audit(1764767100.250:99): pid=1 uid=0 auid=0 msg='op=login'", now, &mut out);
        for (ty, text) in datagrams(100) {
            asm.push(ty, &format!("{text}\0"), now, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert!(asm.is_empty());
        let exec = out.pop().unwrap();
        assert_eq!(exec.argv, Some(vec![b"printf".to_vec(), b"a'\n".to_vec()]));
        let event = exec.into_event("s", 3, &mut Fixed, &|secs| secs.to_string());
        assert_eq!(event.command, "printf $'a\\'\\n'");
        assert_eq!(event.login_user, "1000");
        assert_eq!(event.user, "root");
        assert_eq!(event.tty, "/dev/pts/3");
        assert_eq!(event.cwd.as_deref(), Some("/tmp"));
        assert_eq!(event.exe.as_deref(), Some("/usr/bin/printf"));
        assert_eq!(event.session, Some(7));
        assert_eq!(event.time, "1764767100");
        assert_eq!(event.source, Source::Execve);
    }

    #[test]
    fn other_syscalls_and_sessions_without_login_are_ignored() {
        let mut asm = Assembler::new(16, Duration::from_secs(5));
        let mut out = Vec::new();
        let now = Instant::now();
        let open = "audit(1.0:5): arch=c000003e syscall=257 success=yes exit=3 pid=1 auid=0 uid=0 euid=0 ses=1";
        let daemon = "audit(1.0:6): arch=c000003e syscall=59 success=yes exit=0 pid=1 auid=4294967295 uid=0 euid=0";
        asm.push(1300, open, now, &mut out);
        asm.push(1300, daemon, now, &mut out);
        asm.push(1320, "audit(1.0:5): ", now, &mut out);
        assert!(out.is_empty() && asm.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_a_failed_exec_names_the_file_tried() {
        let mut asm = Assembler::new(2, Duration::from_millis(100));
        let mut out = Vec::new();
        let t0 = Instant::now();
        for serial in 1..=3u64 {
            let failed = format!(
                "audit(1.0:{serial}): arch=c000003e syscall=59 success=no exit=-2 pid=9 auid=0 uid=0 euid=0 ses=1 exe=\"/usr/bin/bash\""
            );
            asm.push(1300, &failed, t0, &mut out);
            asm.push(1302, &format!("audit(1.0:{serial}): item=0 name=\"./nope\" nametype=UNKNOWN"), t0, &mut out);
        }
        assert_eq!((out.len(), asm.len()), (1, 2));
        assert_eq!(out[0].stamp.serial, 1);
        assert_eq!(out[0].arguments(), vec![b"./nope".to_vec()]);
        assert_eq!(out[0].executable(), Some(&b"./nope"[..]));
        asm.expire(t0 + Duration::from_secs(1), &mut out);
        assert_eq!((out.len(), asm.len()), (3, 0));
    }

    #[test]
    fn command_lines_paste_back() {
        let line = shell_line(&[
            b"ls".to_vec(),
            b"a b".to_vec(),
            b"it's".to_vec(),
            b"\xff\xfe".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            Vec::new(),
            b"back\\slash\x01".to_vec(),
        ]);
        assert_eq!(line, "ls 'a b' $'it\\'s' $'\\xff\\xfe' 'caf\u{e9}' '' $'back\\\\slash\\x01'");
    }

    /// Found by the `kernel_records` fuzz target: bash reads a bare first word `_x=1` as an assignment (and `if`,
    /// `time` as syntax), so the pasted line ran something else.
    #[test]
    fn a_first_word_bash_would_not_run_is_quoted() {
        assert_eq!(shell_line(&[b"_x=1".to_vec(), Vec::new()]), "'_x=1' ''");
        assert_eq!(shell_line(&[b"a+=b".to_vec()]), "'a+=b'");
        assert_eq!(shell_line(&[b"time".to_vec(), b"ls".to_vec()]), "'time' ls");
        assert_eq!(shell_line(&[b"ls".to_vec(), b"A=b".to_vec(), b"if".to_vec()]), "ls A=b if", "only the first word");
        assert_eq!(shell_line(&[b"a.b=c".to_vec()]), "a.b=c", "not a variable name");
    }

    #[test]
    fn ttys_become_device_paths() {
        assert_eq!(tty_path("pts12"), "/dev/pts/12");
        assert_eq!(tty_path("tty1"), "/dev/tty1");
        assert_eq!(tty_path("(none)"), "");
    }
}
