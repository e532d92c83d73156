//! Audit alert rules over the API: checked, stored, applied to the stored events and the live view, counted per
//! rule in /metrics, removable.

mod common;

use common::{cli, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn agent_token(server: &Server) -> String {
    let out = cli(server, &["hosts", "token", "localhost"]);
    assert!(out.status.success(), "{out:?}");
    out.stdout.trim().to_owned()
}

fn send(server: &Server, token: &str, seq: i64, user: &str, command: &str) {
    let event = json!({ "stream": "alerts", "seq": seq, "history_id": seq, "user": user, "login_user": "",
                        "uid": 0, "tty": "/dev/pts/1", "ip": "127.0.0.1", "time": "2026-12-02 10:00:00",
                        "command": command });
    let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(token);
    let (status, body) = server.send(request.json(&json!({ "events": [event] })));
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Every stored event's command with the rules it matched, oldest first.
fn flagged(server: &Server) -> Vec<(String, Value)> {
    let (status, body) = server.get("/api/audit/events?after=0&limit=100");
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["command"].as_str().unwrap().to_owned(), e["alerts"].clone()))
        .collect()
}

fn alert_count(server: &Server, rule: &str) -> u64 {
    let response = server.client.get(format!("{}/metrics", server.base)).bearer_auth(&server.token).send().unwrap();
    let text = response.text().unwrap();
    let prefix = format!("omserver_audit_alerts_total{{rule=\"{rule}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn matching_events_are_flagged_and_counted_per_rule() {
    let server = Server::start();
    let (status, body) =
        server.post("/api/audit/rules", &json!({ "name": "rm-root", "pattern": r"rm\s+-rf\s+/(\s|$)" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server.post(
        "/api/audit/rules",
        &json!({ "name": "pipe-to-shell", "pattern": r"curl .*\| *sh", "host": "localhost", "user": "deploy" }),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let token = agent_token(&server);
    send(&server, &token, 1, "root", "rm -rf /");
    send(&server, &token, 2, "root", "rm -rf /tmp/build");
    send(&server, &token, 3, "root", "curl https://get.example | sh");
    send(&server, &token, 4, "deploy", "curl https://get.example | sh");
    assert_eq!(
        flagged(&server),
        [
            ("rm -rf /".to_owned(), json!(["rm-root"])),
            ("rm -rf /tmp/build".to_owned(), json!([])),
            ("curl https://get.example | sh".to_owned(), json!([])),
            ("curl https://get.example | sh".to_owned(), json!(["pipe-to-shell"])),
        ]
    );
    assert_eq!(alert_count(&server, "rm-root"), 1);
    assert_eq!(alert_count(&server, "pipe-to-shell"), 1);

    let (_, rules) = server.get("/api/audit/rules");
    let limited = rules.as_array().unwrap().iter().find(|r| r["name"] == "pipe-to-shell").unwrap();
    assert_eq!(limited["host"], "localhost", "a rule limited to a host names it: {limited}");
    assert!(limited["host_id"].is_i64(), "host_id stays for compatibility: {limited}");
    let any = rules.as_array().unwrap().iter().find(|r| r["name"] == "rm-root").unwrap();
    assert!(any["host"].is_null() && any["host_id"].is_null(), "{any}");
    let id = rules.as_array().unwrap().iter().find(|r| r["name"] == "rm-root").unwrap()["id"].as_i64().unwrap();
    let response = server.client.delete(format!("{}/api/audit/rules/{id}", server.base)).bearer_auth(&server.token);
    assert_eq!(server.send(response).0, StatusCode::NO_CONTENT);
    send(&server, &token, 5, "root", "rm -rf / ");
    assert_eq!(flagged(&server).last().unwrap().1, json!([]), "a deleted rule flags nothing");
    assert_eq!(alert_count(&server, "rm-root"), 1);
}

#[test]
fn bad_rules_are_refused_with_the_field_and_only_admins_add_them() {
    let server = Server::start();
    let cases = [
        (json!({ "name": "x", "pattern": "(unclosed" }), "pattern"),
        (json!({ "name": "has space", "pattern": "x" }), "name"),
        (json!({ "name": "x", "pattern": "x", "host": "nowhere" }), "host"),
    ];
    for (rule, field) in cases {
        let (status, body) = server.post("/api/audit/rules", &rule);
        assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{rule}: {body}");
    }
    assert_eq!(server.post("/api/audit/rules", &json!({ "name": "dup", "pattern": "x" })).0, StatusCode::CREATED);
    assert_eq!(server.post("/api/audit/rules", &json!({ "name": "dup", "pattern": "y" })).0, StatusCode::CONFLICT);

    let out = cli(&server, &["token", "create", "looker", "--role", "viewer"]);
    let viewer = out.stdout.trim().to_owned();
    let add = server.client.post(format!("{}/api/audit/rules", server.base)).bearer_auth(&viewer);
    assert_eq!(server.send(add.json(&json!({ "name": "v", "pattern": "x" }))).0, StatusCode::FORBIDDEN);
    let list = server.client.get(format!("{}/api/audit/rules", server.base)).bearer_auth(&viewer);
    assert_eq!(server.send(list).0, StatusCode::OK, "viewers see what is watched for");
}
