//! Notification delivery under faults, through the real server: a server SIGKILLed after a job failed and before
//! its notification went out sends it after the restart, once; 1 000 alert matches in 10 s make at most one
//! message per window, with the true counts; a receiver that stays down makes the delivery fail at its deadline,
//! visibly, and a full outbox refuses more rather than grow; a failed schedule fire is notified.

mod common;

use std::{
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use common::{
    cli,
    notifying::{created, deliveries, failing_job},
    receiver::Receiver,
    Server,
};

fn server(extra: &str) -> Server {
    common::notifying::server(extra, ["127.0.0.141", "127.0.0.142"])
}
use reqwest::StatusCode;
use serde_json::{json, Value};

fn webhook(server: &Server, name: &str, url: &str, event: &str, filter: Value) -> i64 {
    let id = created(server, "/api/notify/channels", json!({ "name": name, "kind": "webhook", "url": url }))["id"]
        .as_i64()
        .unwrap();
    created(server, "/api/notify/subscriptions", json!({ "channel": id, "event": event, "filter": filter }));
    id
}

fn wait_deliveries(server: &Server, query: &str, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list = deliveries(server, query);
        if check(&list) {
            return list;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {list:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_notification_pending_at_sigkill_is_sent_after_the_restart_once() {
    // One message a minute per channel: after the test message, the job's notification must wait.
    let mut server = server("[notify]\nrate_per_minute = 1\n");
    let receiver = Receiver::start(&[200]);
    let channel = webhook(&server, "hook", &receiver.url, "job.finished", json!({}));
    let (status, test) = server.post(&format!("/api/notify/channels/{channel}/test"), &json!({}));
    assert_eq!((status, test["status"].as_str()), (StatusCode::OK, Some("sent")), "{test}");

    let job = failing_job(&server);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.received().len(), 1, "only the test message went out before the kill");
    server.restart();

    let about_job = |r: &common::receiver::Received| r.json()["data"]["job"] == job;
    receiver.wait_for(Duration::from_secs(30), "the job's notification after the restart", |r| r.iter().any(about_job));
    thread::sleep(Duration::from_secs(3));
    let sent: Vec<_> = receiver.received().into_iter().filter(about_job).collect();
    assert_eq!(sent.len(), 1, "sent once");
}

#[test]
fn an_alert_storm_makes_one_message_per_window_with_true_counts() {
    let server = server("");
    let receiver = Receiver::start(&[200]);
    created(&server, "/api/audit/rules", json!({ "name": "storm", "pattern": "^storm " }));
    webhook(&server, "hook", &receiver.url, "audit.alert", json!({ "rule": "storm", "window_secs": 3 }));
    let out = cli(&server, &["hosts", "token", "l1"]);
    assert!(out.status.success(), "{out:?}");
    let token = out.stdout.trim().to_owned();

    // 1 000 matches in 10 s: 20 batches of 50, every half second (and a quiet command between each).
    let started = Instant::now();
    let mut seq = 0;
    for batch in 0..20 {
        let mut events = Vec::new();
        for n in 0..51 {
            seq += 1;
            let command = if n == 50 { format!("ls {seq}") } else { format!("storm {batch}.{n}") };
            events.push(json!({ "stream": "s", "seq": seq, "history_id": seq, "user": "root", "login_user": "",
                                "uid": 0, "tty": "/dev/pts/1", "ip": "127.0.0.141", "time": "2026-12-03 10:00:00",
                                "command": command }));
        }
        let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(&token);
        let (status, body) = server.send(request.json(&json!({ "events": events })));
        assert_eq!(status, StatusCode::OK, "{body}");
        let next = started + Duration::from_millis(500 * (batch + 1));
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let span = started.elapsed();
    let total = |r: &[common::receiver::Received]| r.iter().map(|m| m.json()["count"].as_i64().unwrap()).sum::<i64>();
    let waited = Instant::now();
    while total(&receiver.received()) < 1000 && waited.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(100));
    }
    let got = receiver.received();
    let log: Vec<_> =
        deliveries(&server, "event=audit.alert").iter().map(|d| (d["count"].clone(), d["status"].clone())).collect();
    assert_eq!(total(&got), 1000, "the counts add up to the matches; deliveries: {log:?}");
    // The first at once, then at most one per 3 s window.
    let windows = (span.as_secs_f64() / 3.0).ceil() as usize + 2;
    assert!(got.len() <= windows, "{} messages for {span:?}", got.len());
    for pair in got.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(2700), "messages closer than the window");
    }
    // The first matches are told at once (those that came in the same batch counted with them).
    assert!(got[0].at - started < Duration::from_secs(2), "the first message waited {:?}", got[0].at - started);
    let first = got[0].json();
    assert_eq!(first["data"]["command"], "storm 0.0", "{first}");
    let last = got.last().unwrap().json();
    assert!(last["title"].as_str().unwrap().contains("more"), "{last}");
}

#[test]
fn a_receiver_that_stays_down_fails_the_delivery_and_the_outbox_stays_bounded() {
    let server = server("[notify]\nretry_base_secs = 1\ngive_up_secs = 4\nmax_pending_per_channel = 2\n");
    let down = Receiver::start(&[503]);
    webhook(&server, "down", &down.url, "job.finished", json!({}));
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let unreachable = webhook(&server, "closed", &closed, "job.finished", json!({}));

    failing_job(&server);
    let failed = wait_deliveries(&server, "status=failed", "the delivery fails at its deadline", |l| {
        l.iter().any(|d| d["channel_name"] == "down")
    });
    let delivery = failed.iter().find(|d| d["channel_name"] == "down").unwrap();
    assert!(delivery["attempts"].as_i64().unwrap() >= 2, "{delivery}");
    assert!(delivery["last_error"].as_str().unwrap().contains("gave up after"), "{delivery}");
    assert!(delivery["last_error"].as_str().unwrap().contains("503"), "{delivery}");
    let attempts = down.received().len();
    thread::sleep(Duration::from_secs(3));
    assert_eq!(down.received().len(), attempts, "no attempt after the deadline");

    // Sent again by hand: pending, with a fresh deadline and the attempts counted on. The receiver still answers
    // 503, so it fails again. (That only a failed delivery can be sent again is checked in notify.rs, on a sent
    // one: here the deliverer may already have failed it again before a second request.)
    let (status, again) = server.post(&format!("/api/notify/deliveries/{}/resend", delivery["id"]), &json!({}));
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "pending", "{again}");
    let before = delivery["attempts"].as_i64().unwrap();
    wait_deliveries(&server, "status=failed", "the resent delivery is tried once more and fails", |l| {
        l.iter().any(|d| d["id"] == delivery["id"] && d["attempts"].as_i64().is_some_and(|n| n > before))
    });
    assert!(down.received().len() > attempts, "tried again after the resend");

    // The closed port's channel holds 2 waiting at most: more fail at once, visibly.
    for _ in 0..3 {
        server.submit(9008, &["l1"], json!({ "seconds": 0 }));
    }
    let query = format!("channel={unreachable}");
    let list = wait_deliveries(&server, &query, "four deliveries to the closed port", |l| l.len() >= 4);
    let full: Vec<_> =
        list.iter().filter(|d| d["last_error"].as_str().is_some_and(|e| e.contains("outbox is full"))).collect();
    assert!(!full.is_empty(), "{list:?}");
    assert!(full.iter().all(|d| d["status"] == "failed" && d["attempts"] == 0), "{full:?}");
}

#[test]
fn a_failed_schedule_fire_is_notified() {
    let server = server("");
    let receiver = Receiver::start(&[200]);
    let template = created(
        &server,
        "/api/templates",
        json!({ "name": "nightly", "module": 9008, "params": { "seconds": 0 }, "targets": { "hosts": ["l1"] } }),
    );
    created(
        &server,
        "/api/schedules",
        json!({ "name": "every-2s", "template": template["id"], "cron": "*/2 * * * * *" }),
    );
    webhook(&server, "hook", &receiver.url, "schedule.fire", json!({ "schedule": "every-2s" }));
    // The saved job's only host goes away: its next fire fails.
    let (_, hosts) = server.get("/api/hosts");
    let l1 = hosts.as_array().unwrap().iter().find(|h| h["name"] == "l1").unwrap()["id"].clone();
    let response = server.client.delete(format!("{}/api/hosts/{l1}", server.base)).bearer_auth(&server.token);
    let (status, body) = server.send(response);
    assert!(status.is_success(), "{body}");
    let got = receiver.wait_for(Duration::from_secs(20), "a failed fire", |r| !r.is_empty());
    let body = got[0].json();
    assert_eq!(body["event"], "schedule.fire", "{body}");
    assert_eq!(body["data"]["outcome"], "failed", "{body}");
    assert_eq!(body["data"]["schedule"], "every-2s");
    assert!(body["data"]["reason"].as_str().unwrap_or_default().contains("l1"), "{body}");
}
