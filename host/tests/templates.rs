//! Saved jobs through the real server: checked when saved, targets resolved at each run (hosts, categories,
//! tags), the definition recorded on each job so that an edit never rewrites history, their own timeout, and a
//! 422 (400 for a body that cannot be read) naming the field for every bad input. Runs on the local backend with
//! loopback hosts and `fx_roll` (9008).

mod common;

use std::time::Duration;

use common::{cli, cli_with_input, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    let hosts = [
        json!({ "name": "web1", "ip": "127.0.0.121", "function": "Linux.Web", "app": "nginx", "tags": ["prod"] }),
        json!({ "name": "web2", "ip": "127.0.0.122", "function": "Linux.Web", "app": "nginx", "tags": ["canary"] }),
        json!({ "name": "db1", "ip": "127.0.0.123", "function": "Linux.DB", "app": "mysql", "tags": ["prod"] }),
        json!({ "name": "db2", "ip": "127.0.0.124", "function": "Linux.DB", "app": "mysql" }),
    ];
    for host in hosts {
        let (status, body) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

fn spec(name: &str, targets: Value) -> Value {
    json!({ "name": name, "description": "nightly check", "module": 9008, "params": { "seconds": 0 }, "targets": targets })
}

fn create(server: &Server, body: &Value) -> i64 {
    let (status, answer) = server.post("/api/templates", body);
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["id"].as_i64().unwrap()
}

fn run(server: &Server, template: i64) -> Value {
    let (status, answer) = server.post(&format!("/api/templates/{template}/run"), &json!({}));
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    server.wait_job(answer["id"].as_i64().unwrap(), Duration::from_secs(30))
}

fn put(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    server.send(server.client.put(format!("{}{path}", server.base)).bearer_auth(&server.token).json(body))
}

#[test]
fn a_saved_job_resolves_its_targets_at_each_run_and_keeps_the_definition_it_ran_with() {
    let server = server();
    let id = create(&server, &spec("web and prod", json!({ "functions": ["Linux.Web"], "tags": ["PROD"] })));
    let (status, saved) = server.get(&format!("/api/templates/{id}"));
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!((saved["name"].as_str(), saved["module"].as_i64()), (Some("web and prod"), Some(9008)));
    let (_, listed) = server.get("/api/templates");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (_, matched) = server.get(&format!("/api/templates/{id}/hosts"));
    assert_eq!(matched["hosts"], json!(["db1", "web1", "web2"]), "a host matches any list, sorted by name");
    let by_address = create(&server, &spec("by address", json!({ "hosts": ["127.0.0.122"], "tags": ["canary"] })));
    let (_, matched) = server.get(&format!("/api/templates/{by_address}/hosts"));
    assert_eq!(matched["hosts"], json!(["127.0.0.122"]), "a host named by its address is not listed twice");
    let (_, answer) = server.post(
        "/api/templates",
        &json!({ "name": "x", "module": 9008, "targets": { "hosts": ["web1"] }, "rollout": { "batch": 0 } }),
    );
    assert_eq!(answer["error"].as_str().map(|e| e.matches("rollout.batch").count()), Some(1), "{answer}");

    let first = run(&server, id);
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["hosts"], json!(["db1", "web1", "web2"]));
    assert_eq!(first["template_id"], id);
    assert_eq!(first["template_definition"]["targets"]["functions"], json!(["Linux.Web"]));

    // A host joins the category: the next run takes it, the first job's hosts stay as they were.
    let (status, body) = server
        .post("/api/hosts", &json!({ "name": "web3", "ip": "127.0.0.125", "function": "Linux.Web", "app": "nginx" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut edited = spec("web and prod", json!({ "hosts": ["db2"], "functions": ["Linux.Web"] }));
    edited["params"] = json!({ "seconds": 0, "fail": "web3" });
    edited["rollout"] = json!({ "batch": 1, "max_failed": 0 });
    let (status, view) = put(&server, &format!("/api/templates/{id}"), &edited);
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["rollout"], json!({ "batch": 1, "max_failed": 0, "pause_secs": 0 }));
    let second = run(&server, id);
    assert_eq!(second["hosts"], json!(["db2", "web1", "web2", "web3"]), "named hosts first, then by name");
    assert_eq!(second["status"], "failed", "web3 fails and the threshold of 0 stops there: {second}");
    assert_eq!(second["template_definition"]["params"]["fail"], "web3");
    let (_, first_again) = server.get(&format!("/api/jobs/{}", first["id"]));
    assert_eq!(first_again["template_definition"], first["template_definition"], "an edit never rewrites history");

    // Deleting the saved job leaves its jobs in the history with their definition.
    let (status, _) =
        server.send(server.client.delete(format!("{}/api/templates/{id}", server.base)).bearer_auth(&server.token));
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.get(&format!("/api/templates/{id}"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, kept) = server.get(&format!("/api/jobs/{}", second["id"]));
    assert_eq!(kept["template_definition"]["name"], "web and prod");
}

#[test]
fn a_saved_job_runs_with_its_own_timeout() {
    let server = server();
    let mut body = spec("slow", json!({ "hosts": ["web1"] }));
    body["params"] = json!({ "seconds": 30 });
    body["timeout_secs"] = json!(1);
    let job = run(&server, create(&server, &body));
    assert_eq!((job["status"].as_str(), job["error"].as_str()), (Some("failed"), Some("timed out after 1s")), "{job}");
    assert_eq!(job["results"][0]["status"], "cancelled", "{job}");
}

#[test]
fn bad_saved_jobs_are_refused_naming_the_field_and_so_are_runs_that_cannot_start() {
    let server = server();
    let good = spec("good", json!({ "tags": ["prod"] }));
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    for (body, field) in [
        (with("name", json!("  ")), "name"),
        (with("targets", json!({})), "targets"),
        (with("targets", json!({ "tags": [""] })), "targets.tags"),
        (with("module", json!(4242)), "module"),
        (with("params", json!({ "seconds": -5 })), "seconds"),
        (with("params", json!({ "colour": "red" })), "colour"),
        (with("backend", json!("telepathy")), "backend"),
        (with("rollout", json!({ "batch": 0 })), "rollout.batch"),
        (with("rollout", json!({ "batch": "150%" })), "rollout.batch"),
        (with("rollout", json!({ "batch": 1, "max_failed": -1 })), "rollout.max_failed"),
        (with("timeout_secs", json!(0)), "timeout_secs"),
    ] {
        let (status, answer) = server.post("/api/templates", &body);
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {answer}"
        );
    }
    // A field the document does not have: the body cannot be read at all.
    let unknown = with("targets", json!({ "groups": ["x"] }));
    let (status, answer) = server.post("/api/templates", &unknown);
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("targets.groups")), "{answer}");
    let (_, listed) = server.get("/api/templates");
    assert_eq!(listed, json!([]), "nothing was saved");

    create(&server, &good);
    let (status, answer) = server.post("/api/templates", &good);
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");

    // At run time: a selector that matches nothing, and a module that is gone.
    let nobody = create(&server, &spec("nobody", json!({ "tags": ["retired"] })));
    let (status, answer) = server.post(&format!("/api/templates/{nobody}/run"), &json!({}));
    assert_eq!((status, answer["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("targets")), "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no host matches"), "{answer}");
    let roll = create(&server, &spec("roll", json!({ "hosts": ["web1"] })));
    std::fs::remove_file(server.plugins_dir().join("Mid_9008.so")).unwrap();
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_none());
    let (status, answer) = server.post(&format!("/api/templates/{roll}/run"), &json!({}));
    assert_eq!((status, answer["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("module")), "{answer}");
    let (status, _) = server.post("/api/templates/999999/run", &json!({}));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, history) = server.get("/api/jobs");
    assert_eq!(history, json!([]), "no refused run created a job");
}

#[test]
fn the_cli_saves_runs_and_schedules_a_saved_job() {
    let server = server();
    let body = spec("from the cli", json!({ "tags": ["canary"] })).to_string();
    let out = cli_with_input(&server, &["template", "create", "-"], Some(&body));
    assert!(out.status.success(), "{out:?}");
    let id = out.stdout.trim().to_owned();
    let out = cli(&server, &["template", "list"]);
    assert!(out.stdout.contains("from the cli") && out.stdout.contains("tag:canary"), "{}", out.stdout);
    let out = cli(&server, &["template", "run", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("host: web2\nstatus: ok (rc 0)"), "{}", out.stdout);
    let shown: Value = serde_json::from_str(&cli(&server, &["template", "show", &id]).stdout).unwrap();
    assert_eq!(shown["targets"]["tags"], json!(["canary"]));

    let out = cli(
        &server,
        &[
            "schedule",
            "create",
            "--name",
            "hourly",
            "--template",
            &id,
            "--cron",
            "@hourly",
            "--timezone",
            "Asia/Shanghai",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr.matches("next: ").count(), 5, "{}", out.stderr);
    let schedule = out.stdout.trim().to_owned();
    let out = cli(&server, &["schedule", "disable", &schedule]);
    assert!(out.status.success(), "{out:?}");
    let (_, view) = server.get(&format!("/api/schedules/{schedule}"));
    assert_eq!((view["enabled"].as_bool(), view["timezone"].as_str()), (Some(false), Some("Asia/Shanghai")), "{view}");
    let out = cli(&server, &["schedule", "list"]);
    assert!(out.stdout.contains("hourly") && out.stdout.contains("disabled"), "{}", out.stdout);
    let out = cli(&server, &["schedule", "create", "--name", "bad", "--template", &id, "--cron", "61 * * * *"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("minute 61"), "{}", out.stderr);
    let out = cli(&server, &["template", "delete", &id]);
    assert!(!out.status.success(), "a saved job with a schedule stays: {out:?}");
}
