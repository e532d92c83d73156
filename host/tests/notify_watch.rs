//! What the notifier watches by itself, through the real server: a module file rejected in plugins.d, a backend
//! that is unhealthy, and an audit chain that no longer verifies (a stored row changed behind the server's back)
//! each reach a subscribed webhook once.

mod common;

use std::time::Duration;

use common::{cli, receiver::Receiver, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn subscribe(server: &Server, url: &str, events: &[&str]) {
    let (status, channel) =
        server.post("/api/notify/channels", &json!({ "name": "hook", "kind": "webhook", "url": url }));
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    for event in events {
        let body = json!({ "channel": channel["id"], "event": event });
        let (status, answer) = server.post("/api/notify/subscriptions", &body);
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
}

fn of_event(received: &[common::receiver::Received], event: &str) -> Vec<Value> {
    received.iter().map(|r| r.json()).filter(|b| b["event"] == event).collect()
}

#[test]
fn a_rejected_module_and_an_unhealthy_backend_are_told_once() {
    let extra = "[notify]\ncheck_every_secs = 1\n";
    let mut server = Server::start_with(Options { seed: vec![], extra_config: extra.into(), ..Options::default() });
    let receiver = Receiver::start(&[200]);
    subscribe(&server, &receiver.url, &["module.rejected", "backend.unhealthy"]);
    // A broken ansible backend from the next start on: the start's first check finds it unhealthy with the
    // subscription already there. (A fact recorded before anyone subscribed is told to no one, so configuring it
    // broken from the first start made this test race the subscription.)
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let broken = "\n[backends.ansible]\nidentity_file = \"/nonexistent/omserver-test-key\"\n";
    std::fs::write(server.config_path(), config + broken).unwrap();
    server.restart();
    std::fs::write(server.plugins_dir().join("Mid_4242.so"), b"not a shared library").unwrap();

    let got = receiver.wait_for(Duration::from_secs(30), "both notices", |r| {
        !of_event(r, "module.rejected").is_empty() && !of_event(r, "backend.unhealthy").is_empty()
    });
    let rejected = &of_event(&got, "module.rejected")[0];
    assert_eq!(rejected["data"]["file"], "Mid_4242.so", "{rejected}");
    assert!(!rejected["data"]["reason"].as_str().unwrap().is_empty(), "{rejected}");
    let unhealthy = &of_event(&got, "backend.unhealthy")[0];
    assert_eq!(unhealthy["data"]["backend"], "ansible", "{unhealthy}");
    assert!(unhealthy["data"]["detail"].as_str().unwrap().contains("/nonexistent/omserver-test-key"), "{unhealthy}");

    // Still wrong a few checks later: not news.
    std::thread::sleep(Duration::from_secs(4));
    let again = receiver.received();
    assert_eq!(of_event(&again, "module.rejected").len(), 1);
    assert_eq!(of_event(&again, "backend.unhealthy").len(), 1);
}

#[test]
fn a_chain_that_no_longer_verifies_is_told() {
    let server = Server::start_with(Options {
        seed: vec![],
        extra_config: "[notify]\nverify_every_secs = 1\n".into(),
        ..Options::default()
    });
    let receiver = Receiver::start(&[200]);
    subscribe(&server, &receiver.url, &["audit.verify"]);
    let out = cli(&server, &["hosts", "token", "localhost"]);
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Value> = (1..=3)
        .map(|seq| {
            json!({ "stream": "s", "seq": seq, "history_id": seq, "user": "root", "login_user": "", "uid": 0,
                    "tty": "/dev/pts/1", "ip": "127.0.0.1", "time": "2026-12-03 10:00:00", "command": format!("ls {seq}") })
        })
        .collect();
    let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(out.stdout.trim());
    let (status, body) = server.send(request.json(&json!({ "events": events })));
    assert_eq!(status, StatusCode::OK, "{body}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(of_event(&receiver.received(), "audit.verify").is_empty(), "an intact chain is not news");

    let db = rusqlite::Connection::open(server.dir.path().join("omserver.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed =
        db.execute("UPDATE server_history SET history_command = 'rm -rf /evidence' WHERE history_id = 2", []).unwrap();
    assert_eq!(changed, 1);
    let got = receiver
        .wait_for(Duration::from_secs(20), "the verification notice", |r| !of_event(r, "audit.verify").is_empty());
    let notice = &of_event(&got, "audit.verify")[0];
    assert!(notice["data"]["findings"].as_u64().unwrap() >= 1, "{notice}");
    assert!(notice["title"].as_str().unwrap().contains("problem"), "{notice}");
}
