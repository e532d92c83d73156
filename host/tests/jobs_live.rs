//! Jobs across backends, on the local backend: choosing a backend per job, `GET /api/backends`, the job event
//! stream (`/api/jobs/{id}/events`), cancellation seen through it, and hosts' SSH port and user. The real remote
//! backends have their own test files (`backend_*.rs`) and the cross-backend tests are in `backends_all.rs`.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{cli, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn with_sleep_fixture() -> Server {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    server
}

/// True while a process whose command line is exactly `sleep <seconds>` runs on this machine.
fn sleeping(seconds: u32) -> bool {
    let out = Command::new("pgrep").args(["-x", "-f", &format!("sleep {seconds}")]).output().expect("pgrep");
    out.status.success()
}

#[test]
fn a_finished_job_replays_its_results_then_ends() {
    let server = Server::start();
    let job = server.run_job(1003, &["localhost"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = server.job_events(job["id"].as_i64().unwrap()).until_end(Duration::from_secs(10));
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["host", "end"], "{events:?}");
    assert_eq!(events[0].data["host"], "localhost");
    assert_eq!(events[0].data["status"], "ok");
    assert_eq!(events[1].data["status"], "succeeded");
    assert_eq!(events[1].data["results"], job["results"], "the end event carries the final view");
}

#[test]
fn a_running_job_streams_each_host_then_its_final_view() {
    let server = with_sleep_fixture();
    let started = Instant::now();
    let id = server.submit(9003, &["localhost"], json!({ "seconds": 1 }));
    let events = server.job_events(id).until_end(Duration::from_secs(30));
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["host", "end"], "{events:?}");
    assert_eq!((events[0].data["status"].as_str(), events[0].data["rc"].as_i64()), (Some("ok"), Some(0)));
    assert!(started.elapsed() >= Duration::from_secs(1), "the host event came after the sleep, not before");
    assert_eq!(events[1].data["status"], "succeeded");
    assert_eq!(events[1].data["backend"], "local");
}

#[test]
fn cancelling_shows_in_the_stream_and_leaves_no_process_behind() {
    let server = with_sleep_fixture();
    let id = server.submit(9003, &["localhost"], json!({ "seconds": 6007 }));
    let reader = server.job_events(id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sleeping(6007) {
        assert!(Instant::now() < deadline, "the job's sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = reader.until_end(Duration::from_secs(20));
    let host = events.iter().find(|e| e.event == "host").expect("a host event");
    assert_eq!((host.data["status"].as_str(), host.data["stderr"].as_str()), (Some("cancelled"), Some("cancelled")));
    assert_eq!(events.last().unwrap().data["status"], "cancelled");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping(6007) {
        assert!(Instant::now() < deadline, "`sleep 6007` outlived its cancelled job");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unknown_jobs_have_no_event_stream() {
    let server = Server::start();
    let (status, body) = server.get("/api/jobs/4242/events");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[test]
fn a_job_names_its_backend_and_unavailable_ones_are_refused() {
    let server = Server::start();
    let (status, backends) = server.get("/api/backends");
    assert_eq!(status, StatusCode::OK, "{backends}");
    assert_eq!(
        backends,
        json!([{ "backend": "local", "default": true, "ok": true,
        "detail": "runs on this server (loopback targets only)" }])
    );

    let job = |backend: &str| json!({ "module": 1003, "hosts": ["localhost"], "backend": backend });
    let (status, body) = server.post("/api/jobs", &job("ssh"));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "backend");
    assert!(body["error"].as_str().unwrap().contains("not configured"), "{body}");
    let (status, body) = server.post("/api/jobs", &job("rpyc"));
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("backend")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown backend"), "{body}");

    let (status, body) = server.post("/api/jobs", &job("local"));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(30));
    assert_eq!((done["status"].as_str(), done["backend"].as_str()), (Some("succeeded"), Some("local")), "{done}");
}

#[test]
fn a_configured_but_unhealthy_backend_does_not_stop_the_server() {
    let extra = "[backends.ssh]\nidentity_file = \"/nonexistent/id_ed25519\"\nknown_hosts_file = \"/nonexistent/kh\"\n";
    let server = Server::start_with(Options { extra_config: extra.into(), ..Options::default() });
    let (status, backends) = server.get("/api/backends");
    assert_eq!(status, StatusCode::OK, "{backends}");
    let ssh = backends.as_array().unwrap().iter().find(|b| b["backend"] == "ssh").expect("ssh listed");
    assert_eq!((ssh["ok"].as_bool(), ssh["default"].as_bool()), (Some(false), Some(false)), "{ssh}");
    assert!(server.log().contains("backend unhealthy"), "the start-up log says so");
    let check = cli(&server, &["backends", "check"]);
    assert!(!check.status.success(), "exit 1 when a backend is unhealthy: {check:?}");
    assert!(check.stdout.contains("ssh") && check.stdout.contains("PROBLEM"), "{check:?}");
}

#[test]
fn hosts_carry_an_ssh_port_and_user() {
    let server = Server::start();
    let (status, row) =
        server.post("/api/hosts", &json!({ "name": "web7", "ip": "10.1.0.7", "port": 2222, "user": "deploy" }));
    assert_eq!(status, StatusCode::CREATED, "{row}");
    assert_eq!((row["port"].as_i64(), row["user"].as_str()), (Some(2222), Some("deploy")), "{row}");
    let (_, plain) = server.post("/api/hosts", &json!({ "name": "web8", "ip": "10.1.0.8" }));
    assert_eq!((&plain["port"], &plain["user"]), (&Value::Null, &Value::Null), "{plain}");

    for (body, field) in [
        (json!({ "name": "x1", "ip": "10.1.0.9", "port": 0 }), "port"),
        (json!({ "name": "x2", "ip": "10.1.0.10", "port": 65536 }), "port"),
        (json!({ "name": "x3", "ip": "10.1.0.11", "user": "root;id" }), "user"),
        (json!({ "name": "x4", "ip": "10.1.0.12", "user": "-oProxyCommand=x" }), "user"),
        (json!({ "name": "x5", "ip": "10.1.0.13", "user": "a b" }), "user"),
    ] {
        let (status, answer) = server.post("/api/hosts", &body);
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body} → {answer}"
        );
    }

    let added = cli(&server, &["hosts", "add", "web9", "10.1.0.19", "--port", "2200", "--user", "ops"]);
    assert!(added.status.success(), "{added:?}");
    let (_, hosts) = server.get("/api/hosts");
    let web9 = hosts.as_array().unwrap().iter().find(|h| h["name"] == "web9").expect("web9 listed");
    assert_eq!((web9["port"].as_i64(), web9["user"].as_str()), (Some(2200), Some("ops")), "{web9}");
}
