//! The home page (issue 15, item 1): running jobs (live), failed jobs of the last 24 h, audit alerts, hosts whose
//! audit events stopped, backends' health, rejected modules, and the two charts. Screenshots at 1280×800 and
//! 390×844 under target/screenshots/home_*.

mod common;

use std::time::Duration;

use common::{browser::Browser, database::db_exec, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::json;

fn send_audit(server: &Server, token: &str, seq: i64, command: &str) {
    let event = json!({ "stream": "home", "seq": seq, "history_id": seq, "user": "root", "login_user": "alice",
                        "uid": 0, "tty": "/dev/pts/3", "ip": "127.0.0.1", "time": "2026-12-02 10:00:00",
                        "command": command });
    let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(token);
    let (status, body) = server.send(request.json(&json!({ "events": [event] })));
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn agent_token(server: &Server, host: &str) -> String {
    let out = common::cli(server, &["hosts", "token", host]);
    assert!(out.status.success(), "hosts token: {out:?}");
    out.stdout.trim().to_owned()
}

#[test]
fn the_home_page_says_what_needs_attention_and_follows_running_jobs() {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    install(&fixture("fx_old_api"), &server.plugins_dir(), "Mid_9100.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |e| e.is_some_and(|e| e["status"] == "loaded"));
    server.wait_for_module("Mid_9100.so", Duration::from_secs(10), |e| e.is_some_and(|e| e["status"] != "loaded"));
    let (status, body) = server.post("/api/hosts", &json!({ "name": "quiet1", "ip": "192.0.2.31" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ok = server.run_job(1003, &["localhost"], json!({}));
    let failed = server.run_job(1003, &["quiet1"], json!({}));
    assert_eq!((ok["status"].as_str(), failed["status"].as_str()), (Some("succeeded"), Some("failed")));
    let (status, body) = server.post("/api/audit/rules", &json!({ "name": "rm-root", "pattern": r"rm\s+-rf\s+/" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let local = agent_token(&server, "localhost");
    send_audit(&server, &local, 1, "uptime");
    send_audit(&server, &local, 2, "rm -rf / --no-preserve-root");
    // quiet1's agent reported two hours ago and then stopped.
    send_audit(&server, &agent_token(&server, "quiet1"), 1, "ls");
    let moved = db_exec(
        &server,
        "UPDATE server_history SET received_at = received_at - 7200000 \
         WHERE host_id = (SELECT id FROM server_list WHERE server_name = 'quiet1')",
    );
    assert_eq!(moved, 1);
    let running = server.submit(9003, &["localhost"], json!({ "seconds": 10 }));

    let browser = Browser::start("home");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/", server.base));
    assert!(browser.url().ends_with('/'), "the home page is a page of its own now: {}", browser.url());
    browser.eval("window.__samePage = true; return null");
    browser.wait_for_text(&format!("#running li[data-job='{running}']"), "running", Duration::from_secs(5));
    browser.wait_for_text(&format!("#failed li[data-job='{}']", failed["id"]), "failed", Duration::from_secs(5));
    assert!(!browser.text("#failed").contains(&format!("Job {} ", ok["id"])), "only failures");
    browser.wait_for_text("#alerts", "⚠ alert: rm-root — rm -rf / --no-preserve-root", Duration::from_secs(5));
    browser.wait_for_text("#backends li[data-backend='local']", "ok local (default)", Duration::from_secs(5));
    browser.wait_for_text("#rejected", "Mid_9100.so", Duration::from_secs(5));
    // 24 hours by default: quiet1 is not silent yet; with 1 hour it is, localhost never.
    browser.wait_for_text("#silent", "Every host that sent audit events did so recently.", Duration::from_secs(5));
    browser.eval("const s = document.getElementById('silent-after'); s.value = '3600'; s.dispatchEvent(new Event('change')); return null");
    browser.wait_for_text("#silent li[data-host='quiet1']", "quiet1", Duration::from_secs(5));
    assert!(!browser.exists("#silent li[data-host='localhost']"));

    // The charts: today's bar has one succeeded and one failed part, the legend counts them; the audit chart
    // marks this hour for its alert.
    let today =
        browser.eval("return [...document.querySelectorAll('#jobs-chart rect')].map((r) => r.getAttribute('class'))");
    assert_eq!(today, json!(["bar-succeeded", "bar-failed", "bar-running"]), "{today}");
    assert_eq!(browser.text("#jobs-legend"), "1 succeeded\n1 failed\n1 running");
    let audit = browser.eval(
        "const c = document.querySelector('#audit-chart svg');
         return [c.querySelectorAll('rect.bar-events').length, c.querySelectorAll('.alert-marker').length, c.getAttribute('aria-label')]",
    );
    assert_eq!(audit[1], json!(1), "{audit}");
    assert!(audit[2].as_str().unwrap().contains("1 hours with alerts"), "{audit}");
    browser.screenshot("1-attention-1280");

    // The running job ends: it leaves "Running now" on the open page.
    let started = std::time::Instant::now();
    while browser.exists(&format!("#running li[data-job='{running}']")) {
        assert!(started.elapsed() < Duration::from_secs(25), "the finished job is still listed as running");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_for_text("#running", "No job is running.", Duration::from_secs(2));
    assert_eq!(browser.eval("return window.__samePage === true"), json!(true), "not reloaded");

    browser.resize(390, 844);
    browser.goto(&format!("{}/", server.base));
    browser.find("#jobs-chart svg");
    let (scroll, _) = browser.widths();
    assert!(scroll <= 390, "the home page at 390 px is {scroll} px wide");
    browser.screenshot("2-attention-390");
}
