//! The audit event and the gap report: the wire and spool format.
//!
//! **API Boundary:** [`Event`] and [`Gap`] serialise to exactly the objects the server's
//! `POST /api/audit/events` accepts, and one `Event` is one spool line. Renaming a field is a protocol change.

use serde::{Deserialize, Serialize};

use crate::history::HistoryLine;
use crate::identity::Identity;

/// One audited command, as spooled and as sent.
///
/// A history event (typed at a bash prompt) leaves the execve-only fields out; an execve event (captured from
/// the kernel by `omaudit-agent watch`) has `source = "execve"`, `history_id = 0` and `command` = the argument
/// vector quoted so it pastes back into bash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Random id (32 hex chars) created with the spool's state; `(stream, seq)` is the server's idempotency key.
    pub stream: String,
    /// Position in the stream, from 1, never reused.
    pub seq: u64,
    /// bash's history number.
    pub history_id: u64,
    /// The user named in the history line (HISTTIMEFORMAT's `whoami`, fixed when the profile was sourced).
    pub user: String,
    /// Who logged in: SUDO_USER, else the login uid's name, else the real uid's name.
    pub login_user: String,
    /// The real uid running the shell.
    pub uid: u32,
    /// The terminal on stdin (`/dev/pts/0`), or `""`.
    pub tty: String,
    /// The host address: configured, else the local address of the route to the server (filled at send time).
    pub ip: String,
    /// `YYYY-MM-DD HH:MM:SS`, host-local, from the history line.
    pub time: String,
    /// The command exactly as typed (history), or the argument vector quoted for bash (execve).
    pub command: String,
    /// `"history"` (left out on the wire) or `"execve"`.
    #[serde(default, skip_serializing_if = "Source::is_history")]
    pub source: Source,
    /// The kernel's audit session id (`/proc/self/sessionid`, `ses=`): what links a typed line to what ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    /// execve: the argument vector, each argument whole (text, or its bytes in hex when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<Arg>>,
    /// execve: the executable (the path tried, for a failed exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// execve: the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// execve: process id and parent process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// execve: parent process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// execve: effective uid (differs from `uid` for setuid programs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    /// execve: the login uid (`auid`), kept across su and sudo; `login_user` is its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auid: Option<u32>,
    /// execve: the syscall's result: 0, or the negative errno of a failed exec (`-2` = not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i64>,
}

/// Where an event was captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A bash history line, recorded at the prompt.
    #[default]
    History,
    /// An execve the kernel audited.
    Execve,
}

impl Source {
    fn is_history(&self) -> bool {
        *self == Source::History
    }
}

/// One argument of an execve: text when it is UTF-8, else `{"hex": "…"}` with its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Arg {
    /// A UTF-8 argument.
    Text(String),
    /// Any other bytes, hex-encoded (lowercase).
    Bytes {
        /// The argument's bytes in hex.
        hex: String,
    },
}

impl Arg {
    /// The argument for these bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Arg {
        match String::from_utf8(bytes) {
            Ok(text) => Arg::Text(text),
            Err(err) => Arg::Bytes { hex: err.into_bytes().iter().map(|b| format!("{b:02x}")).collect() },
        }
    }
}

/// What the prompt captured, before the spool gives it a stream and a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The parsed history line.
    pub line: HistoryLine,
    /// Who and where.
    pub identity: Identity,
    /// The configured host address, or `""` to let the flusher fill it.
    pub ip: String,
}

impl Capture {
    /// The event this capture becomes at `(stream, seq)`.
    pub fn into_event(self, stream: &str, seq: u64) -> Event {
        Event {
            stream: stream.to_owned(),
            seq,
            history_id: self.line.history_id,
            user: self.line.user,
            login_user: self.identity.login_user,
            uid: self.identity.uid,
            tty: self.identity.tty,
            ip: self.ip,
            time: self.line.time,
            command: self.line.command,
            source: Source::History,
            session: self.identity.session,
            argv: None,
            exe: None,
            cwd: None,
            pid: None,
            ppid: None,
            euid: None,
            auid: None,
            exit: None,
        }
    }
}

/// Sequence numbers of one stream that will never arrive, and why. Sent until the server acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The stream the numbers belong to.
    pub stream: String,
    /// First missing sequence number.
    pub from_seq: u64,
    /// Last missing sequence number (inclusive).
    pub to_seq: u64,
    /// `"spool full"`, `"spool write failed: …"`, `"event too large"`.
    pub reason: String,
}

/// The request body of `POST /api/audit/events`.
#[derive(Debug, Serialize)]
pub struct Submission<'a> {
    /// At most `batch_max` events.
    pub events: &'a [Event],
    /// Gaps not yet acknowledged; may be empty.
    pub gaps: &'a [Gap],
}

/// The 200 answer: every event of the request is stored, a duplicate, or rejected for good.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ack {
    /// Newly stored events.
    pub stored: u64,
    /// Events the server already had (same stream and seq).
    pub duplicates: u64,
    /// Events refused for good (logged locally, not resent).
    #[serde(default)]
    pub rejected: Vec<Rejected>,
}

/// One event the server refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rejected {
    /// Its sequence number.
    pub seq: u64,
    /// Its stream, if the server names it (a batch can hold several streams).
    #[serde(default)]
    pub stream: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_the_documented_one() {
        let event = Event {
            stream: "0123456789abcdef0123456789abcdef".into(),
            seq: 17,
            history_id: 173,
            user: "root".into(),
            login_user: "alice".into(),
            uid: 0,
            tty: "/dev/pts/0".into(),
            ip: "127.0.0.1".into(),
            time: "2014-06-07 22:05:56".into(),
            command: "ls -l".into(),
            source: Source::History,
            session: None,
            argv: None,
            exe: None,
            cwd: None,
            pid: None,
            ppid: None,
            euid: None,
            auid: None,
            exit: None,
        };
        let gap = Gap { stream: event.stream.clone(), from_seq: 18, to_seq: 40, reason: "spool full".into() };
        let body = serde_json::to_string(&Submission { events: &[event], gaps: &[gap] }).unwrap();
        assert_eq!(
            body,
            r#"{"events":[{"stream":"0123456789abcdef0123456789abcdef","seq":17,"history_id":173,"user":"root","login_user":"alice","uid":0,"tty":"/dev/pts/0","ip":"127.0.0.1","time":"2014-06-07 22:05:56","command":"ls -l"}],"gaps":[{"stream":"0123456789abcdef0123456789abcdef","from_seq":18,"to_seq":40,"reason":"spool full"}]}"#
        );
    }

    #[test]
    fn execve_fields_and_byte_arguments_round_trip() {
        let argv = vec![Arg::from_bytes(b"printf".to_vec()), Arg::from_bytes(b"a b\xff".to_vec())];
        assert_eq!(argv[1], Arg::Bytes { hex: "612062ff".into() });
        let text = serde_json::to_string(&argv).unwrap();
        assert_eq!(text, r#"["printf",{"hex":"612062ff"}]"#);
        assert_eq!(serde_json::from_str::<Vec<Arg>>(&text).unwrap(), argv);
        let line = r#"{"stream":"s","seq":1,"history_id":0,"user":"root","login_user":"alice","uid":0,"tty":"",
                       "ip":"","time":"2014-06-07 22:05:56","command":"id","source":"execve","argv":["id"],"exit":0}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(event.source, Source::Execve);
        assert_eq!(event.exit, Some(0));
        assert!(serde_json::to_string(&event).unwrap().contains(r#""source":"execve""#));
    }

    #[test]
    fn ack_parses_with_and_without_rejections() {
        let ack: Ack =
            serde_json::from_str(r#"{"stored":2,"duplicates":1,"rejected":[{"seq":5,"reason":"too long"}]}"#).unwrap();
        assert_eq!(ack.rejected, vec![Rejected { seq: 5, stream: None, reason: "too long".into() }]);
        let ack: Ack = serde_json::from_str(r#"{"stored":0,"duplicates":0}"#).unwrap();
        assert!(ack.rejected.is_empty());
        assert!(serde_json::from_str::<Ack>("OK").is_err());
    }
}
