//! The plugin registry on a running server: drop-in, replace, remove, and every kind of bad file, while jobs keep
//! succeeding. Libraries come from `cargo xtask test` (seed modules and test-only fixtures).

mod common;

use std::{fs, time::Duration};

use common::{fixture, install, seed_module, Options, Server};
use reqwest::StatusCode;
use serde_json::json;

fn loaded(version: &'static str) -> impl Fn(Option<&serde_json::Value>) -> bool {
    move |e| e.is_some_and(|e| e["status"] == "loaded" && e["version"] == version)
}

fn rejected(e: Option<&serde_json::Value>) -> bool {
    e.is_some_and(|e| e["status"] == "rejected")
}

/// Module 1003 still runs: the check made between every disturbance below.
fn assert_jobs_still_succeed(server: &Server) {
    let job = server.run_job(1003, &["127.0.0.1"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
}

#[test]
fn a_dropped_in_module_is_listed_within_two_seconds() {
    let server = Server::start_with(Options { seed: vec![], ..Options::default() });
    assert!(server.module_entry("Mid_1003.so").is_none());
    install(&seed_module(1003), &server.plugins_dir(), "Mid_1003.so");
    let took = server.wait_for_module("Mid_1003.so", Duration::from_secs(2), loaded("1.0.0"));
    let entry = server.module_entry("Mid_1003.so").unwrap();
    assert_eq!((entry["id"].as_u64(), entry["name"].as_str()), (Some(1003), Some("View OS version")));
    assert!(entry["error"].is_null());
    eprintln!("drop-in to listed: {took:?}");
    assert_jobs_still_succeed(&server);
}

#[test]
fn replacing_serves_new_jobs_the_new_version_while_running_jobs_finish_on_the_old() {
    let server = Server::start_with(Options { seed: vec![], ..Options::default() });
    let dir = server.plugins_dir();
    install(&fixture("fx_echo_v1"), &dir, "Mid_9000.so");
    server.wait_for_module("Mid_9000.so", Duration::from_secs(2), loaded("1.0.0"));

    // A job that is still initialising (sleep_ms) when the file is replaced has already pinned 1.0.0.
    let slow = server.submit(9000, &["127.0.0.1"], json!({ "word": "before", "sleep_ms": 1500 }));
    install(&fixture("fx_echo_v2"), &dir, "Mid_9000.so");
    server.wait_for_module("Mid_9000.so", Duration::from_secs(2), loaded("2.0.0"));

    let fresh = server.run_job(9000, &["127.0.0.1"], json!({ "word": "after" }));
    assert_eq!(fresh["module_version"], "2.0.0");
    assert_eq!(fresh["results"][0]["stdout"], "2.0.0 after\n");

    let old = server.wait_job(slow, Duration::from_secs(30));
    assert_eq!(old["status"], "succeeded", "{old}");
    assert_eq!(old["module_version"], "1.0.0");
    assert_eq!(old["results"][0]["stdout"], "1.0.0 before\n");
}

#[test]
fn a_removed_module_is_gone_for_new_jobs() {
    let server = Server::start_with(Options { seed: vec![1003, 1004], ..Options::default() });
    server.wait_for_module("Mid_1004.so", Duration::from_secs(2), loaded("1.0.0"));
    fs::remove_file(server.plugins_dir().join("Mid_1004.so")).unwrap();
    server.wait_for_module("Mid_1004.so", Duration::from_secs(2), |e| e.is_none());
    let (status, body) = server.post("/api/jobs", &json!({ "module": 1004, "hosts": ["127.0.0.1"] }));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "module Mid_1004 does not exist; add it to the plugins directory");
    assert_jobs_still_succeed(&server);
}

#[test]
fn bad_files_are_rejected_with_a_reason_and_the_server_keeps_serving() {
    let server = Server::start();
    let dir = server.plugins_dir();
    let error_of = |file: &str| {
        server.wait_for_module(file, Duration::from_secs(2), rejected);
        server.module_entry(file).unwrap()["error"].as_str().unwrap().to_owned()
    };

    fs::write(dir.join("Mid_9100.so"), b"this is not a library at all, just text").unwrap();
    assert_eq!(error_of("Mid_9100.so"), "not a loadable shared library: no ELF header");
    assert_jobs_still_succeed(&server);

    install(&fixture("fx_old_api"), &dir, "Mid_9101.so");
    let error = error_of("Mid_9101.so");
    assert!(error.starts_with("not a compatible OMServer module:"), "{error}");
    assert!(error.contains("0.0.9") && error.contains("0.1.0"), "names both versions: {error}");
    assert_jobs_still_succeed(&server);

    install(&seed_module(1003), &dir, "extra-copy.so");
    assert_eq!(error_of("extra-copy.so"), "module 1003 is already served by Mid_1003.so");
    assert_eq!(server.module_entry("Mid_1003.so").unwrap()["status"], "loaded");
    assert_jobs_still_succeed(&server);

    install(&seed_module(1004), &dir, "Mid_1005.so");
    assert_eq!(error_of("Mid_1005.so"), "file name says module 1005 but the library declares 1004");

    fs::write(dir.join("Mid_9102.so"), b"\x7fELF garbage").unwrap();
    fs::set_permissions(dir.join("Mid_9102.so"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    assert_eq!(
        error_of("Mid_9102.so"),
        "writable by group or others (mode 666): only the server's owner may write modules"
    );

    // Half of a real library, written in place under its final name (what a careless `cp` leaves mid-copy).
    let whole = fs::read(seed_module(1004)).unwrap();
    fs::write(dir.join("Mid_1004.so"), &whole[..whole.len() / 2]).unwrap();
    assert_eq!(
        error_of("Mid_1004.so"),
        "not a loadable shared library: the file is incomplete (truncated or still being written)"
    );
    assert_jobs_still_succeed(&server);
    // The rest arrives: the same file, now complete, loads.
    fs::write(dir.join("Mid_1004.so"), &whole).unwrap();
    server.wait_for_module("Mid_1004.so", Duration::from_secs(2), loaded("1.0.0"));

    // Removing the file that served 1003 hands the id to the duplicate.
    fs::remove_file(dir.join("Mid_1003.so")).unwrap();
    server.wait_for_module("extra-copy.so", Duration::from_secs(2), loaded("1.0.0"));
    assert_jobs_still_succeed(&server);

    // Temporary and hidden names are never looked at.
    fs::write(dir.join("Mid_9103.so.tmp"), b"partial").unwrap();
    fs::write(dir.join(".Mid_9104.so"), b"partial").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.module_entry("Mid_9103.so.tmp").is_none() && server.module_entry(".Mid_9104.so").is_none());
}

#[test]
fn a_panicking_module_fails_its_job_and_the_server_lives_on() {
    let mut server = Server::start();
    install(&fixture("fx_panic"), &server.plugins_dir(), "Mid_9001.so");
    server.wait_for_module("Mid_9001.so", Duration::from_secs(2), loaded("1.0.0"));
    let job = server.run_job(9001, &["127.0.0.1"], json!({}));
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"], "module panicked: fixture panic in run");
    assert_eq!(job["results"][0]["status"], "failed", "every target gets a row: {job}");
    assert!(server.alive(), "the panic must not cross into the server");
    assert_jobs_still_succeed(&server);
}

#[test]
fn a_hanging_module_is_stopped_by_the_job_timeout() {
    let mut server = Server::start_with(Options { extra_config: "job_timeout_secs = 2".into(), ..Options::default() });
    install(&fixture("fx_hang"), &server.plugins_dir(), "Mid_9002.so");
    server.wait_for_module("Mid_9002.so", Duration::from_secs(2), loaded("1.0.0"));
    let started = std::time::Instant::now();
    let job = server.run_job(9002, &["127.0.0.1"], json!({}));
    let took = started.elapsed();
    assert_eq!((job["status"].as_str(), job["error"].as_str()), (Some("failed"), Some("timed out after 2s")), "{job}");
    assert!(took < Duration::from_secs(10), "the timeout (2 s + 2 s grace) took {took:?}");
    assert!(server.alive());
    let (status, _) = server.get("/healthz");
    assert_eq!(status, StatusCode::OK);
    assert_jobs_still_succeed(&server);
}

#[test]
fn a_running_job_can_be_cancelled() {
    let server = Server::start_with(Options { seed: vec![], ..Options::default() });
    install(&fixture("fx_echo_v1"), &server.plugins_dir(), "Mid_9000.so");
    server.wait_for_module("Mid_9000.so", Duration::from_secs(2), loaded("1.0.0"));
    let id = server.submit(9000, &["127.0.0.1"], json!({ "sleep_ms": 1000 }));
    let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = server.wait_job(id, Duration::from_secs(10));
    assert_eq!(job["status"], "cancelled", "{job}");
    // Cancelled while the module was initialising: no host had started.
    let first = &job["results"][0];
    assert_eq!((first["status"].as_str(), first["stderr"].as_str()), (Some("skipped"), Some("not started: cancelled")));
}
