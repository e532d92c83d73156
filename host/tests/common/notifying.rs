//! What the notification tests share: a server with `fx_roll` (9008) and two loopback hosts, a job that fails on
//! one of them, and the delivery log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{fixture, install, Options, Server};

/// A server with `extra` configuration, `fx_roll` loaded and hosts `l1`, `l2` at the given addresses.
pub fn server(extra: &str, addresses: [&str; 2]) -> Server {
    let server = Server::start_with(Options { seed: vec![], extra_config: extra.to_owned(), ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    for (name, ip) in ["l1", "l2"].into_iter().zip(addresses) {
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

/// POSTs `body` and expects 201.
pub fn created(server: &Server, path: &str, body: Value) -> Value {
    let (status, answer) = server.post(path, &body);
    assert_eq!(status, StatusCode::CREATED, "{path} {body}: {answer}");
    answer
}

/// A job of fx_roll on l1 and l2 that fails on l2; its id once finished.
pub fn failing_job(server: &Server) -> i64 {
    let id = server.submit(9008, &["l1", "l2"], json!({ "seconds": 0, "fail": "l2" }));
    let job = server.wait_job(id, Duration::from_secs(30));
    assert_eq!(job["status"], "failed", "{job}");
    id
}

/// `GET /api/notify/deliveries?{query}`.
pub fn deliveries(server: &Server, query: &str) -> Vec<Value> {
    let (status, list) = server.get(&format!("/api/notify/deliveries?{query}"));
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}
