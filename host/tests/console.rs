//! The web console in headless Chromium (testenv's chromium piece), against the real server binary.
//! Screenshots are kept under target/screenshots/<test>/.

mod common;

use std::time::Duration;

use common::{browser::Browser, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::json;

fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |e| e.is_some_and(|e| e["status"] == "loaded"));
    server
}

#[test]
fn logging_in_then_watching_a_job_finish_without_a_reload() {
    let server = server();
    let browser = Browser::start("job_live");
    browser.goto(&format!("{}/jobs", server.base));
    assert!(browser.url().ends_with("/login"), "a page without a session goes to /login: {}", browser.url());
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.find("header.top");
    browser.screenshot("1-logged-in");

    let id = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 2 }));
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "running", Duration::from_secs(5));
    browser.screenshot("2-running");
    assert!(!browser.exists("#groups section"), "no host has finished yet");
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(15));
    browser.wait_for_text("#groups", "localhost", Duration::from_secs(2));
    browser.screenshot("3-finished");
}

#[test]
fn a_job_can_be_cancelled_from_its_page() {
    let server = server();
    let browser = Browser::start("job_cancel");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let id = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 60 }));
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "running", Duration::from_secs(5));
    browser.click("#cancel");
    browser.wait_for_text("#status", "cancelled", Duration::from_secs(10));
    browser.screenshot("cancelled");
    let job = server.wait_job(id, Duration::from_secs(5));
    assert_eq!(job["status"], "cancelled", "{job}");
}

#[test]
fn after_logging_out_pages_go_to_the_login_page() {
    let server = server();
    let browser = Browser::start("logout");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.click("header.top form button");
    browser.find("#password");
    browser.goto(&format!("{}/jobs", server.base));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    let status = browser.eval("return fetch('/api/session').then(r => r.status)");
    assert_eq!(status, json!(StatusCode::UNAUTHORIZED.as_u16()));
}
