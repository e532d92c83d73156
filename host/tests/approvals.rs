//! Four-eyes approval through the real server: a job under a policy waits as `pending_approval`; its requester
//! cannot approve it; another operator's approval starts it; a rejection ends it with the comment; an unanswered
//! one expires; a cancel withdraws it. Policies name what exists, and a schedule's runs wait unless exempt.

mod common;

use std::time::{Duration, Instant};

use common::{cli, receiver::Receiver, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A person's token: `user` (an operator, created here) acting through the API.
fn operator(server: &Server, user: &str) -> String {
    let (status, body) = server.post("/api/users", &json!({ "name": user, "role": "operator" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, token) = server.post("/api/tokens", &json!({ "name": user, "role": "operator", "user": user }));
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

fn call(server: &Server, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = server.client.request(method, format!("{}{path}", server.base)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    server.send(request)
}

fn job(server: &Server, id: i64) -> Value {
    let (status, job) = server.get(&format!("/api/jobs/{id}"));
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

fn wait_for_status(server: &Server, id: i64, limit: Duration, wanted: &str) -> Value {
    let started = Instant::now();
    loop {
        let job = job(server, id);
        if job["status"] == wanted {
            return job;
        }
        assert!(started.elapsed() < limit, "job {id} not {wanted} within {limit:?}: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server with `db1` (Linux.DB), the operators alice and bob, and a policy on module 1003 for Linux.DB.
fn setup(expire_secs: u64) -> (Server, String, String) {
    let server = Server::start();
    let (status, body) =
        server.post("/api/hosts", &json!({ "name": "db1", "ip": "127.0.0.4", "function": "Linux.DB", "app": "mysql" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let policy =
        json!({ "name": "db changes", "modules": [1003], "functions": ["Linux.DB"], "expire_secs": expire_secs });
    let (status, body) = server.post("/api/approval-policies", &policy);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["functions"].clone(), body["exempt_schedules"].clone()), (json!(["Linux.DB"]), json!(false)));
    let (alice, bob) = (operator(&server, "alice"), operator(&server, "bob"));
    (server, alice, bob)
}

fn submit(server: &Server, token: &str, hosts: &[&str]) -> i64 {
    let (status, body) =
        call(server, token, Method::POST, "/api/jobs", Some(json!({ "module": 1003, "hosts": hosts })));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_i64().unwrap()
}

#[test]
fn a_job_under_a_policy_waits_until_another_operator_approves_it() {
    let (server, alice, bob) = setup(600);
    // Approvers are told: a webhook subscribed to `job.approval` (for jobs of module 1003).
    let receiver = Receiver::start(&[200]);
    let (status, channel) =
        server.post("/api/notify/channels", &json!({ "name": "approvers", "kind": "webhook", "url": receiver.url }));
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let subscription = json!({ "channel": channel["id"], "event": "job.approval", "filter": { "module": 1003 } });
    let (status, body) = server.post("/api/notify/subscriptions", &subscription);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server.post(
        "/api/notify/subscriptions",
        &json!({ "channel": channel["id"], "event": "job.approval", "filter": { "status": ["failed"] } }),
    );
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("filter.status")), "{body}");

    let id = submit(&server, &alice, &["db1"]);
    let waiting = job(&server, id);
    assert_eq!(waiting["status"], "pending_approval", "{waiting}");
    let approval = &waiting["approval"];
    assert_eq!((approval["policy"].as_str(), approval["requested_by"].as_str()), (Some("db changes"), Some("alice")));
    assert!(approval["decision"].is_null() && waiting["results"].as_array().unwrap().is_empty(), "{waiting}");
    let (_, pending) = server.get("/api/jobs?status=pending_approval");
    assert_eq!(pending[0]["id"], id, "the history lists what waits: {pending}");
    let told = receiver.wait_for(Duration::from_secs(20), "the approval notice", |r| !r.is_empty());
    let notice = told[0].json();
    assert_eq!(
        (notice["event"].as_str(), notice["data"]["job"].as_i64()),
        (Some("job.approval"), Some(id)),
        "{notice}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(job(&server, id)["status"], "pending_approval", "nothing runs before the decision");

    // The requester's own approval is refused; another operator's starts it.
    let path = format!("/api/jobs/{id}/approve");
    let (status, body) = call(&server, &alice, Method::POST, &path, Some(json!({ "comment": "mine" })));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("another person"), "{body}");
    let (status, body) = call(&server, &bob, Method::POST, &path, Some(json!({ "comment": "checked the plan" })));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["decision"].as_str(), body["decided_by"].as_str()), (Some("approved"), Some("bob")));
    let done = wait_for_status(&server, id, Duration::from_secs(30), "succeeded");
    assert_eq!(done["results"][0]["host"], "db1");
    assert_eq!(done["approval"]["comment"], "checked the plan");
    let (status, _) = call(&server, &bob, Method::POST, &path, Some(json!({})));
    assert_eq!(status, StatusCode::CONFLICT, "decided once");

    // A job the policy does not cover runs at once.
    let free = submit(&server, &alice, &["localhost"]);
    let free = server.wait_job(free, Duration::from_secs(30));
    assert_eq!((free["status"].as_str(), free["approval"].clone()), (Some("succeeded"), Value::Null), "{free}");

    // The activity log says who asked and who decided.
    let (_, entries) = server.get("/api/activity?kind=approval");
    let entry = &entries[0];
    assert_eq!((entry["action"].as_str(), entry["actor"].as_str()), (Some("approval.approve"), Some("bob")));
    assert_eq!(entry["changes"]["requested_by"], "alice");
}

#[test]
fn a_rejected_job_ends_with_the_comment_an_unanswered_one_expires_and_a_cancel_withdraws_it() {
    let (server, alice, bob) = setup(3);
    let rejected = submit(&server, &alice, &["db1"]);
    let expiring = submit(&server, &alice, &["db1"]);
    let withdrawn = submit(&server, &alice, &["db1"]);

    let path = format!("/api/jobs/{rejected}/reject");
    let (status, body) = call(&server, &bob, Method::POST, &path, Some(json!({ "comment": "not in business hours" })));
    assert_eq!(status, StatusCode::OK, "{body}");
    let ended = job(&server, rejected);
    assert_eq!(ended["status"], "rejected");
    assert_eq!(ended["error"], "rejected by bob: not in business hours");
    let (status, _) = call(&server, &bob, Method::POST, &format!("/api/jobs/{rejected}/approve"), Some(json!({})));
    assert_eq!(status, StatusCode::CONFLICT, "a rejected job cannot be approved after");

    let (status, body) = call(&server, &alice, Method::POST, &format!("/api/jobs/{withdrawn}/cancel"), None);
    assert_eq!((status, body["cancelling"].clone()), (StatusCode::OK, json!(true)), "{body}");
    assert_eq!(job(&server, withdrawn)["status"], "cancelled");
    assert_eq!(job(&server, withdrawn)["approval"]["decision"], "withdrawn");

    let expired = wait_for_status(&server, expiring, Duration::from_secs(15), "expired");
    assert_eq!(expired["error"], "no one approved it within 3 s");
    assert_eq!(expired["approval"]["decision"], "expired");

    // Bad input: a comment too long, a job that does not exist.
    let long = "x".repeat(2001);
    let (status, body) = call(&server, &bob, Method::POST, "/api/jobs/999999/approve", Some(json!({ "comment": "" })));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let another = submit(&server, &alice, &["db1"]);
    let path = format!("/api/jobs/{another}/approve");
    let (status, body) = call(&server, &bob, Method::POST, &path, Some(json!({ "comment": long })));
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("comment")), "{body}");
    assert_eq!(job(&server, another)["status"], "pending_approval", "a refused decision decides nothing");
}

#[test]
fn a_policy_names_what_exists_and_a_schedules_runs_wait_unless_it_exempts_them() {
    let server = Server::start();
    let refused = |body: Value, field: &str| {
        let (status, answer) = server.post("/api/approval-policies", &body);
        assert_eq!((status, answer["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{answer}");
    };
    refused(json!({ "name": "nothing" }), "modules");
    refused(json!({ "name": "typo", "functions": ["Linux.Nope"] }), "functions");
    refused(json!({ "name": "gone", "modules": [4242] }), "modules");
    refused(json!({ "name": "   ", "modules": [1003] }), "name");
    refused(json!({ "name": "long", "modules": [1003], "expire_secs": 0 }), "expire_secs");

    let saved = |name: &str| {
        let body = json!({ "name": name, "module": 1003, "targets": { "hosts": ["localhost"] } });
        let (status, answer) = server.post("/api/templates", &body);
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["id"].as_i64().unwrap()
    };
    let (nightly, hourly) = (saved("nightly"), saved("hourly"));
    let policy = |name: &str, template: i64, exempt: bool| {
        let body = json!({ "name": name, "templates": [template], "exempt_schedules": exempt });
        let (status, answer) = server.post("/api/approval-policies", &body);
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer
    };
    policy("nightly waits", nightly, false);
    let exempt = policy("hourly runs alone", hourly, true);
    let (status, body) = server.post("/api/approval-policies", &json!({ "name": "nightly waits", "modules": [1003] }));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, listed) = server.get("/api/approval-policies");
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // Each schedule fires every second; the first job of each says whether it waited.
    let first_job_of = |template: i64, name: &str| {
        let body = json!({ "name": name, "template": template, "cron": "* * * * * *" });
        let (status, schedule) = server.post("/api/schedules", &body);
        assert_eq!(status, StatusCode::CREATED, "{schedule}");
        let started = Instant::now();
        let job = loop {
            let by = format!("schedule:{name}").replace(' ', "%20").replace(',', "%2C");
            let (_, jobs) = server.get(&format!("/api/jobs?user={by}"));
            if let Some(job) = jobs.as_array().unwrap().last() {
                break job.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(15), "schedule {name} did not fire");
            std::thread::sleep(Duration::from_millis(200));
        };
        let path = format!("{}/api/schedules/{}", server.base, schedule["id"]);
        assert_eq!(server.send(server.client.delete(path).bearer_auth(&server.token)).0, StatusCode::NO_CONTENT);
        job
    };
    let held = first_job_of(nightly, "every second, held");
    assert_eq!(
        (held["status"].as_str(), held["created_by"].as_str()),
        (Some("pending_approval"), Some("schedule:every second, held"))
    );
    let free = first_job_of(hourly, "every second, exempt");
    assert_ne!(free["status"], "pending_approval", "{free}");

    // A policy deleted: the job waiting under it still waits for its decision; new runs do not wait.
    let path = format!("{}/api/approval-policies/{}", server.base, exempt["id"]);
    assert_eq!(server.send(server.client.delete(path.clone()).bearer_auth(&server.token)).0, StatusCode::NO_CONTENT);
    assert_eq!(server.send(server.client.delete(path).bearer_auth(&server.token)).0, StatusCode::NOT_FOUND);
    assert_eq!(job(&server, held["id"].as_i64().unwrap())["status"], "pending_approval");

    // The command line's run says the job waits, and exits 3.
    let out = cli(&server, &["template", "run", &nightly.to_string()]);
    assert_eq!(out.status.code(), Some(3), "{} {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("waits for approval"), "{}", out.stderr);
}
