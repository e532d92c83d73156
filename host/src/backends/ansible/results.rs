//! Turning the callback plugin's lines (`omserver_jsonl.py`) into per-host results.

use std::time::Duration;

use abi_stable::std_types::ROption;
use omserver_plugin_api::{HostResult, HostStatus};
use serde::Deserialize;

use super::super::{failed, millis, output::with_marker};

/// One line of `omserver_jsonl.py`.
#[derive(Debug, Deserialize)]
pub struct HostLine {
    /// The inventory alias (`h<index>`).
    pub host: String,
    status: LineStatus,
    #[serde(default)]
    rc: Option<i32>,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stdout_cut: u64,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    stderr_cut: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    msg_cut: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LineStatus {
    Ok,
    Failed,
    Unreachable,
    Skipped,
}

/// Parses one stdout line; anything that is not one of our lines (a stray print) is `None`.
pub fn parse(line: &[u8]) -> Option<HostLine> {
    if !line.starts_with(b"{") {
        return None;
    }
    serde_json::from_slice(line).ok()
}

/// What the call did on each host, for the wording of a success.
pub enum Action<'a> {
    Command,
    Copy { dest: &'a str, bytes: u64 },
}

/// The result of one host, named `name`, from its line.
pub fn to_result(name: &str, line: HostLine, action: &Action<'_>, elapsed: Duration) -> HostResult {
    let stdout = with_marker(line.stdout, line.stdout_cut);
    let stderr = with_marker(line.stderr, line.stderr_cut);
    let msg = with_marker(line.msg, line.msg_cut);
    let result = |status, rc: Option<i32>, stdout: String, stderr: String| HostResult {
        host: name.into(),
        status,
        rc: rc.map_or(ROption::RNone, ROption::RSome),
        stdout: stdout.into(),
        stderr: stderr.into(),
        duration_ms: millis(elapsed),
    };
    match (line.status, action) {
        (LineStatus::Ok, Action::Command) => result(HostStatus::Ok, Some(line.rc.unwrap_or(0)), stdout, stderr),
        (LineStatus::Ok, Action::Copy { dest, bytes }) => {
            result(HostStatus::Ok, Some(0), format!("copied {bytes} bytes to {dest}\n"), String::new())
        }
        (LineStatus::Failed, _) => {
            let reason = if msg.contains("Timed out after") || msg.contains("expected time frame") {
                format!("timed out (ansible's task timeout): {msg}")
            } else if stderr.is_empty() && msg != "non-zero return code" {
                msg
            } else {
                stderr
            };
            result(HostStatus::Failed, line.rc, stdout, reason)
        }
        (LineStatus::Unreachable, _) => unreachable_or_refused(name, &msg, elapsed),
        (LineStatus::Skipped, _) => failed(name, &format!("ansible skipped this host: {msg}"), Some(elapsed)),
    }
}

/// ansible calls every ssh failure "unreachable". A host that answered but whose key is unknown or changed, or
/// that refused our key, was reached: that is a failure to fix, and nothing ran on it.
fn unreachable_or_refused(name: &str, msg: &str, elapsed: Duration) -> HostResult {
    let changed = msg.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || msg.contains("has changed");
    if changed {
        let text = format!(
            "the host key of {name} has CHANGED from the one in known_hosts_file; nothing was run. If the change is \
             expected, remove the old entry and run `omserver hosts trust {name}`. ssh said: {msg}"
        );
        return failed(name, &text, Some(elapsed));
    }
    if msg.contains("Host key verification failed") || msg.contains("host key is known") {
        let text = format!(
            "the host key of {name} is not in known_hosts_file (host_key_policy = \"strict\"); nothing was run. \
             Record it with `omserver hosts trust {name}`. ssh said: {msg}"
        );
        return failed(name, &text, Some(elapsed));
    }
    if msg.contains("Permission denied") {
        let text = format!("{name} refused our key (check identity_file and the user); ssh said: {msg}");
        return failed(name, &text, Some(elapsed));
    }
    super::super::unreachable(name, msg, Some(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(json: &str) -> HostLine {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn lines_that_are_not_ours_are_ignored() {
        assert!(parse(b"[WARNING]: something").is_none());
        assert!(parse(b"{\"not\": \"ours\"}").is_none());
    }

    #[test]
    fn a_failed_command_keeps_rc_and_output() {
        let l = line(
            r#"{"host":"h0","status":"failed","rc":3,"stdout":"out","stderr":"err","msg":"non-zero return code"}"#,
        );
        let r = to_result("web1", l, &Action::Command, Duration::from_millis(5));
        assert_eq!(
            (r.status, r.rc, r.stdout.as_str(), r.stderr.as_str()),
            (HostStatus::Failed, ROption::RSome(3), "out", "err")
        );
        let l = line(r#"{"host":"h0","status":"failed","rc":2,"msg":"[Errno 2] No such file or directory: b'nope'"}"#);
        let r = to_result("web1", l, &Action::Command, Duration::ZERO);
        assert!(r.stderr.contains("No such file"), "{}", r.stderr);
    }

    #[test]
    fn cut_output_carries_the_marker() {
        let l = line(r#"{"host":"h0","status":"ok","rc":0,"stdout":"abc","stdout_cut":7}"#);
        let r = to_result("web1", l, &Action::Command, Duration::ZERO);
        assert_eq!(r.stdout.as_str(), "abc\n[output cut: 7 more bytes]");
    }

    #[test]
    fn host_key_problems_are_failures_and_dead_hosts_unreachable() {
        let l = line(r#"{"host":"h0","status":"unreachable","msg":"Host key verification failed."}"#);
        let r = to_result("web1", l, &Action::Command, Duration::ZERO);
        assert_eq!(r.status, HostStatus::Failed);
        assert!(r.stderr.contains("omserver hosts trust web1"), "{}", r.stderr);
        let l = line(
            r#"{"host":"h0","status":"unreachable","msg":"ssh: connect to host 127.0.0.2 port 2299: Connection refused"}"#,
        );
        assert_eq!(to_result("web1", l, &Action::Command, Duration::ZERO).status, HostStatus::Unreachable);
    }
}
