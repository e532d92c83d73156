//! The API contract, checked by a tester nobody here wrote: schemathesis reads `/api/openapi.json` and sends
//! requests made from it (examples, boundary values, mutated and random ones, and chains that follow the
//! document's links from a creation to its reading, change and deletion), then checks every answer against the
//! document: no 5xx, every status and content type documented, bodies matching their schemas, well-formed
//! requests accepted (2xx, or 404/409/422 for what they name), malformed ones refused, credentials enforced.
//! A request may take 20 s (a channel test waits for its first attempt), hence the 30 s timeout. It runs as each
//! kind of caller, an agent first and the admin last (the admin's run deletes what it finds).
//!
//! `/api/audit/stream` never ends and is silent until an audit event is stored: `testenv/schemathesis.toml` has
//! schemathesis read it for half a second or up to its first event. The events themselves are tested in `jobs_live.rs`,
//! `audit.rs` and the console tests.
//!
//! The seed is fixed so that a failure is reproducible and CI repeatable; `OMSERVER_ST_SEED` picks another and
//! `OMSERVER_ST_EXAMPLES` more examples per operation (`cargo xtask contract` does both).

mod common;

use std::{path::Path, process::Command};

use common::{cli, testenv::testenv, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SEED: &str = "20261203";

/// A little of everything, so that operations on `{id}` meet things that exist.
fn populate(server: &Server) {
    let created = |path: &str, body: Value| -> Value {
        let (status, answer) = server.post(path, &body);
        assert!(status.is_success(), "POST {path} {body}: {status} {answer}");
        answer
    };
    created("/api/hosts", json!({ "name": "st-host", "ip": "127.0.0.2", "tags": ["contract"] }));
    let template = created(
        "/api/templates",
        json!({ "name": "uptime", "module": 1003, "targets": { "hosts": ["localhost"] }, "params": {} }),
    );
    created("/api/schedules", json!({ "name": "nightly", "template": template["id"], "cron": "0 3 * * *" }));
    let channel =
        created("/api/notify/channels", json!({ "name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/" }));
    created("/api/notify/subscriptions", json!({ "channel": channel["id"], "event": "module.rejected" }));
    created("/api/audit/rules", json!({ "name": "rm-root", "pattern": r"rm\s+-rf\s+/" }));
    let job = server.run_job(1003, &["localhost"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
}

fn token(server: &Server, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(out.status.success(), "omserver {args:?}: {out:?}");
    out.stdout.trim().to_owned()
}

/// Runs schemathesis against `server` with `token`; panics with its report when it finds anything.
fn schemathesis(server: &Server, document: &Path, role: &str, token: &str, keep_tokens: &str) {
    let st = testenv().schemathesis.executable;
    assert!(
        !st.as_os_str().is_empty() && st.exists(),
        "schemathesis is not installed: start the test environment's venv (`cargo xtask testenv up venv`)"
    );
    let testenv_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testenv");
    let seed = std::env::var("OMSERVER_ST_SEED").unwrap_or_else(|_| SEED.to_owned());
    let examples = std::env::var("OMSERVER_ST_EXAMPLES").unwrap_or_else(|_| "10".to_owned());
    let output = Command::new(&st)
        .arg("--config-file")
        .arg(testenv_dir.join("schemathesis.toml"))
        .arg("run")
        .arg(document)
        .args(["--url", &server.base])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", &examples, "--seed", &seed, "--workers", "1"])
        .args(["--request-timeout", "30", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &testenv_dir)
        .env("OMSERVER_ST_KEEP_TOKENS", keep_tokens)
        // schemathesis keeps a cache (`.schemathesis/`) where it runs: in the server's directory, not the repository.
        .current_dir(server.dir.path())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis as {role} found failures (seed {seed}):\n{report}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    // A run that tested nothing would pass too: it must have made requests and run each phase it was given.
    let tested = report.lines().find(|l| l.trim_start().starts_with("Tested:")).unwrap_or_default();
    assert!(tested.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().unwrap_or(0) >= 50, "{report}");
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            report.contains(&format!("✅ {phase}")),
            "schemathesis as {role}: the {phase} phase did not pass\n{report}"
        );
    }
}

#[test]
fn schemathesis_finds_nothing_as_any_caller() {
    let server =
        Server::start_with(Options { seed: vec![1001, 1002, 1003, 1004, 1005, 1006, 1007], ..Options::default() });
    populate(&server);
    let agent = token(&server, &["hosts", "token", "localhost"]);
    let viewer = token(&server, &["token", "create", "--role", "viewer", "--name", "st-viewer"]);
    let operator = token(&server, &["token", "create", "--role", "operator", "--name", "st-operator"]);
    // The callers' own tokens are not revoked by the run (see testenv/schemathesis_hooks.py).
    let (status, tokens) = server.get("/api/tokens");
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let keep: Vec<String> = tokens.as_array().expect("a list").iter().map(|t| t["id"].to_string()).collect();
    assert_eq!(keep.len(), 4, "{tokens}");
    // An agent may not read the document: schemathesis reads it from a file.
    let (status, document) = server.get("/api/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let file = server.dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).expect("write the document");
    for (role, token) in [("agent", &agent), ("viewer", &viewer), ("operator", &operator), ("admin", &server.token)] {
        schemathesis(&server, &file, role, token, &keep.join(","));
    }
    // The server is still whole after all of it.
    let (status, _) = server.get("/api/modules");
    assert_eq!(status, StatusCode::OK);
}
