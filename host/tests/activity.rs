//! The activity log through the real server: logins (and failed ones), users, grants and tokens changed through
//! the API are recorded with who, from where, what changed (secrets never) and the outcome; the listing filters
//! and pages, the CSV has the same rows; and a row edited or deleted behind the server's back is reported by
//! `omserver audit verify` and `GET /api/audit/verify`.

mod common;

use common::{
    cli,
    database::{db_exec, db_ints},
    Server,
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

    let entries = activity(&server, "");
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
    let (ok, stdout, report) = verify(&server);
    assert!(ok && stdout.contains("4 activity log rows checked, 0 problems"), "{stdout}");
    assert_eq!((report["rows"].as_u64(), report["problems"].as_array().map(Vec::len)), (Some(4), Some(0)));

    let ids = db_ints(&server, "SELECT id FROM activity ORDER BY id");
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
