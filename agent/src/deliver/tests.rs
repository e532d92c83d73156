use std::cell::RefCell;

use super::*;
use crate::event::{Capture, Event};
use crate::history::HistoryLine;
use crate::identity::Identity;
use crate::spool::Spool;

/// Answers with `respond(events, gaps)` and records every request body.
struct FakeServer<F: Fn(&[Event], &[Gap]) -> Result<Answer>> {
    respond: F,
    requests: RefCell<Vec<serde_json::Value>>,
}

impl<F: Fn(&[Event], &[Gap]) -> Result<Answer>> Transport for FakeServer<F> {
    fn post(&self, body: Vec<u8>) -> Result<Answer> {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let events: Vec<Event> = serde_json::from_value(value["events"].clone()).unwrap();
        let gaps: Vec<Gap> = serde_json::from_value(value["gaps"].clone()).unwrap();
        self.requests.borrow_mut().push(value);
        (self.respond)(&events, &gaps)
    }
}

fn server<F: Fn(&[Event], &[Gap]) -> Result<Answer>>(respond: F) -> FakeServer<F> {
    FakeServer { respond, requests: RefCell::new(Vec::new()) }
}

fn ok(stored: usize) -> Result<Answer> {
    Ok(Answer { status: 200, body: format!(r#"{{"stored":{stored},"duplicates":0,"rejected":[]}}"#) })
}

fn status(code: u16) -> Result<Answer> {
    Ok(Answer { status: code, body: "nope".into() })
}

struct Fixture {
    _dir: tempfile::TempDir,
    spool: Spool,
    log: LocalLog,
}

fn fixture(max: u64, events: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 7, max).unwrap();
    let log = LocalLog::new(dir.path().join("7.log"));
    for i in 1..=events {
        let capture = Capture {
            line: HistoryLine {
                history_id: i,
                user: "root".into(),
                time: "2026-11-24 10:00:00".into(),
                command: format!("cmd {i}"),
            },
            identity: Identity { uid: 7, login_user: "alice".into(), tty: "/dev/pts/3".into(), session: None },
            ip: String::new(),
        };
        spool.record(capture).unwrap();
    }
    Fixture { _dir: dir, spool, log }
}

fn options(batch_max: usize) -> FlushOptions {
    FlushOptions { wait_for_lock: true, batch_max }
}

fn log_text(f: &Fixture) -> String {
    std::fs::read_to_string(f.log.path()).unwrap_or_default()
}

#[test]
fn success_sends_in_batches_fills_the_ip_and_empties_the_spool() {
    let f = fixture(100, 5);
    let server = server(|events, _| ok(events.len()));
    let report = flush(&f.spool, &server, "192.0.2.7", options(2), &f.log).unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!((report.batches, report.stored, report.remaining), (3, 5, 0));
    let requests = server.requests.borrow();
    let seqs: Vec<u64> = requests
        .iter()
        .flat_map(|r| r["events"].as_array().unwrap().clone())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(requests[0]["events"][0]["ip"], "192.0.2.7");
    assert_eq!(requests[0]["events"][0]["command"], "cmd 1");
    assert_eq!(requests[0]["events"][0]["login_user"], "alice");
    assert!(!f.spool.pending().unwrap());
    assert!(f.spool.status().unwrap().state.last_delivery_at.is_some());
}

#[test]
fn rejected_events_are_removed_and_logged() {
    let f = fixture(100, 2);
    let server = server(|_, _| {
        Ok(Answer {
            status: 200,
            body: r#"{"stored":1,"duplicates":0,"rejected":[{"seq":2,"reason":"command too long"}]}"#.into(),
        })
    });
    let report = flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert_eq!((report.stored, report.rejected, report.remaining), (1, 1, 0));
    let log = log_text(&f);
    assert!(log.contains("rejected by the server (command too long)"), "{log}");
    assert!(log.contains("seq=2") && log.contains("command=cmd 2"), "{log}");
}

#[test]
fn refused_token_keeps_everything() {
    let f = fixture(100, 3);
    let server = server(|_, _| status(401));
    let report = flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert!(matches!(report.error, Some(Error::TokenRefused(401))));
    assert_eq!(report.remaining, 3);
    assert_eq!(f.spool.status().unwrap().state.last_error.as_deref(), Some("token refused (HTTP 401)"));
    assert_eq!(server.requests.borrow().len(), 1, "stops after the first refusal");
    // The error is logged once, not on every retry.
    flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert_eq!(log_text(&f).matches("token refused").count(), 1);
}

#[test]
fn server_errors_timeouts_and_bad_acks_keep_everything() {
    for answer in [
        status(500),
        status(503),
        status(404),
        Ok(Answer { status: 200, body: "OK".into() }),
        Err(Error::Transport { server: "http://x".into(), message: "timed out".into() }),
    ] {
        let f = fixture(100, 2);
        let answer = RefCell::new(Some(answer));
        let server = server(|_, _| answer.borrow_mut().take().unwrap());
        let report = flush(&f.spool, &server, "", options(500), &f.log).unwrap();
        assert!(report.error.is_some());
        assert_eq!(report.remaining, 2);
        assert!(f.spool.status().unwrap().state.last_error.is_some());
    }
}

#[test]
fn payload_too_large_halves_the_batch() {
    let f = fixture(100, 7);
    let server = server(|events, _| if events.len() > 2 { status(413) } else { ok(events.len()) });
    let report = flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert!(report.error.is_none());
    assert_eq!((report.stored, report.remaining), (7, 0));
    let sizes: Vec<usize> = server.requests.borrow().iter().map(|r| r["events"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![7, 3, 1, 1, 1, 1, 1, 1, 1], "7 → 3 → 1, then batches of one");
}

#[test]
fn a_single_event_too_large_becomes_a_reported_gap() {
    let f = fixture(100, 3);
    let server =
        server(|events, _| if events.iter().any(|e| e.command == "cmd 2") { status(413) } else { ok(events.len()) });
    let report = flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!((report.stored, report.too_large, report.remaining, report.pending_gaps), (2, 1, 0, 0));
    let requests = server.requests.borrow();
    let reported: Vec<&serde_json::Value> = requests.iter().flat_map(|r| r["gaps"].as_array().unwrap()).collect();
    assert_eq!(reported.len(), 1);
    assert_eq!((reported[0]["from_seq"].as_u64(), reported[0]["to_seq"].as_u64()), (Some(2), Some(2)));
    assert_eq!(reported[0]["reason"], "event too large");
    assert!(log_text(&f).contains("command=cmd 2"));
}

#[test]
fn lost_events_are_reported_as_gaps_until_acknowledged() {
    let f = fixture(2, 4); // seq 3 and 4 did not fit
    let refuse = RefCell::new(true);
    let server = server(|events, _| if *refuse.borrow() { status(503) } else { ok(events.len()) });
    flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    *refuse.borrow_mut() = false;
    let report = flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert_eq!((report.gaps_reported, report.pending_gaps), (1, 0));
    let requests = server.requests.borrow();
    for request in requests.iter() {
        assert_eq!(request["gaps"][0]["from_seq"], 3);
        assert_eq!(request["gaps"][0]["to_seq"], 4);
        assert_eq!(request["gaps"][0]["reason"], "spool full");
    }
    // Gap alone (spool already empty): still sent once more? No: acknowledged, so nothing further goes out.
    let before = requests.len();
    drop(requests);
    flush(&f.spool, &server, "", options(500), &f.log).unwrap();
    assert_eq!(server.requests.borrow().len(), before);
}

#[test]
fn a_running_flusher_is_left_alone() {
    let f = fixture(100, 1);
    let _held = f.spool.flush_lock(false).unwrap().unwrap();
    let server = server(|events, _| ok(events.len()));
    let report = flush(&f.spool, &server, "", FlushOptions { wait_for_lock: false, batch_max: 500 }, &f.log).unwrap();
    assert!(report.skipped);
    assert!(server.requests.borrow().is_empty());
}

#[test]
fn server_addresses_resolve() {
    assert_eq!(server_socket_addr("http://127.0.0.1:8080/x"), Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(server_socket_addr("https://127.0.0.1"), Some("127.0.0.1:443".parse().unwrap()));
    assert_eq!(server_socket_addr("http://[::1]:9"), Some("[::1]:9".parse().unwrap()));
    assert_eq!(server_socket_addr("ftp://127.0.0.1"), None);
    assert_eq!(detect_ip("http://127.0.0.1:8080"), Some("127.0.0.1".parse().unwrap()));
}

#[test]
fn a_large_backlog_goes_out_once_in_order() {
    let f = fixture(100_000, 0);
    for i in 1..=2500u64 {
        let capture = Capture {
            line: HistoryLine {
                history_id: i,
                user: "root".into(),
                time: "2026-11-24 10:00:00".into(),
                command: format!("{i} {}", "y".repeat(2000)),
            },
            identity: Identity { uid: 7, login_user: "alice".into(), tty: String::new(), session: None },
            ip: String::new(),
        };
        f.spool.record(capture).unwrap();
    }
    let seen = RefCell::new(Vec::new());
    let server = server(|events, _| {
        seen.borrow_mut().extend(events.iter().map(|e| e.seq));
        ok(events.len())
    });
    let report = flush(&f.spool, &server, "", options(200), &f.log).unwrap();
    assert!(report.error.is_none());
    assert_eq!((report.stored, report.batches, report.remaining), (2500, 13, 0));
    assert_eq!(*seen.borrow(), (1..=2500).collect::<Vec<u64>>(), "each event once, in spool order");
    assert_eq!(std::fs::metadata(f.spool.path()).unwrap().len(), 0);
}
