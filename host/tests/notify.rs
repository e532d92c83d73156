//! Notifications through the real server: a webhook retried after two 500s and signed with its secret, mail for a
//! failed job through a real SMTP server (the testenv's aiosmtpd), hostile text arriving inert in Slack and mail,
//! bad input refused by field. Delivery under faults (SIGKILL, storms, a receiver that stays down) is in
//! notify_delivery.rs.

mod common;

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use common::{
    notifying::{created, deliveries, failing_job},
    receiver::Receiver,
    testenv::testenv,
    Server,
};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PUBLIC_URL: &str = "https://omserver.example.test";

fn server(extra: &str) -> Server {
    common::notifying::server(&format!("public_url = \"{PUBLIC_URL}\"\n{extra}"), ["127.0.0.131", "127.0.0.132"])
}

fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    signature == format!("sha256={expected}")
}

#[test]
fn a_webhook_answering_500_twice_gets_the_notification_on_the_third_attempt_signed() {
    let server = server("[notify]\nretry_base_secs = 1\n");
    let receiver = Receiver::start(&[500, 500, 200]);
    let channel =
        created(&server, "/api/notify/channels", json!({ "name": "ops-hook", "kind": "webhook", "url": receiver.url }));
    let secret = channel["secret"].as_str().expect("the secret, once").to_owned();
    let id = channel["id"].as_i64().unwrap();
    created(
        &server,
        "/api/notify/subscriptions",
        json!({ "channel": id, "event": "job.finished", "filter": { "status": ["failed"] } }),
    );

    let (_, listed) = server.get("/api/notify/channels");
    assert!(!listed.to_string().contains(&secret), "the secret is never shown again: {listed}");

    let job = failing_job(&server);
    let got = receiver.wait_for(Duration::from_secs(30), "three attempts", |r| r.len() >= 3);
    let ids: Vec<&str> = got.iter().map(|r| r.headers["x-omserver-delivery"].as_str()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "every attempt carries the same id: {ids:?}");
    for request in &got {
        let signature = &request.headers["x-omserver-signature"];
        assert!(verify(&secret, &request.headers["x-omserver-timestamp"], &request.body, signature), "signature");
        assert!(!verify("another secret", &request.headers["x-omserver-timestamp"], &request.body, signature));
    }
    let body = got[2].json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], ids[0]);
    assert_eq!(body["event"], "job.finished");
    assert_eq!(body["data"]["job"], job);
    assert_eq!(body["data"]["counts"], json!({ "failed": 1, "ok": 1 }));
    assert_eq!(body["data"]["not_ok"][0]["hosts"], json!(["l2"]));
    assert_eq!(body["link"], format!("{PUBLIC_URL}/jobs/{job}"));
    assert!(got[1].at - got[0].at >= Duration::from_millis(800), "the retries back off");

    let log = deliveries(&server, "event=job.finished");
    assert_eq!(log.len(), 1, "{log:?}");
    let settled = Instant::now();
    let delivery = loop {
        let (_, d) = server.get(&format!("/api/notify/deliveries/{}", log[0]["id"]));
        if d["status"] == "sent" || settled.elapsed() > Duration::from_secs(5) {
            break d;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(delivery["status"], "sent", "{delivery}");
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    let attempts = delivery["log"].as_array().unwrap();
    assert_eq!(attempts.iter().map(|a| a["ok"].as_bool().unwrap()).collect::<Vec<_>>(), [false, false, true]);
    assert!(attempts[0]["answer"].as_str().unwrap().contains("500"), "{delivery}");
    let (status, _) = server.post(&format!("/api/notify/deliveries/{}/resend", delivery["id"]), &json!({}));
    assert_eq!(status, StatusCode::CONFLICT, "only a failed delivery is sent again");

    // A succeeded job does not match the filter.
    let ok = server.submit(9008, &["l1"], json!({ "seconds": 0 }));
    server.wait_job(ok, Duration::from_secs(30));
    thread::sleep(Duration::from_secs(2));
    assert_eq!(deliveries(&server, "event=job.finished").len(), 1, "only failed jobs were asked for");
}

#[test]
fn send_a_test_answers_with_the_receivers_answer() {
    let server = server("");
    let receiver = Receiver::start(&[200]);
    let channel =
        created(&server, "/api/notify/channels", json!({ "name": "hook", "kind": "webhook", "url": receiver.url }));
    let (status, delivery) = server.post(&format!("/api/notify/channels/{}/test", channel["id"]), &json!({}));
    assert_eq!(status, StatusCode::OK, "{delivery}");
    assert_eq!(delivery["status"], "sent", "{delivery}");
    assert_eq!(receiver.received()[0].json()["event"], "test");

    let down = created(
        &server,
        "/api/notify/channels",
        json!({ "name": "nowhere", "kind": "webhook", "url": "http://127.0.0.1:9/x" }),
    );
    let (status, delivery) = server.post(&format!("/api/notify/channels/{}/test", down["id"]), &json!({}));
    assert_eq!(status, StatusCode::OK, "{delivery}");
    assert_eq!(delivery["status"], "pending", "retried later: {delivery}");
    assert!(delivery["last_error"].as_str().unwrap_or_default().contains("connect"), "{delivery}");
}

/// Waits for the mail the sink received for `to`, and returns its raw text.
fn mail_for(maildir: &Path, to: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        for entry in std::fs::read_dir(maildir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let envelope: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                if envelope["rcpt_tos"] == json!([to]) {
                    return std::fs::read_to_string(path.with_extension("eml")).unwrap();
                }
            }
        }
        assert!(started.elapsed() < limit, "no mail for {to} within {limit:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Quoted-printable soft breaks and escapes undone (enough for the ASCII text checked here).
fn unfold(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '=' {
            let hex: String = chars.clone().take(2).collect();
            if let Ok(byte) = u8::from_str_radix(&hex, 16) {
                out.push(byte as char);
                chars.next();
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn unique_address(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{}-{nanos}@example.org", std::process::id())
}

fn email_channel(server: &Server, name: &str, to: &str) -> i64 {
    let smtp = testenv().smtp;
    assert!(smtp.port != 0, "the testenv's smtp piece is not up: cargo xtask testenv up venv smtp");
    let body = json!({ "name": name, "kind": "email", "to": [to], "from": "omserver@example.org",
                       "smtp": { "host": smtp.host, "port": smtp.port, "tls": "none" } });
    created(server, "/api/notify/channels", body)["id"].as_i64().unwrap()
}

#[test]
fn a_failed_job_is_mailed_through_a_real_smtp_server() {
    let server = server("");
    let to = unique_address("oncall");
    let channel = email_channel(&server, "oncall-mail", &to);
    created(&server, "/api/notify/subscriptions", json!({ "channel": channel, "event": "job.finished" }));
    let job = failing_job(&server);
    let mail = mail_for(&testenv().smtp.maildir, &to, Duration::from_secs(30));
    let subject = mail.lines().find(|l| l.starts_with("Subject: ")).expect("a subject");
    assert!(subject.contains(&format!("Job {job} failed")), "{subject}");
    assert!(subject.contains("on 2 hosts"), "{subject}");
    let text = unfold(&mail);
    assert!(text.contains("1 failed, 1 ok"), "counts by status: {text}");
    assert!(text.contains(&format!("{PUBLIC_URL}/jobs/{job}")), "a link to the job: {text}");
    assert!(text.contains("failed (1): l2"), "the hosts not ok: {text}");
    assert!(mail.contains("Content-Type: text/html"), "an HTML part beside the text");
}

#[test]
fn hostile_text_arrives_inert_in_slack_and_mail() {
    let server = server("");
    let slack = Receiver::start(&[200]);
    let to = unique_address("inert");
    let mail_channel = email_channel(&server, "mail", &to);
    let slack_channel =
        created(&server, "/api/notify/channels", json!({ "name": "chat", "kind": "slack", "url": slack.url }));
    let (_, listed) = server.get("/api/notify/channels");
    let shown = listed.as_array().unwrap().iter().find(|c| c["name"] == "chat").unwrap();
    assert!(!shown["url"].as_str().unwrap().contains("/hook"), "a Slack URL is shown by host only: {shown}");
    created(&server, "/api/audit/rules", json!({ "name": "inert", "pattern": "x-inert" }));
    for channel in [mail_channel, slack_channel["id"].as_i64().unwrap()] {
        created(
            &server,
            "/api/notify/subscriptions",
            json!({ "channel": channel, "event": "audit.alert", "filter": { "rule": "inert" } }),
        );
    }
    let out = common::cli(&server, &["hosts", "token", "l1"]);
    assert!(out.status.success(), "{out:?}");
    let command = "x-inert <script>alert(1)</script> <!channel> @here ``` \r\nBcc: evil@example.org";
    let event = json!({ "stream": "s", "seq": 1, "history_id": 1, "user": "root", "login_user": "", "uid": 0,
                        "tty": "/dev/pts/1", "ip": "127.0.0.131", "time": "2026-12-03 10:00:00", "command": command });
    let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(out.stdout.trim());
    let (status, body) = server.send(request.json(&json!({ "events": [event] })));
    assert_eq!(status, StatusCode::OK, "{body}");

    let got = slack.wait_for(Duration::from_secs(30), "the Slack message", |r| !r.is_empty());
    let text = got[0].json()["text"].as_str().unwrap().to_owned();
    for raw in ["<script>", "<!channel>", "@here"] {
        assert!(!text.contains(raw), "{raw} reached Slack as markup: {text}");
    }
    assert!(text.contains("&lt;script&gt;") && text.contains("&lt;!channel&gt;"), "shown as text: {text}");
    assert_eq!(text.matches("```").count(), 2, "the command cannot close its code block: {text}");
    assert!(text.contains("/audit?host=l1"), "a link to the host's audit: {text}");

    let mail = mail_for(&testenv().smtp.maildir, &to, Duration::from_secs(30));
    let headers = mail.split("\r\n\r\n").next().unwrap();
    assert!(!headers.lines().any(|l| l.to_ascii_lowercase().starts_with("bcc")), "no injected header: {headers}");
    let html = unfold(mail.split("Content-Type: text/html").nth(1).expect("an HTML part"));
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"), "escaped in HTML: {html}");
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let server = server("");
    let receiver = Receiver::start(&[200]);
    // Read but not valid: 422 (a body the document does not describe is a 400, below).
    let refused = |path: &str, body: Value, field: &str| {
        let (status, answer) = server.post(path, &body);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    };
    refused("/api/notify/channels", json!({ "name": "x", "kind": "webhook", "url": "ftp://example.org/x" }), "url");
    refused("/api/notify/channels", json!({ "name": "x", "kind": "webhook", "url": "file:///etc/passwd" }), "url");
    refused("/api/notify/channels", json!({ "name": "x", "kind": "webhook" }), "url");
    let smtp = json!({ "host": "127.0.0.1", "port": 25, "tls": "none" });
    refused(
        "/api/notify/channels",
        json!({ "name": "x", "kind": "email", "to": ["not an address"], "from": "a@b.org", "smtp": smtp }),
        "to",
    );
    refused(
        "/api/notify/channels",
        json!({ "name": "x", "kind": "email", "to": ["a@b.org"], "from": "nobody", "smtp": smtp }),
        "from",
    );
    let with_password = json!({ "host": "127.0.0.1", "port": 25, "tls": "none", "user": "u", "password": "p" });
    refused(
        "/api/notify/channels",
        json!({ "name": "x", "kind": "email", "to": ["a@b.org"], "from": "a@b.org", "smtp": with_password }),
        "smtp.tls",
    );
    let pager = json!({ "name": "x", "kind": "pager", "url": receiver.url });
    let (status, answer) = server.post("/api/notify/channels", &pager);
    assert_eq!((status, &answer["field"]), (StatusCode::BAD_REQUEST, &json!("kind")), "{answer}");

    let channel =
        created(&server, "/api/notify/channels", json!({ "name": "hook", "kind": "webhook", "url": receiver.url }))
            ["id"]
            .clone();
    refused("/api/notify/channels", json!({ "name": "hook", "kind": "webhook", "url": receiver.url }), "name");
    refused(
        "/api/notify/subscriptions",
        json!({ "channel": channel, "event": "audit.alert", "filter": { "rule": "no-such-rule" } }),
        "filter.rule",
    );
    refused(
        "/api/notify/subscriptions",
        json!({ "channel": channel, "event": "job.finished", "filter": { "template": "no-such-job" } }),
        "filter.template",
    );
    refused("/api/notify/subscriptions", json!({ "channel": channel, "event": "job.started" }), "event");
    refused(
        "/api/notify/subscriptions",
        json!({ "channel": channel, "event": "job.finished", "filter": { "rule": "x" } }),
        "filter.rule",
    );
    refused("/api/notify/subscriptions", json!({ "channel": 999, "event": "job.finished" }), "channel");
    let (status, answer) = server.get("/api/notify/deliveries?status=lost");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(server.get("/api/notify/subscriptions").1.as_array().unwrap().is_empty(), "nothing was stored");
}

#[test]
fn the_cli_adds_a_channel_subscribes_it_tests_it_and_reads_the_log() {
    let server = server("");
    let receiver = Receiver::start(&[200]);
    let input = json!({ "name": "cli-hook", "kind": "webhook", "url": receiver.url }).to_string();
    let out = common::cli_with_input(&server, &["notify", "add-channel", "-"], Some(&input));
    assert!(out.status.success(), "{out:?}");
    let id = out.stdout.trim().to_owned();
    assert!(out.stderr.contains("signing secret (shown this once): "), "{out:?}");
    let out = common::cli(
        &server,
        &["notify", "subscribe", "--channel", &id, "--event", "job.finished", "--filter", r#"{"status":["failed"]}"#],
    );
    assert!(out.status.success(), "{out:?}");
    let out = common::cli(
        &server,
        &["notify", "subscribe", "--channel", &id, "--event", "audit.alert", "--filter", r#"{"rule":"nope"}"#],
    );
    assert!(!out.status.success() && out.stderr.contains("filter.rule"), "{out:?}");
    let out = common::cli(&server, &["notify", "subscriptions"]);
    assert!(out.stdout.contains("cli-hook") && out.stdout.contains(r#"{"status":["failed"]}"#), "{out:?}");

    // Sent by the running server.
    let out = common::cli(&server, &["notify", "test", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("sent"), "{out:?}");
    failing_job(&server);
    receiver.wait_for(Duration::from_secs(20), "the job's notification", |r| r.len() >= 2);
    let out = common::cli(&server, &["notify", "deliveries", "--status", "sent"]);
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert!(out.stdout.contains("job.finished") && out.stdout.contains("failed"), "{out:?}");
}
