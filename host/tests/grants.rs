//! Grants through the real server: a user limited to part of the inventory runs, cancels, sees and schedules only
//! there — jobs, the inventory, saved jobs, schedules, audit queries, the CSV and the live stream, the home
//! page — and is told which hosts are outside (403 naming them). Grants are checked when given (422 naming the
//! field), and a user whose last grant is removed reaches nothing. Local backend, loopback hosts, `fx_roll`.

mod common;

use std::{
    io::{BufRead, BufReader},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::{cli, fixture, install, Options, Server};
use reqwest::{blocking::Client, Method, StatusCode};
use serde_json::{json, Value};

fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    for host in [
        json!({ "name": "web1", "ip": "127.0.0.141", "function": "Linux.Web", "app": "nginx", "tags": ["prod"] }),
        json!({ "name": "db1", "ip": "127.0.0.142", "function": "Linux.DB", "app": "mysql", "tags": ["prod"] }),
        json!({ "name": "db2", "ip": "127.0.0.143", "function": "Linux.DB", "app": "mysql" }),
    ] {
        let (status, body) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

/// `method path` with `body` as `token`.
fn call(server: &Server, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = server.client.request(method, format!("{}{path}", server.base)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    server.send(request)
}

/// Adds user `name` with `role` and returns its grants (the one on everything it is created with).
fn add_user(server: &Server, name: &str, role: &str) -> Vec<Value> {
    let (status, body) = server.post("/api/users", &json!({ "name": name, "role": role }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    grants(server, name)
}

fn grants(server: &Server, user: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/api/users/{user}/grants"));
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

fn grant(server: &Server, user: &str, body: Value) -> Value {
    let (status, answer) = server.post(&format!("/api/users/{user}/grants"), &body);
    assert_eq!(status, StatusCode::CREATED, "{body} → {answer}");
    answer
}

fn revoke(server: &Server, user: &str, id: i64) {
    let path = format!("/api/users/{user}/grants/{id}");
    let (status, body) = call(server, &server.token, Method::DELETE, &path, None);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// A user limited by `spec` (its grant on everything replaced by it) and a token of its own with `role`.
fn scoped_user(server: &Server, name: &str, role: &str, spec: Value) -> String {
    add_user(server, name, role);
    server.narrow(name, &spec);
    user_token(server, name, role)
}

fn user_token(server: &Server, user: &str, role: &str) -> String {
    let out = cli(server, &["token", "create", "--role", role, "--name", &format!("{user}-{role}"), "--user", user]);
    assert!(out.status.success(), "token create: {out:?}");
    out.stdout.trim().to_owned()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v[key].as_str().unwrap_or_default().to_owned()).collect()
}

fn submit(server: &Server, token: &str, module: u32, hosts: &[&str], params: Value) -> (StatusCode, Value) {
    call(server, token, Method::POST, "/api/jobs", Some(json!({ "module": module, "hosts": hosts, "params": params })))
}

#[test]
fn grants_are_checked_when_given_and_listed_and_removed() {
    let server = server();
    let everything = add_user(&server, "carol", "viewer");
    assert_eq!(everything.len(), 1, "{everything:?}");
    assert_eq!(everything[0]["role"], Value::Null, "the user's own role: {everything:?}");
    assert_eq!(everything[0]["functions"], json!([]));
    add_user(&server, "olga", "operator");
    let template = {
        let body = json!({ "name": "t", "module": 9008, "params": { "seconds": 0 }, "targets": { "hosts": ["db1"] } });
        let (status, answer) = server.post("/api/templates", &body);
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["id"].as_i64().unwrap()
    };

    // 400: not what the document allows; 422: well formed, but naming what does not exist or giving too much.
    let (bad, unprocessable) = (StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = (template + 100).to_string();
    let refused = [
        ("carol", json!({ "role": "operator" }), unprocessable, "role", "carol is a viewer"),
        ("olga", json!({ "role": "admin" }), bad, "role", "must be viewer or operator"),
        ("olga", json!({ "functions": ["Linux.Nope"] }), unprocessable, "functions", "Linux.Nope"),
        ("olga", json!({ "apps": ["nginx", "apache"] }), unprocessable, "apps", "apache"),
        ("olga", json!({ "tags": ["staging"] }), unprocessable, "tags", "staging"),
        ("olga", json!({ "modules": [4242] }), unprocessable, "modules", "4242"),
        ("olga", json!({ "templates": [template + 100] }), unprocessable, "templates", missing.as_str()),
        ("olga", json!({ "role": "operator", "color": "red" }), bad, "color", "unknown field"),
    ];
    for (user, body, wanted, field, says) in refused {
        let (status, answer) = server.post(&format!("/api/users/{user}/grants"), &body);
        assert_eq!(status, wanted, "{body} → {answer}");
        assert_eq!(answer["field"], field, "{body} → {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{body} → {answer}");
    }
    let (status, answer) = server.post("/api/users/nobody/grants", &json!({}));
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(grants(&server, "olga").len(), 1, "a refused grant leaves nothing behind");

    let given = grant(
        &server,
        "olga",
        json!({ "role": "operator", "functions": [" Linux.DB "], "tags": ["PROD"], "modules": [9008, 9008],
                "templates": [template] }),
    );
    assert_eq!(given["role"], "operator");
    assert_eq!(given["functions"], json!(["Linux.DB"]), "trimmed");
    assert_eq!(given["tags"], json!(["prod"]), "tags are stored in lower case, as hosts' are");
    assert_eq!(given["modules"], json!([9008]), "once each");
    assert_eq!(given["templates"], json!([template]));
    assert_eq!(given["created_by"], "first-admin");
    let listed = grants(&server, "olga");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1], given);

    revoke(&server, "olga", given["id"].as_i64().unwrap());
    let path = format!("/api/users/olga/grants/{}", given["id"]);
    let (status, _) = call(&server, &server.token, Method::DELETE, &path, None);
    assert_eq!(status, StatusCode::NOT_FOUND, "removed once");
    // Another user's grant is not this user's to remove.
    let path = format!("/api/users/olga/grants/{}", everything[0]["id"]);
    let (status, _) = call(&server, &server.token, Method::DELETE, &path, None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(grants(&server, "carol").len(), 1);
}

#[test]
fn a_scoped_operator_runs_and_cancels_only_on_its_hosts() {
    let server = server();
    let dbop = scoped_user(&server, "dbop", "operator", json!({ "role": "operator", "functions": ["Linux.DB"] }));

    let (status, answer) = submit(&server, &dbop, 9008, &["db1", "web1"], json!({ "seconds": 0 }));
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["field"], "hosts");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("web1") && !error.contains("db1"), "names only the host outside: {error}");
    let (status, answer) = submit(&server, &dbop, 9008, &["db1", "db2"], json!({ "seconds": 0 }));
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let own = answer["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(own, Duration::from_secs(30))["status"], "succeeded");

    // An admin's long job on the web host: not dbop's to see, cancel or re-run.
    let web = server.submit(9008, &["web1"], json!({ "seconds": 30 }));
    for (method, path) in [
        (Method::GET, format!("/api/jobs/{web}")),
        (Method::GET, format!("/api/jobs/{web}/events")),
        (Method::POST, format!("/api/jobs/{web}/cancel")),
    ] {
        let (status, answer) = call(&server, &dbop, method.clone(), &path, None);
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    let (status, answer) =
        call(&server, &dbop, Method::POST, &format!("/api/jobs/{web}/rerun"), Some(json!({ "hosts": "all" })));
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, listed) = call(&server, &dbop, Method::GET, "/api/jobs", None);
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<i64> = listed.as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![own], "only the job on its hosts");
    let (status, _) = server.post(&format!("/api/jobs/{web}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK);

    // A job on db1 by the admin is dbop's to follow and cancel.
    let long = server.submit(9008, &["db1"], json!({ "seconds": 30 }));
    let (status, answer) = call(&server, &dbop, Method::POST, &format!("/api/jobs/{long}/cancel"), None);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(server.wait_job(long, Duration::from_secs(30))["status"], "cancelled");

    // Its viewer token runs nothing, whatever the grant says; the grant caps a token, never raises it.
    let viewer = user_token(&server, "dbop", "viewer");
    let (status, answer) = submit(&server, &viewer, 9008, &["db1"], json!({ "seconds": 0 }));
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    // The inventory as dbop sees it, in the API and on the console's inventory page.
    let (status, hosts) = call(&server, &dbop, Method::GET, "/api/hosts", None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&hosts, "name"), ["db1", "db2"]);
}

#[test]
fn a_grant_on_modules_or_saved_jobs_runs_only_those() {
    let server = server();
    let saved = {
        let body = json!({ "name": "db-roll", "module": 9008, "params": { "seconds": 0 },
                           "targets": { "functions": ["Linux.DB"] } });
        let (status, answer) = server.post("/api/templates", &body);
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["id"].as_i64().unwrap()
    };
    let probe = scoped_user(&server, "probe", "operator", json!({ "functions": ["Linux.DB"], "modules": [1003] }));
    let (status, answer) = submit(&server, &probe, 9008, &["db1"], json!({ "seconds": 0 }));
    assert_eq!(status, StatusCode::FORBIDDEN, "another module: {answer}");
    let (status, answer) = submit(&server, &probe, 1003, &["db1"], json!({}));
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");

    let runner = scoped_user(&server, "runner", "operator", json!({ "templates": [saved] }));
    let (status, answer) = submit(&server, &runner, 9008, &["db1"], json!({ "seconds": 0 }));
    assert_eq!(status, StatusCode::FORBIDDEN, "the module by hand: {answer}");
    let (status, answer) = call(&server, &runner, Method::POST, &format!("/api/templates/{saved}/run"), None);
    assert_eq!(status, StatusCode::ACCEPTED, "the saved job: {answer}");
    let job = server.wait_job(answer["id"].as_i64().unwrap(), Duration::from_secs(30));
    assert_eq!((job["status"].as_str(), job["hosts"].clone()), (Some("succeeded"), json!(["db1", "db2"])));
}

#[test]
fn saved_jobs_and_schedules_are_within_the_grants_and_fires_follow_them() {
    let server = server();
    let dbop = scoped_user(&server, "dbop", "operator", json!({ "functions": ["Linux.DB"] }));
    let spec = |name: &str, targets: Value| json!({ "name": name, "module": 9008, "params": { "seconds": 0 }, "targets": targets });
    let (status, web) = server.post("/api/templates", &spec("web", json!({ "tags": ["prod"] })));
    assert_eq!(status, StatusCode::CREATED, "{web}");
    let web = web["id"].as_i64().unwrap();

    let (status, answer) =
        call(&server, &dbop, Method::POST, "/api/templates", Some(spec("mine", json!({ "tags": ["prod"] }))));
    assert_eq!(status, StatusCode::FORBIDDEN, "prod includes web1: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("web1"), "{answer}");
    let (status, answer) =
        call(&server, &dbop, Method::POST, "/api/templates", Some(spec("mine", json!({ "functions": ["Linux.DB"] }))));
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mine = answer["id"].as_i64().unwrap();

    let (_, listed) = call(&server, &dbop, Method::GET, "/api/templates", None);
    assert_eq!(names(&listed, "name"), ["mine"]);
    for (method, path) in [
        (Method::GET, format!("/api/templates/{web}")),
        (Method::GET, format!("/api/templates/{web}/hosts")),
        (Method::POST, format!("/api/templates/{web}/run")),
        (Method::DELETE, format!("/api/templates/{web}")),
    ] {
        let (status, answer) = call(&server, &dbop, method.clone(), &path, None);
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    let (status, answer) = call(
        &server,
        &dbop,
        Method::PUT,
        &format!("/api/templates/{mine}"),
        Some(spec("mine", json!({ "hosts": ["web1"] }))),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "edited onto web1: {answer}");

    let every2 =
        |template: i64| json!({ "name": format!("s{template}"), "template": template, "cron": "*/2 * * * * *" });
    let (status, answer) = call(&server, &dbop, Method::POST, "/api/schedules", Some(every2(web)));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["field"], "template");
    let (status, answer) = call(&server, &dbop, Method::POST, "/api/schedules", Some(every2(mine)));
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let schedule = answer["id"].as_i64().unwrap();
    let (status, answer) = server.post("/api/schedules", &every2(web));
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (_, listed) = call(&server, &dbop, Method::GET, "/api/schedules", None);
    assert_eq!(names(&listed, "name"), [format!("s{mine}")]);

    // It fires as dbop, within dbop's grants as they are at each fire.
    let fires = |outcome: &str| -> Vec<Value> {
        let (_, list) = server.get(&format!("/api/schedules/{schedule}/fires?limit=100"));
        list.as_array().unwrap().iter().filter(|f| f["outcome"] == outcome).cloned().collect()
    };
    wait_until(Duration::from_secs(10), || !fires("fired").is_empty());
    let dbop_grants = grants(&server, "dbop");
    grant(&server, "dbop", json!({ "functions": ["Linux.Web"] }));
    revoke(&server, "dbop", dbop_grants[0]["id"].as_i64().unwrap());
    wait_until(Duration::from_secs(10), || !fires("failed").is_empty());
    let reason = fires("failed")[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("db1") && reason.contains("db2"), "{reason}");
}

#[test]
fn a_scoped_viewer_sees_only_its_hosts_audit_events_in_queries_the_csv_and_the_stream() {
    let server = server();
    let viewer = scoped_user(&server, "dbview", "viewer", json!({ "apps": ["mysql"] }));
    let agent = |host: &str| {
        let out = cli(&server, &["hosts", "token", host]);
        assert!(out.status.success(), "{out:?}");
        out.stdout.trim().to_owned()
    };
    let (web_agent, db_agent) = (agent("web1"), agent("db1"));
    let post = |token: &str, seq: i64, command: &str| {
        let event = json!({ "stream": "s1", "seq": seq, "history_id": seq, "user": "root", "login_user": "",
            "uid": 0, "tty": "/dev/pts/1", "ip": "127.0.0.1", "time": "2026-12-04 10:00:00", "command": command });
        let (status, body) =
            call(&server, token, Method::POST, "/api/audit/events", Some(json!({ "events": [event] })));
        assert_eq!(status, StatusCode::OK, "{body}");
    };

    // The live stream, opened before the events arrive.
    let (tx, rx) = mpsc::channel();
    let url = format!("{}/api/audit/stream", server.base);
    let token = viewer.clone();
    thread::spawn(move || {
        let client = Client::builder().timeout(None).build().unwrap();
        let response = client.get(url).bearer_auth(token).send().unwrap();
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                if tx.send(data.trim().to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    thread::sleep(Duration::from_millis(500));
    post(&web_agent, 1, "rm -rf /srv/www");
    post(&db_agent, 1, "mysqladmin status");
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("an event on the stream");
    assert!(first.contains("mysqladmin") && !first.contains("/srv/www"), "{first}");

    let (status, page) = call(&server, &viewer, Method::GET, "/api/audit/events", None);
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page["events"], "host"), ["db1"]);
    let (_, page) = call(&server, &viewer, Method::GET, "/api/audit/events?host=web1", None);
    assert_eq!(page["events"], json!([]), "a host outside matches nothing");
    let (_, page) = call(&server, &viewer, Method::GET, "/api/audit/events?q=srv", None);
    assert_eq!(page["events"], json!([]));
    let csv = server.client.get(format!("{}/api/audit/events.csv", server.base)).bearer_auth(&viewer).send().unwrap();
    let csv = csv.text().unwrap();
    assert!(csv.contains("mysqladmin") && !csv.contains("/srv/www"), "{csv}");
    let (_, all) = server.get("/api/audit/events");
    assert_eq!(all["events"].as_array().unwrap().len(), 2, "the admin sees both");

    // The home page: no fleet-wide counts, and only its own silent hosts.
    let (status, overview) = call(&server, &viewer, Method::GET, "/api/overview?silent_after_secs=60", None);
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert_eq!((overview["fleet_counts"].clone(), overview["jobs_per_day"].clone()), (json!(false), json!([])));
    let (_, overview) = server.get("/api/overview");
    assert_eq!(overview["fleet_counts"], true);
}

#[test]
fn a_user_without_grants_reaches_nothing_and_an_admin_is_never_limited() {
    let server = server();
    let everything = add_user(&server, "idle", "operator");
    let token = user_token(&server, "idle", "operator");
    let (status, hosts) = call(&server, &token, Method::GET, "/api/hosts", None);
    assert_eq!((status, names(&hosts, "name").len()), (StatusCode::OK, 4), "created with a grant on everything");
    revoke(&server, "idle", everything[0]["id"].as_i64().unwrap());
    let (_, hosts) = call(&server, &token, Method::GET, "/api/hosts", None);
    assert_eq!(hosts, json!([]), "its last grant removed, it reaches nothing");
    let (status, answer) = submit(&server, &token, 9008, &["localhost"], json!({ "seconds": 0 }));
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    // An admin's grants do not limit it (they would if it were made an operator).
    add_user(&server, "boss", "admin");
    let boss = user_token(&server, "boss", "admin");
    grant(&server, "boss", json!({ "functions": ["Linux.DB"] }));
    let (_, hosts) = call(&server, &boss, Method::GET, "/api/hosts", None);
    assert_eq!(names(&hosts, "name").len(), 4);
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        thread::sleep(Duration::from_millis(100));
    }
}
