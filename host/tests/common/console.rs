//! A console with something on every page, and the list of its pages: what the phone-layout and accessibility
//! tests walk through (`console_phone.rs`, `console_a11y.rs`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{browser::Browser, cli, cli_with_input, Options, Server};

pub const VIEWER: &str = "vera";
pub const PASSWORD: &str = "console-password-1";

/// What the seeded console holds, for the pages that need an id.
pub struct Seeded {
    pub server: Server,
    /// A job on localhost and three inventory hosts the local backend refuses (one ok, three failed).
    pub job: i64,
}

/// A server with seed module 1003, hosts web1…web3 (documentation addresses: the local backend refuses them
/// without sending anything), a finished job with ok and failed hosts, a saved job, audit
/// events (one matching an alert rule) and a viewer `vera`.
pub fn seeded() -> Seeded {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    for i in 1..=3 {
        let host = json!({ "name": format!("web{i}"), "ip": format!("192.0.2.{}", 10 + i), "function": "Linux.Web",
                           "app": "nginx", "tags": ["prod"] });
        let (status, body) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let job = server.run_job(1003, &["localhost", "web1", "web2", "web3"], json!({}));
    assert_eq!(job["status"], "failed", "the local backend refuses non-loopback hosts: {job}");
    let template = json!({ "name": "issue check", "description": "reads /etc/issue", "module": 1003, "params": {},
                           "targets": { "hosts": ["localhost"] } });
    let (status, body) = server.post("/api/templates", &template);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rule = json!({ "name": "rm-root", "pattern": r"rm\s+-rf\s+/" });
    let (status, body) = server.post("/api/audit/rules", &rule);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let out = cli(&server, &["hosts", "token", "localhost"]);
    assert!(out.status.success(), "hosts token: {out:?}");
    let token = out.stdout.trim().to_owned();
    for (seq, command) in [(1, "uptime"), (2, "rm -rf / --no-preserve-root"), (3, "journalctl -u nginx --since today")]
    {
        let event = json!({ "stream": "console", "seq": seq, "history_id": seq, "user": "root", "login_user": "alice",
                            "uid": 0, "tty": "/dev/pts/3", "ip": "127.0.0.1", "time": "2026-12-02 10:00:00",
                            "command": command });
        let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(&token);
        let (status, body) = server.send(request.json(&json!({ "events": [event] })));
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let input = format!("{PASSWORD}\n");
    let out = cli_with_input(&server, &["user", "add", VIEWER, "--role", "viewer"], Some(&input));
    assert!(out.status.success(), "{out:?}");
    let id = job["id"].as_i64().expect("job id");
    Seeded { server, job: id }
}

/// One console page: its path, a short name for screenshots and reports, and what shows once its script has
/// drawn it.
pub struct Page {
    pub name: &'static str,
    pub path: String,
    pub ready: &'static str,
    /// Shown to operators and admins only.
    pub operators_only: bool,
}

/// Every console page, as a logged-in user sees them (the login page is checked logged out).
pub fn pages(job: i64) -> Vec<Page> {
    let page = |name, path: String, ready, operators_only| Page { name, path, ready, operators_only };
    vec![
        page("home", "/".into(), "#jobs-chart svg", false),
        page("inventory", "/inventory".into(), "#tree details", false),
        page("modules", "/modules".into(), "#modules tbody tr", false),
        page("run", "/run".into(), "#host-list input", true),
        page("jobs", "/jobs".into(), "#history tbody tr[data-job]", false),
        page("job", format!("/jobs/{job}"), "#host-table tbody tr", false),
        page("templates", "/templates".into(), "#templates tbody tr", false),
        page("audit", "/audit".into(), "#events tbody tr.flagged", false),
        page("users", "/users".into(), "#tokens tbody", false),
        page("notifications", "/notifications".into(), "#channels-empty:not([hidden]), #channels tbody tr", true),
        page("activity", "/activity".into(), "#entries tbody tr", true),
        page("servers", "/cluster".into(), "#servers tbody tr", false),
        page("api", "/api-docs".into(), "#operations section", false),
        page("not-found", "/jobs/999999".into(), "#error-message", false),
    ]
}

/// Opens `page` and waits until its script has drawn it (and a moment for the last requests to settle).
pub fn open(browser: &Browser, base: &str, page: &Page) {
    browser.goto(&format!("{base}{}", page.path));
    browser.find(page.ready);
    std::thread::sleep(Duration::from_millis(300));
}
