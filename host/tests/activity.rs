//! The activity log through the real server: logins (and failed ones) and logouts; users, grants, tokens, hosts
//! and imports, alert rules, saved jobs, schedules, notification settings and jobs changed through the API or the
//! command line; module files loaded, replaced, rejected and removed; and refused attempts. Each is recorded with
//! who, from where, what changed (secrets never) and the outcome; the listing filters and pages, the CSV has the
//! same rows; and a row edited or deleted behind the server's back is reported by `omserver audit verify` and
//! `GET /api/audit/verify`.

mod common;

use std::time::Duration;

use common::{
    cli, cli_with_input,
    database::{db_exec, db_ints},
    fixture, install, Server,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const AGENT: &str = "activity-test/1.0";

fn call(server: &Server, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(&server.token)
        .header("user-agent", AGENT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    server.send(request)
}

fn activity(server: &Server, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/api/activity?{query}"));
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body.as_array().unwrap().clone()
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn changes_to_users_grants_and_tokens_and_logins_are_recorded_with_who_where_and_what() {
    let server = Server::start();
    let password = "a long and secret password";
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/users",
        Some(json!({ "name": "Alice", "role": "viewer", "password": password })),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = call(&server, Method::POST, "/api/users/alice/role", Some(json!({ "role": "operator" })));
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&server, Method::POST, "/api/users/alice/disable", Some(json!({})));
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&server, Method::POST, "/api/users/alice/enable", Some(json!({})));
    assert_eq!(status, StatusCode::OK);
    let (status, grant) =
        call(&server, Method::POST, "/api/users/alice/grants", Some(json!({ "role": "viewer", "tags": [] })));
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let path = format!("/api/users/alice/grants/{}", grant["id"]);
    assert_eq!(call(&server, Method::DELETE, &path, None).0, StatusCode::NO_CONTENT);
    let (status, token) =
        call(&server, Method::POST, "/api/tokens", Some(json!({ "name": "ci", "role": "viewer", "user": "alice" })));
    assert_eq!(status, StatusCode::CREATED, "{token}");
    assert_eq!(call(&server, Method::DELETE, &format!("/api/tokens/{}", token["id"]), None).0, StatusCode::OK);
    let login = |name: &str, password: &str| {
        let request = server.client.post(format!("{}/login", server.base)).header("user-agent", AGENT);
        server.send(request.json(&json!({ "name": name, "password": password }))).0
    };
    assert_eq!(login("alice", "not the password at all"), StatusCode::UNAUTHORIZED);
    assert_eq!(login("alice", password), StatusCode::OK);

    // The server's own records (the seed module loaded at start) are another test's.
    let mut entries = activity(&server, "");
    entries.retain(|e| e["actor"] != "server");
    assert_eq!(
        actions(&entries),
        [
            "login",
            "login.failed",
            "token.revoke",
            "token.create",
            "grant.remove",
            "grant.add",
            "user.enable",
            "user.disable",
            "user.role",
            "user.add"
        ],
        "newest first: {entries:#?}"
    );
    let by_action = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap().clone();
    let role = by_action("user.role");
    assert_eq!((role["actor"].as_str(), role["object"].as_str()), (Some("first-admin"), Some("user alice")));
    assert_eq!(role["changes"], json!({ "role": ["viewer", "operator"] }), "before and after");
    assert!(role["credential"].as_str().unwrap().starts_with("token "), "{role}");
    assert_eq!((role["address"].as_str(), role["user_agent"].as_str()), (Some("127.0.0.1"), Some(AGENT)));
    assert_eq!(role["outcome"], "ok");
    assert_eq!(by_action("user.add")["changes"], json!({ "role": "viewer", "password_generated": false }));
    assert_eq!(by_action("user.disable")["changes"], json!({ "disabled": [false, true] }));
    assert_eq!(by_action("grant.add")["object"], format!("grant {} of alice", grant["id"]));
    assert_eq!(by_action("grant.remove")["changes"]["role"], "viewer");
    assert_eq!(by_action("token.create")["changes"], json!({ "role": "viewer", "user": "alice" }));
    let failed = by_action("login.failed");
    assert_eq!((failed["actor"].as_str(), failed["credential"].as_str()), (Some("alice"), Some("password")));
    assert!(failed["outcome"].as_str().unwrap().starts_with("refused: "), "{failed}");
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(password) && !text.contains(token["token"].as_str().unwrap()), "no secret recorded");

    // Filters, paging, the CSV.
    assert_eq!(actions(&activity(&server, "kind=user")), ["user.enable", "user.disable", "user.role", "user.add"]);
    assert_eq!(actions(&activity(&server, "kind=user.role")), ["user.role"]);
    assert_eq!(actions(&activity(&server, "actor=alice")), ["login", "login.failed"]);
    let first = activity(&server, "limit=3");
    assert_eq!(first.len(), 3);
    let next = activity(&server, &format!("limit=3&before={}", first[2]["id"]));
    assert_eq!(actions(&next), ["token.create", "grant.remove", "grant.add"]);
    assert!(activity(&server, "to=2001-01-01").is_empty());
    for (query, field) in [("kind=User", "kind"), ("limit=0", "limit"), ("from=yesterday", "from")] {
        let (status, body) = server.get(&format!("/api/activity?{query}"));
        assert!(status.is_client_error() && body["field"] == field, "{query}: {status} {body}");
    }
    let csv = server
        .client
        .get(format!("{}/api/activity.csv?kind=user.role", server.base))
        .bearer_auth(&server.token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,at,actor,credential,address,user_agent,action,object,changes,outcome");
    assert!(
        lines[1].contains("user.role") && lines[1].contains("\"{\"\"role\"\":[\"\"viewer\"\",\"\"operator\"\"]}\""),
        "{csv}"
    );
    assert_eq!(lines.len(), 2);
}

#[test]
fn a_row_edited_or_deleted_behind_the_servers_back_is_reported_by_verify() {
    let server = Server::start();
    for name in ["bob", "carol", "dave", "erin"] {
        let (status, body) = call(&server, Method::POST, "/api/users", Some(json!({ "name": name, "role": "viewer" })));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let verify = |server: &Server| {
        let out = cli(server, &["audit", "verify"]);
        let (status, report) = server.get("/api/audit/verify");
        assert_eq!(status, StatusCode::OK, "{report}");
        (out.status.success(), out.stdout, report["activity"].clone())
    };
    // The seed module loaded at start is the first row.
    let (ok, stdout, report) = verify(&server);
    assert!(ok && stdout.contains("5 activity log rows checked, 0 problems"), "{stdout}");
    assert_eq!((report["rows"].as_u64(), report["problems"].as_array().map(Vec::len)), (Some(5), Some(0)));

    let ids = db_ints(&server, "SELECT id FROM activity WHERE action = 'user.add' ORDER BY id");
    assert_eq!(
        db_exec(&server, &format!("UPDATE activity SET changes = '{{\"role\":\"admin\"}}' WHERE id = {}", ids[0])),
        1
    );
    let (ok, stdout, report) = verify(&server);
    assert!(!ok && stdout.contains(&format!("activity log at row {}: its fields were changed", ids[0])), "{stdout}");
    assert_eq!(report["problems"][0]["id"], ids[0]);

    // The newest row deleted: the head still names it.
    assert_eq!(db_exec(&server, &format!("DELETE FROM activity WHERE id = {}", ids[3])), 1);
    let (ok, stdout, _) = verify(&server);
    assert!(!ok && stdout.contains("the newest rows were deleted"), "{stdout}");
    // A row in the middle deleted: the one after it no longer follows.
    assert_eq!(db_exec(&server, &format!("DELETE FROM activity WHERE id = {}", ids[1])), 1);
    let (_, stdout, _) = verify(&server);
    assert!(stdout.contains(&format!("activity log at row {}: does not follow the row before it", ids[2])), "{stdout}");
}

/// The one entry of `action` (newest first, so the newest of several).
fn entry(server: &Server, action: &str) -> Value {
    let entries = activity(server, &format!("kind={action}"));
    entries.first().cloned().unwrap_or_else(|| panic!("no {action} in {:#?}", activity(server, "")))
}

#[test]
fn changes_to_the_inventory_saved_jobs_schedules_notifications_and_jobs_are_recorded_with_their_fields() {
    let server = Server::start();
    let ok = |(status, body): (StatusCode, Value), want: StatusCode| {
        assert_eq!(status, want, "{body}");
        body
    };
    let host = ok(
        call(&server, Method::POST, "/api/hosts", Some(json!({ "name": "db1", "ip": "127.0.0.9", "tags": ["prod"] }))),
        StatusCode::CREATED,
    );
    let path = format!("/api/hosts/{}", host["id"]);
    ok(
        call(&server, Method::PUT, &path, Some(json!({ "name": "db1", "ip": "127.0.0.10", "tags": ["prod"] }))),
        StatusCode::OK,
    );
    let import = json!({ "format": "csv", "text": "name,ip\nweb7,127.0.0.17\nbad name,127.0.0.18\n" });
    ok(call(&server, Method::POST, "/api/hosts/import", Some(import)), StatusCode::OK);
    ok(call(&server, Method::DELETE, &path, None), StatusCode::NO_CONTENT);
    let rule = ok(
        call(&server, Method::POST, "/api/audit/rules", Some(json!({ "name": "rm-root", "pattern": "rm -rf /" }))),
        StatusCode::CREATED,
    );
    ok(call(&server, Method::DELETE, &format!("/api/audit/rules/{}", rule["id"]), None), StatusCode::NO_CONTENT);
    let spec = json!({ "name": "issue", "module": 1003, "targets": { "hosts": ["localhost"] } });
    let saved =
        ok(call(&server, Method::POST, "/api/templates", Some(spec.clone())), StatusCode::CREATED)["id"].clone();
    let edited = json!({ "name": "issue", "module": 1003, "targets": { "hosts": ["localhost"] }, "timeout_secs": 60 });
    ok(call(&server, Method::PUT, &format!("/api/templates/{saved}"), Some(edited)), StatusCode::OK);
    let schedule = json!({ "name": "nightly", "template": saved, "cron": "0 3 * * *" });
    let schedule = ok(call(&server, Method::POST, "/api/schedules", Some(schedule)), StatusCode::CREATED)["id"].clone();
    let paused = json!({ "name": "nightly", "template": saved, "cron": "0 3 * * *", "enabled": false });
    ok(call(&server, Method::PUT, &format!("/api/schedules/{schedule}"), Some(paused)), StatusCode::OK);
    ok(call(&server, Method::DELETE, &format!("/api/schedules/{schedule}"), None), StatusCode::NO_CONTENT);
    let channel = json!({ "name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/hook" });
    let channel = ok(call(&server, Method::POST, "/api/notify/channels", Some(channel)), StatusCode::CREATED);
    let secret = channel["secret"].as_str().expect("a webhook's signing secret").to_owned();
    let subscription = json!({ "channel": channel["id"], "event": "job.finished" });
    let subscription =
        ok(call(&server, Method::POST, "/api/notify/subscriptions", Some(subscription)), StatusCode::CREATED);
    ok(
        call(&server, Method::DELETE, &format!("/api/notify/subscriptions/{}", subscription["id"]), None),
        StatusCode::NO_CONTENT,
    );
    ok(call(&server, Method::DELETE, &format!("/api/notify/channels/{}", channel["id"]), None), StatusCode::NO_CONTENT);
    let job = ok(
        call(&server, Method::POST, "/api/jobs", Some(json!({ "module": 1003, "hosts": ["127.0.0.1"] }))),
        StatusCode::ACCEPTED,
    )["id"]
        .as_i64()
        .unwrap();
    server.wait_job(job, Duration::from_secs(30));
    let rerun = json!({ "hosts": "all" });
    let again = ok(call(&server, Method::POST, &format!("/api/jobs/{job}/rerun"), Some(rerun)), StatusCode::ACCEPTED);
    server.wait_job(again["id"].as_i64().unwrap(), Duration::from_secs(30));
    let run = ok(call(&server, Method::POST, &format!("/api/templates/{saved}/run"), None), StatusCode::ACCEPTED);
    server.wait_job(run["id"].as_i64().unwrap(), Duration::from_secs(30));
    ok(call(&server, Method::DELETE, &format!("/api/templates/{saved}"), None), StatusCode::NO_CONTENT);

    let added = entry(&server, "host.add");
    assert_eq!(added["object"], "host db1 (127.0.0.9)");
    assert_eq!(
        (added["changes"]["ip"].as_str(), added["changes"]["tags"].clone()),
        (Some("127.0.0.9"), json!(["prod"]))
    );
    assert_eq!(
        entry(&server, "host.update")["changes"],
        json!({ "ip": ["127.0.0.9", "127.0.0.10"] }),
        "only what changed"
    );
    assert_eq!(entry(&server, "host.delete")["changes"]["ip"], "127.0.0.10");
    let import = entry(&server, "host.import");
    assert_eq!(import["changes"]["imported"], json!(["web7"]));
    assert!(import["changes"]["refused"][0].as_str().unwrap().starts_with("line 3: "), "{import}");
    assert_eq!(entry(&server, "alert_rule.add")["changes"]["pattern"], "rm -rf /");
    assert_eq!(entry(&server, "alert_rule.delete")["object"], format!("alert rule {} (rm-root)", rule["id"]));
    assert_eq!(entry(&server, "template.create")["changes"]["targets"]["hosts"], spec["targets"]["hosts"]);
    assert_eq!(entry(&server, "template.update")["changes"], json!({ "timeout_secs": [null, 60] }));
    assert_eq!(entry(&server, "template.delete")["object"], format!("saved job {saved}"));
    assert_eq!(entry(&server, "schedule.create")["changes"]["cron"], "0 3 * * *");
    assert_eq!(entry(&server, "schedule.update")["changes"], json!({ "enabled": [true, false] }));
    assert_eq!(entry(&server, "schedule.delete")["changes"]["name"], "nightly");
    let hook = entry(&server, "channel.add");
    assert_eq!((hook["changes"]["name"].as_str(), hook["changes"]["kind"].as_str()), (Some("hook"), Some("webhook")));
    assert_eq!(entry(&server, "subscription.add")["changes"]["event"], "job.finished");
    assert_eq!(entry(&server, "subscription.delete")["object"], format!("subscription {}", subscription["id"]));
    assert_eq!(entry(&server, "channel.delete")["changes"]["name"], "hook");
    let submitted = entry(&server, "job.submit");
    assert_eq!(submitted["object"], format!("job {job}"));
    assert_eq!(
        (submitted["changes"]["module"].as_u64(), submitted["changes"]["hosts"].clone()),
        (Some(1003), json!(["127.0.0.1"]))
    );
    assert_eq!(entry(&server, "job.rerun")["changes"], json!({ "rerun_of": job, "hosts": "all" }));
    assert_eq!(entry(&server, "template.run")["changes"], json!({ "job": run["id"] }));
    let everything = activity(&server, "limit=1000");
    assert!(everything.iter().all(|e| e["outcome"] == "ok"), "{everything:#?}");
    assert!(!serde_json::to_string(&everything).unwrap().contains(&secret), "a channel's secret is never recorded");
}

#[test]
fn module_files_refused_requests_logouts_and_the_command_line_are_recorded() {
    let server = Server::start();
    // The seed module, loaded at start, by the server itself.
    let loaded = entry(&server, "module.load");
    assert_eq!(
        (loaded["actor"].as_str(), loaded["object"].as_str()),
        (Some("server"), Some("module file Mid_1003.so"))
    );
    assert_eq!(loaded["changes"]["id"], 1003);
    assert_eq!(loaded["changes"]["sha256"].as_str().map(str::len), Some(64));

    // A module added, then replaced by another version, a file that is not a module, and that file removed.
    let dir = server.plugins_dir();
    install(&fixture("fx_echo_v1"), &dir, "Mid_9000.so");
    server.wait_for_module("Mid_9000.so", Duration::from_secs(20), |m| m.is_some_and(|m| m["version"] == "1.0.0"));
    install(&fixture("fx_echo_v2"), &dir, "Mid_9000.so");
    server.wait_for_module("Mid_9000.so", Duration::from_secs(20), |m| m.is_some_and(|m| m["version"] == "2.0.0"));
    install(&fixture("fx_old_api"), &dir, "Mid_9101.so");
    server.wait_for_module("Mid_9101.so", Duration::from_secs(20), |m| m.is_some_and(|m| m["status"] == "rejected"));
    std::fs::remove_file(dir.join("Mid_9101.so")).unwrap();
    server.wait_for_module("Mid_9101.so", Duration::from_secs(20), |m| m.is_none());
    let replaced = entry(&server, "module.replace");
    assert_eq!(replaced["object"], "module file Mid_9000.so");
    assert_eq!(replaced["changes"]["version"], json!(["1.0.0", "2.0.0"]), "{replaced}");
    let rejected = entry(&server, "module.reject");
    assert!(rejected["outcome"].as_str().unwrap().starts_with("rejected: "), "{rejected}");
    assert_eq!(entry(&server, "module.remove")["object"], "module file Mid_9101.so");

    // A viewer's attempt at an admin's change is refused and recorded; its reads are not.
    let (_, token) = server.post("/api/tokens", &json!({ "name": "looker", "role": "viewer" }));
    let looker = token["token"].as_str().unwrap();
    let attempt =
        server.client.post(format!("{}/api/hosts", server.base)).bearer_auth(looker).header("user-agent", AGENT);
    let (status, _) = server.send(attempt.json(&json!({ "name": "x1", "ip": "127.0.0.30" })));
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.send(server.client.get(format!("{}/api/users", server.base)).bearer_auth(looker)).0,
        StatusCode::FORBIDDEN
    );
    let refused = activity(&server, "kind=request.refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(
        (refused[0]["actor"].as_str(), refused[0]["object"].as_str()),
        (Some("looker"), Some("POST /api/hosts"))
    );
    assert_eq!(refused[0]["user_agent"], AGENT);
    assert!(refused[0]["outcome"].as_str().unwrap().starts_with("refused: "), "{refused:#?}");

    // A console session ends: logout is recorded for its user.
    let login = server.client.post(format!("{}/login", server.base));
    let response = login.json(&json!({ "name": "admin", "password": server.admin_password })).send().unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = response.json::<Value>().unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let logout = server.client.post(format!("{}/logout", server.base)).header("cookie", &cookie);
    let response = logout.header("x-csrf-token", &csrf).json(&json!({})).send().unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let out = entry(&server, "logout");
    assert_eq!((out["actor"].as_str(), out["object"].as_str()), (Some("admin"), Some("user admin")));
    assert!(out["credential"].as_str().unwrap().starts_with("session "), "{out}");

    // The command line: who ran it (its account) and from where (this machine).
    let added =
        cli_with_input(&server, &["user", "add", "frank", "--role", "viewer"], Some("a long enough password\n"));
    assert!(added.status.success(), "{}", added.stderr);
    let by_cli = entry(&server, "user.add");
    assert!(by_cli["actor"].as_str().unwrap().starts_with("cli:"), "{by_cli}");
    assert!(by_cli["credential"].as_str().unwrap().starts_with("uid "), "{by_cli}");
    assert_eq!((by_cli["address"].as_str(), by_cli["object"].as_str()), (Some("local"), Some("user frank")));
    let verified = cli(&server, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", verified.stdout);
}
