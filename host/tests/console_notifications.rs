//! The /notifications console page (headless Chromium from the test environment, the real server): an admin adds
//! a webhook channel (a bad URL refused beside its field, the secret shown once), sends a test, subscribes it to
//! failed jobs and sees the delivery in the log; hostile channel names stay text; a viewer gets no link and a 403
//! page. Screenshots: target/screenshots/notifications_*.

mod common;

use std::time::{Duration, Instant};

use common::{browser::Browser, cli_with_input, fixture, install, receiver::Receiver, Options, Server};
use reqwest::StatusCode;
use serde_json::json;

const PASSWORD: &str = "console-password-1";

fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![], ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    for (name, ip) in [("l1", "127.0.0.151"), ("l2", "127.0.0.152")] {
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

fn set(browser: &Browser, id: &str, value: &str) {
    browser.eval(&format!(
        "const e = document.getElementById({}); e.value = {}; e.dispatchEvent(new Event('change')); return null",
        json!(id),
        json!(value)
    ));
}

fn wait_for(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_admin_adds_a_channel_tests_it_subscribes_it_and_reads_the_log() {
    let server = server();
    let receiver = Receiver::start(&[200]);
    let browser = Browser::start("notifications_admin");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/notifications", server.base));
    assert!(browser.exists("nav a[href='/notifications']"), "admins get the link");
    browser.eval("document.getElementById('channel-editor').open = true; return null");

    set(&browser, "c-name", "<img src=x onerror=alert(1)>");
    set(&browser, "c-kind", "webhook");
    set(&browser, "c-url", "ftp://example.org/hook");
    browser.click("#channel-form button[type=submit]");
    browser.wait_for_text("#err-url", "http or https", Duration::from_secs(10));

    set(&browser, "c-url", &receiver.url);
    browser.click("#channel-form button[type=submit]");
    wait_for("the secret shown", Duration::from_secs(10), || {
        browser.eval("return !document.getElementById('secret-box').hidden") == json!(true)
    });
    assert_eq!(browser.text("#secret").len(), 40, "the signing secret, once");
    assert_eq!(browser.text("#err-url"), "", "the error left with the success");
    browser.wait_for_text("#channels tbody", "<img src=x onerror=alert(1)>", Duration::from_secs(10));
    assert!(!browser.exists("#channels img"), "a channel name is text, never markup");
    browser.click("#secret-done");

    browser.click("#channels tbody button");
    browser.wait_for_text("#channels tbody", "Sent", Duration::from_secs(25));
    assert_eq!(receiver.received()[0].json()["event"], "test");

    browser.eval("document.getElementById('subscription-editor').open = true; return null");
    set(&browser, "s-event", "job.finished");
    set(&browser, "f-status", "failed");
    browser.click("#subscription-form button[type=submit]");
    browser.wait_for_text("#subscriptions tbody", "status: failed", Duration::from_secs(10));

    let job = server.submit(9008, &["l1", "l2"], json!({ "seconds": 0, "fail": "l2" }));
    server.wait_job(job, Duration::from_secs(30));
    browser.wait_for_text("#deliveries tbody", &format!("Job {job} failed"), Duration::from_secs(20));
    browser.screenshot("log");
}

#[test]
fn a_viewer_gets_no_link_and_a_403() {
    let server = server();
    let input = format!("{PASSWORD}\n");
    let out = cli_with_input(&server, &["user", "add", "vera", "--role", "viewer"], Some(&input));
    assert!(out.status.success(), "{out:?}");
    let browser = Browser::start("notifications_viewer");
    browser.log_in(&server.base, "vera", PASSWORD);
    browser.goto(&format!("{}/jobs", server.base));
    assert!(!browser.exists("nav a[href='/notifications']"), "viewers get no link");
    let status = browser.eval("return fetch('/notifications', { credentials: 'same-origin' }).then((r) => r.status)");
    assert_eq!(status, json!(403));
}
