//! The HTTP API and the command line of the running binary: authentication and roles, the inventory, jobs, and
//! metrics, each test against its own server (SQLite in a temporary directory, modules from `target/plugins`).

mod common;

use std::{fs, path::Path, time::Duration};

use common::{cli, Options, Server};
use reqwest::{header::AUTHORIZATION, Method, StatusCode};
use serde_json::{json, Value};

const UNAUTHORIZED: &str = "missing or invalid bearer token";

/// Sends `method path` (with `body` as JSON when given) carrying `authorization` as the header, if any.
fn call(
    server: &Server,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = server.client.request(method.clone(), format!("{}{path}", server.base));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    server.send(request)
}

fn get_as(server: &Server, token: &str, path: &str) -> (StatusCode, Value) {
    call(server, &Method::GET, path, None, Some(&format!("Bearer {token}")))
}

fn post_as(server: &Server, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    call(server, &Method::POST, path, Some(body), Some(&format!("Bearer {token}")))
}

/// Posts a raw body (not necessarily JSON) with the admin token.
fn post_raw(server: &Server, path: &str, content_type: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request =
        server.client.post(format!("{}{path}", server.base)).bearer_auth(&server.token).body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    server.send(request)
}

fn is_token(text: &str) -> bool {
    text.strip_prefix("oms_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Creates a token with the command line and checks it prints the token alone.
fn create_token(server: &Server, role: &str, name: &str) -> String {
    let out = cli(server, &["token", "create", "--role", role, "--name", name]);
    assert!(out.status.success(), "token create failed: {out:?}");
    let token =
        out.stdout.strip_suffix('\n').unwrap_or_else(|| panic!("one line ending in a newline: {:?}", out.stdout));
    assert!(is_token(token), "stdout is exactly one line `oms_` + 64 hex: {:?}", out.stdout);
    token.to_owned()
}

fn job_count(server: &Server) -> usize {
    let (status, jobs) = server.get("/api/jobs");
    assert_eq!(status, StatusCode::OK, "{jobs}");
    jobs.as_array().expect("a list of jobs").len()
}

fn host_names(server: &Server) -> Vec<String> {
    let (status, hosts) = server.get("/api/hosts");
    assert_eq!(status, StatusCode::OK, "{hosts}");
    hosts.as_array().expect("a list of hosts").iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect()
}

/// The first line of /etc/issue, which module 1003 prints (`head -n 1 /etc/issue`).
fn first_line_of_issue() -> String {
    let issue = fs::read_to_string("/etc/issue").expect("this test needs /etc/issue");
    issue.lines().next().expect("/etc/issue has a first line").to_owned()
}

/// A request read but refused for what it says: 422, with the field (a body that cannot be read is
/// [`assert_bad_body`]'s 400).
fn assert_unprocessable(answer: (StatusCode, Value), field: Option<&str>, error: &str) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    match field {
        Some(field) => assert_eq!(body, json!({ "error": error, "field": field })),
        None => assert_eq!(body, json!({ "error": error })),
    }
}

/// A 400 without a field whose message contains each of `parts` (serde's wording for malformed bodies).
/// A 400 whose message mentions each of `parts` and whose `field` is `field` (absent when `None`).
fn assert_bad_body(answer: (StatusCode, Value), field: Option<&str>, parts: &[&str]) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("an error message: {body}"));
    assert_eq!(body.get("field").and_then(Value::as_str), field, "{body}");
    for part in parts {
        assert!(error.contains(part), "{error:?} should mention {part:?}");
    }
}

#[test]
fn healthz_needs_no_token_and_every_other_route_does() {
    let server = Server::start();
    assert_eq!(call(&server, &Method::GET, "/healthz", None, None), (StatusCode::OK, json!({ "status": "ok" })));
    assert_eq!(
        call(&server, &Method::GET, "/healthz", None, Some("Bearer nonsense")),
        (StatusCode::OK, json!({ "status": "ok" }))
    );

    let job = json!({ "module": 1003, "hosts": ["127.0.0.1"] });
    let host = json!({ "name": "web1", "ip": "10.0.0.1" });
    let routes: [(Method, &str, Option<&Value>); 8] = [
        (Method::GET, "/api/modules", None),
        (Method::GET, "/api/hosts", None),
        (Method::GET, "/api/jobs", None),
        (Method::GET, "/api/jobs/1", None),
        (Method::GET, "/metrics", None),
        (Method::POST, "/api/jobs", Some(&job)),
        (Method::POST, "/api/hosts", Some(&host)),
        (Method::POST, "/api/jobs/1/cancel", None),
    ];
    let admin = &server.token;
    assert!(is_token(admin), "the first-start token: {admin:?}");
    let last = admin.chars().last().unwrap();
    let flipped = format!("{}{}", &admin[..admin.len() - 1], if last == '0' { '1' } else { '0' });
    let headers: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Basic YWRtaW46YWRtaW4=".into()),
        Some(admin.clone()),
        Some(format!("Token {admin}")),
        Some(format!("Bearer{admin}")),
        Some("Bearer oms_short".into()),
        Some(format!("Bearer oms_{}", "0".repeat(64))),
        Some(format!("Bearer {flipped}")),
        Some(format!("Bearer oms_{}", admin[4..].to_uppercase())),
        Some(format!("Bearer {}", admin.to_uppercase())),
        Some(format!("Bearer {admin}x")),
    ];
    for (method, path, body) in &routes {
        for header in &headers {
            let answer = call(&server, method, path, *body, header.as_deref());
            assert_eq!(
                answer,
                (StatusCode::UNAUTHORIZED, json!({ "error": UNAUTHORIZED })),
                "{method} {path} with {header:?}"
            );
        }
    }
    // The scheme's name is case-insensitive (RFC 7235); the token is not.
    for header in [format!("bearer {admin}"), format!("BEARER {admin}"), format!("Bearer  {admin} ")] {
        assert_eq!(
            call(&server, &Method::GET, "/api/jobs", None, Some(&header)),
            (StatusCode::OK, json!([])),
            "{header}"
        );
    }
    let response = server.client.get(format!("{}/api/jobs", server.base)).send().unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // The refused POSTs did nothing; the real token still works on every GET.
    for (method, path, _) in &routes {
        if *method == Method::GET && *path != "/api/jobs/1" {
            assert_eq!(get_as(&server, admin, path).0, StatusCode::OK, "{path}");
        }
    }
    assert_eq!(host_names(&server), ["localhost"]);
    assert_eq!(job_count(&server), 0);
}

#[test]
fn viewers_read_operators_run_jobs_admins_change_the_inventory() {
    let server = Server::start();
    let viewer = create_token(&server, "viewer", "v");
    let operator = create_token(&server, "operator", "o");
    let admin = server.token.clone();
    assert!(viewer != operator && viewer != admin && operator != admin);
    let job = json!({ "module": 1003, "hosts": ["127.0.0.1"] });
    let host = |name: &str, ip: &str| json!({ "name": name, "ip": ip });

    for path in ["/api/modules", "/api/hosts", "/api/jobs", "/metrics"] {
        assert_eq!(get_as(&server, &viewer, path).0, StatusCode::OK, "viewer GET {path}");
    }
    let needs = |role: &str| json!({ "error": format!("this needs the {role} role") });
    assert_eq!(post_as(&server, &viewer, "/api/jobs", &job), (StatusCode::FORBIDDEN, needs("operator")));
    assert_eq!(
        post_as(&server, &viewer, "/api/hosts", &host("v1", "10.0.0.1")),
        (StatusCode::FORBIDDEN, needs("admin"))
    );
    assert_eq!(post_as(&server, &viewer, "/api/jobs/1/cancel", &json!({})), (StatusCode::FORBIDDEN, needs("operator")));
    assert_eq!(job_count(&server), 0);

    let (status, body) = post_as(&server, &operator, "/api/jobs", &job);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let by_operator = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!((&by_operator["status"], &by_operator["created_by"]), (&json!("succeeded"), &json!("o")));
    assert_eq!(
        post_as(&server, &operator, "/api/hosts", &host("o1", "10.0.0.2")),
        (StatusCode::FORBIDDEN, needs("admin"))
    );
    assert_eq!(get_as(&server, &operator, "/api/jobs").0, StatusCode::OK);

    let (status, body) = post_as(&server, &admin, "/api/jobs", &job);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let by_admin = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!((&by_admin["status"], &by_admin["created_by"]), (&json!("succeeded"), &json!("first-admin")));
    let (status, row) = post_as(&server, &admin, "/api/hosts", &host("a1", "10.0.0.3"));
    assert_eq!((status, &row["name"]), (StatusCode::CREATED, &json!("a1")), "{row}");

    assert_eq!(job_count(&server), 2);
    assert_eq!(host_names(&server), ["a1", "localhost"]);
}

#[test]
fn a_fresh_server_lists_this_machine() {
    let server = Server::start();
    let (status, hosts) = server.get("/api/hosts");
    assert_eq!(status, StatusCode::OK);
    let hosts = hosts.as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let mut only = hosts[0].clone();
    assert!(only["created_at"].as_i64().is_some_and(|t| t > 0), "{only}");
    only.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        only,
        json!({ "id": 1, "name": "localhost", "ip": "127.0.0.1", "wan_ip": null, "op": null, "function": null, "app": null,
            "port": null, "user": null, "tags": [] })
    );
}

#[test]
fn hosts_are_added_with_canonical_addresses_and_conflicts_are_409() {
    let server = Server::start();
    let (status, mut row) = server.post(
        "/api/hosts",
        &json!({ "name": "web1", "ip": "10.1.1.9", "wan_ip": "203.0.113.9", "op": "ops", "function": "Linux.Web", "app": "nginx" }),
    );
    assert_eq!(status, StatusCode::CREATED, "{row}");
    assert!(row["created_at"].as_i64().is_some_and(|t| t > 0), "{row}");
    row.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        row,
        json!({ "id": 2, "name": "web1", "ip": "10.1.1.9", "wan_ip": "203.0.113.9", "op": "ops", "function": "Linux.Web", "app": "nginx",
            "port": null, "user": null, "tags": [] })
    );

    let (status, v6) = server.post("/api/hosts", &json!({ "name": "v6", "ip": "2001:0db8::0001", "wan_ip": "" }));
    assert_eq!(status, StatusCode::CREATED, "{v6}");
    assert_eq!((&v6["ip"], &v6["wan_ip"], &v6["function"]), (&json!("2001:db8::1"), &Value::Null, &Value::Null));
    let (status, full) =
        server.post("/api/hosts", &json!({ "name": "v6-full", "ip": "2001:0db8:85a3:0000:0000:8a2e:0370:7334" }));
    assert_eq!((status, &full["ip"]), (StatusCode::CREATED, &json!("2001:db8:85a3::8a2e:370:7334")), "{full}");

    let conflict = |body: Value, message: &str| {
        assert_eq!(server.post("/api/hosts", &body), (StatusCode::CONFLICT, json!({ "error": message })), "{body}");
    };
    conflict(json!({ "name": "web1", "ip": "10.1.1.10" }), "a host named \"web1\" or with IP 10.1.1.10 exists already");
    conflict(json!({ "name": "web2", "ip": "10.1.1.9" }), "a host named \"web2\" or with IP 10.1.1.9 exists already");
    // Another spelling of a stored address is the same address.
    conflict(
        json!({ "name": "v6b", "ip": "2001:DB8:0:0::1" }),
        "a host named \"v6b\" or with IP 2001:db8::1 exists already",
    );
    conflict(json!({ "name": "lo", "ip": " 127.0.0.1 " }), "a host named \"lo\" or with IP 127.0.0.1 exists already");

    assert_eq!(host_names(&server), ["localhost", "v6", "v6-full", "web1"]);
    // A job finds the IPv6 host by its canonical address.
    let (status, body) = server.post("/api/jobs", &json!({ "module": 1003, "hosts": ["2001:db8::1"] }));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!(job["hosts"], json!(["v6"]), "{job}");
}

#[test]
fn invalid_hosts_are_refused_naming_the_field() {
    let server = Server::start();
    let name_rule = "must be 1-255 letters, digits, '-', '_' or '.'";
    let post = |body: Value| server.post("/api/hosts", &body);
    assert_unprocessable(
        post(json!({ "name": "x", "ip": "999.1.1.1" })),
        Some("ip"),
        "\"999.1.1.1\" is not an IPv4 or IPv6 address",
    );
    assert_unprocessable(post(json!({ "name": "x", "ip": "" })), Some("ip"), "\"\" is not an IPv4 or IPv6 address");
    assert_unprocessable(
        post(json!({ "name": "x", "ip": "web1" })),
        Some("ip"),
        "\"web1\" is not an IPv4 or IPv6 address",
    );
    assert_unprocessable(
        post(json!({ "name": "x", "ip": "10.0.0.1", "wan_ip": "10.0.0.256" })),
        Some("wan_ip"),
        "\"10.0.0.256\" is not an IPv4 or IPv6 address",
    );
    for name in ["", "   ", "web 1", "web1;id", "web1; rm -rf /", "$(id)", "a/b", "é", "n".repeat(256).as_str()] {
        assert_unprocessable(post(json!({ "name": name, "ip": "10.0.0.1" })), Some("name"), name_rule);
    }
    let together = "function and app are given together or not at all";
    assert_unprocessable(
        post(json!({ "name": "x", "ip": "10.0.0.1", "function": "Linux.Web" })),
        Some("app"),
        together,
    );
    assert_unprocessable(post(json!({ "name": "x", "ip": "10.0.0.1", "app": "nginx" })), Some("app"), together);
    assert_unprocessable(
        post(json!({ "name": "x", "ip": "10.0.0.1", "function": " ", "app": "nginx" })),
        Some("function"),
        "categories must be 1-64 printable characters",
    );
    assert_unprocessable(
        post(json!({ "name": "x", "ip": "10.0.0.1", "op": "o".repeat(65) })),
        Some("op"),
        "must be at most 64 characters",
    );
    // Bodies serde refuses: the message names what is wrong.
    assert_bad_body(
        post(json!({ "name": "x", "ip": "10.0.0.1", "color": "red" })),
        Some("color"),
        &["unknown field `color`"],
    );
    assert_bad_body(post(json!({ "name": "x" })), Some("ip"), &["missing field `ip`"]);
    assert_bad_body(post(json!({ "name": 7, "ip": "10.0.0.1" })), Some("name"), &["name"]);
    assert_bad_body(
        post_raw(&server, "/api/hosts", Some("application/json"), r#"{"name": "x", "ip": "#),
        None,
        &["EOF"],
    );
    assert_bad_body(post_raw(&server, "/api/hosts", Some("application/json"), "not json"), None, &["expected"]);
    assert_bad_body(
        post_raw(&server, "/api/hosts", None, r#"{"name": "x", "ip": "10.0.0.1"}"#),
        None,
        &["Content-Type"],
    );

    assert_eq!(host_names(&server), ["localhost"]);
}

#[test]
fn module_1003_runs_on_this_machine_by_ip_and_by_name() {
    let server = Server::start();
    let expected_stdout = format!("{}\n", first_line_of_issue());
    for hosts in [&["127.0.0.1"][..], &["localhost"], &["127.0.0.1", "localhost"]] {
        let job = server.run_job(1003, hosts, json!({}));
        assert_eq!(
            (&job["status"], &job["error"], &job["module"], &job["module_version"], &job["backend"]),
            (&json!("succeeded"), &Value::Null, &json!(1003), &json!("1.0.0"), &json!("local")),
            "{job}"
        );
        assert_eq!(
            (&job["hosts"], &job["params"], &job["created_by"]),
            (&json!(["localhost"]), &json!({}), &json!("first-admin"))
        );
        let results = job["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "one row per distinct host: {job}");
        let result = &results[0];
        assert_eq!(
            (&result["host"], &result["status"], &result["rc"], &result["stderr"]),
            (&json!("localhost"), &json!("ok"), &json!(0), &json!(""))
        );
        assert_eq!(result["stdout"], expected_stdout.as_str());
        let (created, started, finished) = (
            job["created_at"].as_i64().unwrap(),
            job["started_at"].as_i64().unwrap(),
            job["finished_at"].as_i64().unwrap(),
        );
        assert!(created <= started && started <= finished, "{job}");
    }

    // The listing is newest first and carries no results.
    let (status, jobs) = server.get("/api/jobs");
    assert_eq!(status, StatusCode::OK);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect::<Vec<_>>(), [3, 2, 1]);
    assert!(jobs.iter().all(|j| j["results"] == json!([]) && j["status"] == "succeeded"), "{jobs:?}");
}

#[test]
fn bad_job_requests_are_refused_and_create_nothing() {
    let server = Server::start_with(Options { seed: vec![1001, 1003], ..Options::default() });
    server.run_job(1003, &["localhost"], json!({}));
    assert_eq!(job_count(&server), 1);
    let post = |body: Value| server.post("/api/jobs", &body);

    let unknown = "unknown hosts (not in the inventory): 10.9.9.9";
    assert_unprocessable(post(json!({ "module": 1003, "hosts": ["10.9.9.9"] })), Some("hosts"), unknown);
    assert_unprocessable(post(json!({ "module": 1003, "hosts": ["127.0.0.1", "10.9.9.9"] })), Some("hosts"), unknown);
    // Host names are case-insensitive (LOCALHOST is localhost); unknown ones are named as they were given.
    assert_unprocessable(
        post(json!({ "module": 1003, "hosts": ["10.9.9.9", "LOCALHOST", "Web"] })),
        Some("hosts"),
        "unknown hosts (not in the inventory): 10.9.9.9, Web",
    );
    assert_unprocessable(post(json!({ "module": 1003, "hosts": [] })), Some("hosts"), "no hosts given");
    assert_unprocessable(
        post(json!({ "module": 4242, "hosts": ["127.0.0.1"] })),
        Some("module"),
        "module Mid_4242 does not exist; add it to the plugins directory",
    );
    assert_unprocessable(
        post(json!({ "module": 1003, "hosts": ["127.0.0.1"], "params": { "path": "/etc/shadow" } })),
        Some("path"),
        "parameter path: module 1003 has no such parameter",
    );
    for lines in [json!("1; id"), json!("$(id)"), json!(1.5), json!(true)] {
        assert_unprocessable(
            post(json!({ "module": 1001, "hosts": ["127.0.0.1"], "params": { "lines": lines } })),
            Some("lines"),
            "parameter lines: must be a whole number",
        );
    }
    assert_unprocessable(
        post(json!({ "module": 1001, "hosts": ["127.0.0.1"], "params": { "lines": 0 } })),
        Some("lines"),
        "parameter lines: must be between 1 and 10000",
    );
    assert_bad_body(post(json!({ "module": 1003 })), Some("hosts"), &["missing field `hosts`"]);
    assert_bad_body(
        post(json!({ "module": 1003, "hosts": ["localhost"], "sudo": true })),
        Some("sudo"),
        &["unknown field `sudo`"],
    );
    assert_bad_body(post(json!({ "module": "1003", "hosts": ["localhost"] })), Some("module"), &["module"]);
    assert_bad_body(post(json!({ "module": -1, "hosts": ["localhost"] })), Some("module"), &["module"]);
    assert_bad_body(post_raw(&server, "/api/jobs", Some("application/json"), "{\"module\": 1003,"), None, &["EOF"]);

    assert_eq!(job_count(&server), 1, "no refused request created a job");
}

#[test]
fn unknown_jobs_are_404_and_finished_jobs_cannot_be_cancelled() {
    let server = Server::start();
    let not_found = |id: i64| (StatusCode::NOT_FOUND, json!({ "error": format!("job {id} not found") }));
    assert_eq!(server.get("/api/jobs/999999"), not_found(999999));
    assert_eq!(server.post("/api/jobs/999999/cancel", &json!({})), not_found(999999));
    let job = server.run_job(1003, &["127.0.0.1"], json!({}));
    let id = job["id"].as_i64().unwrap();
    assert_eq!(
        server.post(&format!("/api/jobs/{id}/cancel"), &json!({})),
        (StatusCode::CONFLICT, json!({ "error": format!("job {id} is already succeeded") }))
    );
    assert_eq!(server.get(&format!("/api/jobs/{id}")).1["status"], "succeeded", "a refused cancel changes nothing");
    assert_eq!(server.get(&format!("/api/jobs/{}", id + 1)), not_found(id + 1));
}

#[test]
fn the_job_history_filters_by_user_module_status_host_and_time() {
    let server = Server::start();
    let operator = create_token(&server, "operator", "nightly");
    let first = server.run_job(1003, &["127.0.0.1"], json!({}))["id"].as_i64().unwrap();
    let (status, body) = post_as(&server, &operator, "/api/jobs", &json!({ "module": 1003, "hosts": ["localhost"] }));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second = body["id"].as_i64().unwrap();
    server.wait_job(second, Duration::from_secs(30));
    let ids = |query: &str| -> Vec<i64> {
        let (status, jobs) = server.get(&format!("/api/jobs?{query}"));
        assert_eq!(status, StatusCode::OK, "{query}: {jobs}");
        jobs.as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect()
    };
    // The UTC day each job was created on, as `date` tells it.
    let day_of = |id: i64| {
        let created = server.get(&format!("/api/jobs/{id}")).1["created_at"].as_i64().unwrap() / 1000;
        let out = std::process::Command::new("date").args(["-u", "+%F", "-d", &format!("@{created}")]).output();
        String::from_utf8(out.unwrap().stdout).unwrap().trim().to_owned()
    };
    let (first_day, second_day) = (day_of(first), day_of(second));
    let none: Vec<i64> = Vec::new();
    assert_eq!(ids(""), [second, first]);
    assert_eq!(ids("user=nightly"), [second]);
    assert_eq!(ids("user=Nightly"), none, "names are exact");
    assert_eq!(ids("module=1003&status=succeeded"), [second, first]);
    assert_eq!(ids("module=1004"), none);
    assert_eq!(ids("status=failed"), none);
    assert_eq!(ids("host=localhost"), [second, first]);
    assert_eq!(ids("host=local"), none, "a host is matched by its whole name");
    assert_eq!(ids(&format!("from={first_day}")), [second, first]);
    assert_eq!(ids(&format!("from={first_day}&to={second_day}")), [second, first], "a day alone is the whole day");
    assert_eq!(ids("to=2000-01-01+23:59"), none);
    assert_eq!(ids("limit=1"), [second]);
    assert_eq!(ids(&format!("before={second}")), [first]);
    assert_eq!(ids("user=&module=&status=&host=&from=&to="), [second, first], "empty fields mean any");

    for (query, field) in [
        ("status=ok", "status"),
        ("module=nginx", "module"),
        ("from=yesterday", "from"),
        ("to=2026-02-30", "to"),
        ("from=2026-12-03&to=2026-12-02", "to"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let (status, body) = server.get(&format!("/api/jobs?{query}"));
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{query}: {body}"
        );
    }
    assert_bad_body(server.get("/api/jobs?owner=admin"), Some("owner"), &["unknown field `owner`"]);
    assert_bad_body(server.get("/api/jobs?before=x"), Some("before"), &["before"]);
}

/// Whitespace-separated words of each line of `text`.
fn words(text: &str) -> Vec<Vec<&str>> {
    text.lines().map(|line| line.split_whitespace().collect()).collect()
}

#[test]
fn cli_adds_and_lists_hosts() {
    let server = Server::start();
    let out = cli(&server, &["hosts", "add", "web1", "127.0.0.5", "--function", "Linux.Web", "--app", "nginx"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "added web1 (127.0.0.5)\n");
    let out = cli(&server, &["hosts", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        words(&out.stdout),
        [vec!["localhost", "127.0.0.1"], vec!["web1", "127.0.0.5", "Linux.Web", "/", "nginx"]]
    );

    let (_, hosts) = server.get("/api/hosts");
    let web1 = hosts.as_array().unwrap().iter().find(|h| h["name"] == "web1").cloned().expect("the server sees web1");
    assert_eq!(
        (&web1["ip"], &web1["function"], &web1["app"]),
        (&json!("127.0.0.5"), &json!("Linux.Web"), &json!("nginx"))
    );

    let refused = |args: &[&str], message: &str| {
        let out = cli(&server, args);
        assert!(!out.status.success(), "{args:?} should fail: {out:?}");
        assert_eq!(out.stdout, "");
        assert!(out.stderr.contains(message), "{args:?}: stderr should mention {message:?}: {}", out.stderr);
    };
    refused(&["hosts", "add", "web1", "127.0.0.6"], "a host named \"web1\" or with IP 127.0.0.6 exists already");
    refused(&["hosts", "add", "web 2", "127.0.0.6"], "must be 1-255 letters, digits, '-', '_' or '.'");
    refused(&["hosts", "add", "web2", "127.0.0.300"], "\"127.0.0.300\" is not an IPv4 or IPv6 address");
    refused(&["hosts", "add", "web2", "127.0.0.6", "--function", "Linux.Web"], "--app");
    assert_eq!(host_names(&server), ["localhost", "web1"]);
}

#[test]
fn cli_runs_a_module_and_reports_each_host() {
    // 1001 pointed at a file this (Debian) machine does not have, as a site may: a host that fails.
    let extra_config = "[modules.1001]\npath = \"/var/log/messages\"\n".to_owned();
    let server = Server::start_with(Options { seed: vec![1001, 1003], extra_config, ..Options::default() });
    let first = first_line_of_issue();
    let out = cli(&server, &["run", "--module", "1003", "--host", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, format!("host: localhost\nstatus: ok (rc 0)\n{}\n", first.trim_end()));
    let (_, jobs) = server.get("/api/jobs");
    let job = &jobs.as_array().unwrap()[0];
    assert_eq!((&job["module"], &job["status"]), (&json!(1003), &json!("succeeded")), "{job}");
    assert!(job["created_by"].as_str().is_some_and(|by| by.starts_with("cli:")), "{job}");

    assert!(!Path::new("/var/log/messages").exists(), "this test expects no /var/log/messages");
    let out = cli(&server, &["run", "--module", "1001", "--host", "127.0.0.1", "--param", "lines=5"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.starts_with("host: localhost\nstatus: failed (rc 1)\n"), "{out:?}");
    assert!(out.stderr.contains("localhost: tail: cannot open '/var/log/messages'"), "{}", out.stderr);
    assert!(out.stderr.contains("No such file or directory"), "{}", out.stderr);
    assert!(out.stderr.contains("job 2 failed: 1 of 1 hosts did not succeed"), "{}", out.stderr);
    assert_eq!(job_count(&server), 2);

    // A parameter that is not a number is refused before anything runs.
    let out = cli(&server, &["run", "--module", "1001", "--host", "127.0.0.1", "--param", "lines=1; id"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("omserver: parameter lines: must be a whole number"), "{}", out.stderr);
    let out = cli(&server, &["run", "--module", "1003", "--host", "10.9.9.9"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("unknown hosts (not in the inventory): 10.9.9.9"), "{}", out.stderr);
    assert_eq!(job_count(&server), 2, "refused runs create no job");
}

#[test]
fn cli_lists_modules() {
    let server = Server::start();
    let out = cli(&server, &["modules"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(words(&out.stdout), [vec!["1003", "Mid_1003.so", "View", "OS", "version", "1.0.0"]]);
}

#[test]
fn metrics_count_jobs_and_time_requests_by_route() {
    let server = Server::start();
    let job = server.run_job(1003, &["127.0.0.1"], json!({}));
    assert_eq!(job["status"], "succeeded");
    let (status, body) = server.get("/metrics");
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("Prometheus text");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"omserver_jobs_total{status=\"succeeded\"} 1"), "{text}");
    assert!(lines.contains(&"omserver_jobs_submitted_total 1"), "{text}");
    let timed = |route: &str, method: &str, code: &str| {
        let labels = [format!("method=\"{method}\""), format!("route=\"{route}\""), format!("status=\"{code}\"")];
        lines.iter().any(|l| {
            l.starts_with("omserver_http_request_duration_seconds") && labels.iter().all(|x| l.contains(x.as_str()))
        })
    };
    assert!(timed("/api/jobs", "POST", "202"), "{text}");
    assert!(timed("/api/jobs/{id}", "GET", "200"), "routes are labelled by their pattern, not the raw path: {text}");
    assert!(!text.contains(&format!("route=\"/api/jobs/{}\"", job["id"])), "{text}");
}

#[test]
fn host_names_are_case_insensitive_and_addresses_canonical() {
    let server = Server::start();
    let (status, row) = server.post("/api/hosts", &json!({ "name": "Web-01.Example", "ip": "2001:0db8::0002" }));
    assert_eq!(status, StatusCode::CREATED, "{row}");
    assert_eq!((row["name"].as_str(), row["ip"].as_str()), (Some("web-01.example"), Some("2001:db8::2")));
    let (status, body) = server.post("/api/hosts", &json!({ "name": "WEB-01.example", "ip": "10.0.0.9" }));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let job = server.run_job(1003, &["LOCALHOST"], json!({}));
    assert_eq!(job["hosts"], json!(["localhost"]));
    assert_eq!(job["status"], "succeeded", "{job}");
}
