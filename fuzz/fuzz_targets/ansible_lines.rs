//! ansible's JSON lines (`host/src/backends/ansible/results.rs`, written by `omserver_jsonl.py`).
//!
//! Properties: any line is ours or `None`, and any line of ours becomes a result for the host it names, never a
//! panic; a line the callback writes (any status, output with its cut counts) reads back with the host alias it
//! names, its status and return code, and its output with the cut marker, for a command; a copy reports what it
//! copied.

#![no_main]

mod common;

use std::time::Duration;

use abi_stable::std_types::ROption;
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::fuzzing::{ansible_index_of, ansible_result, parse_ansible_line, Action};
use omserver_plugin_api::HostStatus;

fuzz_target!(|data: &[u8]| {
    if let Some(line) = parse_ansible_line(data) {
        let _ = ansible_index_of(&line.host);
        let result = ansible_result("web1", line, &Action::Command, Duration::from_millis(3));
        assert_eq!(result.host.as_str(), "web1");
    }
    if let Some(line) = parse_ansible_line(data) {
        let result = ansible_result("web1", line, &Action::Copy { dest: "/tmp/x", bytes: 9 }, Duration::ZERO);
        assert_eq!(result.host.as_str(), "web1");
    }
    let _ = written_then_read(&mut Unstructured::new(data));
});

fn written_then_read(u: &mut Unstructured<'_>) -> Result<()> {
    let index = u.arbitrary::<u16>()? as usize;
    let status = *u.choose(&["ok", "failed", "unreachable", "skipped"])?;
    let rc: Option<i32> = u.arbitrary()?;
    let out = |u: &mut Unstructured<'_>| common::text(u, "ab\n\"\\é{}", 30);
    let (stdout, stderr, msg) = (out(u)?, out(u)?, out(u)?);
    let (stdout_cut, stderr_cut) = (u.int_in_range(0..=3u64)?, u.int_in_range(0..=3u64)?);
    let mut line = serde_json::json!({ "host": format!("h{index}"), "status": status, "stdout": stdout,
        "stderr": stderr, "msg": msg, "stdout_cut": stdout_cut, "stderr_cut": stderr_cut });
    if let Some(rc) = rc {
        line["rc"] = rc.into();
    }
    let bytes = serde_json::to_vec(&line).unwrap();
    let parsed = parse_ansible_line(&bytes).unwrap_or_else(|| panic!("our own line was not read: {line}"));
    assert_eq!(ansible_index_of(&parsed.host), Some(index));
    let result = ansible_result("web1", parsed, &Action::Command, Duration::from_millis(1500));
    let marked = |text: &str, cut: u64| {
        if cut > 0 {
            format!("{text}\n[output cut: {cut} more bytes]")
        } else {
            text.to_owned()
        }
    };
    match status {
        "ok" => {
            assert_eq!(result.status, HostStatus::Ok);
            assert_eq!(result.rc, ROption::RSome(rc.unwrap_or(0)));
            assert_eq!(result.stdout.as_str(), marked(&stdout, stdout_cut));
            assert_eq!(result.stderr.as_str(), marked(&stderr, stderr_cut));
            assert_eq!(result.duration_ms, 1500);
        }
        "failed" => {
            assert_eq!(result.status, HostStatus::Failed);
            assert_eq!(result.rc, rc.map_or(ROption::RNone, ROption::RSome));
            assert_eq!(result.stdout.as_str(), marked(&stdout, stdout_cut));
        }
        // Unreachable, or a failure when ssh reached the host but refused its key; skipped is a failure.
        _ => assert!(matches!(result.status, HostStatus::Unreachable | HostStatus::Failed)),
    }
    let copy = parse_ansible_line(&bytes).unwrap();
    let result = ansible_result("web1", copy, &Action::Copy { dest: "/etc/x", bytes: 42 }, Duration::ZERO);
    if status == "ok" {
        assert_eq!((result.status, result.stdout.as_str()), (HostStatus::Ok, "copied 42 bytes to /etc/x\n"));
    }
    Ok(())
}
