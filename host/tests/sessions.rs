//! Console users, sessions, CSRF and tokens owned by users, against the running binary: login and its cookie,
//! rotation, throttling, idle and absolute expiry, logout, `user disable`, the CSRF and origin checks, and the
//! rule that a token never has more rights than its user.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{cli, cli_with_input, Options, Server};
use reqwest::{
    blocking::{Client, RequestBuilder, Response},
    header::{HeaderMap, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, RETRY_AFTER, SET_COOKIE},
    redirect, StatusCode,
};
use serde_json::{json, Value};

/// A client that shows redirects instead of following them and keeps no cookies of its own.
fn client() -> Client {
    Client::builder().redirect(redirect::Policy::none()).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A logged-in browser, as far as the server can tell: a session cookie and its CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

fn body(response: Response) -> (StatusCode, HeaderMap, Value) {
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn login_json(server: &Server, name: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    body(
        client()
            .post(format!("{}/login", server.base))
            .json(&json!({ "name": name, "password": password }))
            .send()
            .unwrap(),
    )
}

/// The `omserver_session=…` part of a Set-Cookie header, and the whole header.
fn session_cookie(headers: &HeaderMap) -> (String, String) {
    let header = headers.get(SET_COOKIE).expect("a Set-Cookie header").to_str().unwrap().to_owned();
    let pair = header.split(';').next().unwrap().trim().to_owned();
    assert!(pair.starts_with("omserver_session="), "{header}");
    (pair, header)
}

fn login(server: &Server, name: &str, password: &str) -> Browser {
    let (status, headers, answer) = login_json(server, name, password);
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (cookie, _) = session_cookie(&headers);
    Browser { cookie, csrf: answer["csrf_token"].as_str().expect("a CSRF token").to_owned() }
}

impl Browser {
    fn get(&self, server: &Server, path: &str) -> (StatusCode, Value) {
        let (status, _, answer) =
            body(client().get(format!("{}{path}", server.base)).header(COOKIE, &self.cookie).send().unwrap());
        (status, answer)
    }

    /// A POST with the cookie and, when `csrf`, the CSRF header.
    fn post(&self, server: &Server, path: &str, answer: &Value, csrf: bool) -> (StatusCode, HeaderMap, Value) {
        let mut request = client().post(format!("{}{path}", server.base)).header(COOKIE, &self.cookie).json(answer);
        if csrf {
            request = request.header("X-CSRF-Token", &self.csrf);
        }
        body(request.send().unwrap())
    }

    fn form(&self, server: &Server, path: &str, fields: &[(&str, &str)]) -> RequestBuilder {
        client()
            .post(format!("{}{path}", server.base))
            .header(COOKIE, &self.cookie)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap())
    }
}

fn bearer(
    server: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
    answer: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = client().request(method, format!("{}{path}", server.base)).bearer_auth(token);
    if let Some(answer) = answer {
        request = request.json(answer);
    }
    let (status, _, answer) = body(request.send().unwrap());
    (status, answer)
}

fn add_user(server: &Server, name: &str, role: &str, password: &str) {
    let out = cli_with_input(server, &["user", "add", name, "--role", role], Some(&format!("{password}\n")));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, format!("added user {} ({role})\n", name.to_lowercase()));
}

const UNAUTHORIZED: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "missing or invalid bearer token");

fn assert_refused(answer: (StatusCode, Value), expected: (StatusCode, &str)) {
    assert_eq!(answer, (expected.0, json!({ "error": expected.1 })));
}

#[test]
fn first_start_prints_the_admin_password_and_login_sets_a_strict_cookie() {
    let server = Server::start();
    assert_eq!(server.admin_password.len(), 24, "a generated password: {:?}", server.admin_password);
    assert!(server.token.starts_with("oms_"), "the admin token line is still printed");

    let (status, headers, answer) = login_json(&server, "Admin", &server.admin_password);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((&answer["name"], &answer["role"]), (&json!("admin"), &json!("admin")));
    let (first, header) = session_cookie(&headers);
    let attributes: Vec<&str> = header.split(';').skip(1).map(str::trim).collect();
    assert_eq!(attributes, ["HttpOnly", "SameSite=Strict", "Path=/"], "no Secure without TLS: {header}");
    assert_eq!(headers["cache-control"], "no-store");
    let id = first.trim_start_matches("omserver_session=");
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(!server.log().contains(id), "the session id is not logged");
    assert!(!server.log().contains(&server.admin_password), "the password is not logged");

    let browser = Browser { cookie: first.clone(), csrf: answer["csrf_token"].as_str().unwrap().to_owned() };
    let (status, me) = browser.get(&server, "/api/session");
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, json!({ "name": "admin", "role": "admin", "via": "session", "csrf_token": browser.csrf }));
    assert_eq!(browser.get(&server, "/api/jobs").0, StatusCode::OK, "the cookie authenticates API reads");

    // A second login, by a form, sending the first cookie along: a new id, and the old one is over.
    let response = client()
        .post(format!("{}/login", server.base))
        .header(COOKIE, &first)
        .form(&[("name", "admin"), ("password", server.admin_password.as_str()), ("return_to", "/jobs")])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/jobs");
    let (second, _) = session_cookie(response.headers());
    assert_ne!(second, first, "the id is rotated at every login");
    assert_refused(browser.get(&server, "/api/session"), UNAUTHORIZED);
    let rotated = Browser { cookie: second, csrf: String::new() };
    assert_eq!(rotated.get(&server, "/api/session").0, StatusCode::OK);

    // A form login elsewhere than this server is refused; a failed form login goes back to the login page.
    let evil = client()
        .post(format!("{}/login", server.base))
        .header(ORIGIN, "https://evil.example")
        .form(&[("name", "admin"), ("password", server.admin_password.as_str())])
        .send()
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    assert!(evil.headers().get(SET_COOKIE).is_none());
    let wrong = client()
        .post(format!("{}/login", server.base))
        .form(&[("name", "admin"), ("password", "not the password")])
        .send()
        .unwrap();
    assert_eq!(
        (wrong.status(), &wrong.headers()[LOCATION]),
        (StatusCode::SEE_OTHER, &"/login?error=invalid".parse().unwrap())
    );
    assert!(wrong.headers().get(SET_COOKIE).is_none());
}

#[test]
fn secure_cookies_adds_secure() {
    let server = Server::start_with(Options { extra_config: "secure_cookies = true".into(), ..Options::default() });
    let (status, headers, answer) = login_json(&server, "admin", &server.admin_password);
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, header) = session_cookie(&headers);
    assert!(header.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"), "{header}");
}

#[test]
fn wrong_passwords_are_401_then_throttled_with_retry_after_and_counted() {
    let server = Server::start();
    let invalid = json!({ "error": "invalid user name or password" });
    for attempt in 0..5 {
        let (status, _, answer) = login_json(&server, "admin", "wrong password!");
        assert_eq!((status, &answer), (StatusCode::UNAUTHORIZED, &invalid), "attempt {attempt}");
    }
    // The sixth, even with the right password, must wait: 2^(6-1-5) = 1 s after the fifth failure.
    let (status, headers, answer) = login_json(&server, "ADMIN", &server.admin_password);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(headers[RETRY_AFTER], "1");
    assert_eq!(answer, json!({ "error": "too many failed logins; try again in 1 s" }));
    assert!(headers.get(SET_COOKIE).is_none());
    // An unknown name from the same address is still only counted (20 failures per address are free).
    assert_eq!(login_json(&server, "nobody", "wrong password!").0, StatusCode::UNAUTHORIZED);

    thread::sleep(Duration::from_millis(1100));
    let (status, _, answer) = login_json(&server, "admin", &server.admin_password);
    assert_eq!(status, StatusCode::OK, "after the wait the right password works: {answer}");
    // Success reset the user's count: a wrong password is a plain 401 again.
    assert_eq!(login_json(&server, "admin", "wrong password!").0, StatusCode::UNAUTHORIZED);
    assert_eq!(login_json(&server, "admin", "wrong password!").0, StatusCode::UNAUTHORIZED);

    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    assert!(lines.contains(&"omserver_login_failures_total 8"), "{metrics}");
    assert!(lines.contains(&"omserver_login_throttled_total 1"), "{metrics}");
    assert!(!server.log().contains("wrong password!"), "no password reaches the log");
}

#[test]
fn an_address_is_throttled_after_twenty_failures_whatever_the_names() {
    let server = Server::start();
    for i in 0..20 {
        assert_eq!(login_json(&server, &format!("guess{i}"), "wrong password!").0, StatusCode::UNAUTHORIZED, "{i}");
    }
    let (status, headers, _) = login_json(&server, "admin", &server.admin_password);
    assert_eq!((status, &headers[RETRY_AFTER]), (StatusCode::TOO_MANY_REQUESTS, &"1".parse().unwrap()));
}

#[test]
fn sessions_end_when_idle_and_when_old() {
    let server = Server::start_with(Options {
        extra_config: "session_idle_timeout_secs = 1\nsession_max_age_secs = 2".into(),
        ..Options::default()
    });
    let idle = login(&server, "admin", &server.admin_password);
    assert_eq!(idle.get(&server, "/api/session").0, StatusCode::OK);
    thread::sleep(Duration::from_millis(1500));
    assert_refused(idle.get(&server, "/api/session"), UNAUTHORIZED);

    // Used every 200 ms it outlives the idle timeout, but not the maximum age.
    let started = Instant::now();
    let busy = login(&server, "admin", &server.admin_password);
    let (mut last_ok, mut first_refused) = (Duration::ZERO, None);
    while started.elapsed() < Duration::from_secs(6) {
        match busy.get(&server, "/api/session").0 {
            StatusCode::OK => last_ok = started.elapsed(),
            StatusCode::UNAUTHORIZED => {
                first_refused = Some(started.elapsed());
                break;
            }
            other => panic!("unexpected {other}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    let first_refused = first_refused.expect("the session ends by its maximum age");
    assert!(last_ok > Duration::from_millis(1200), "in use, it lived past the idle timeout: {last_ok:?}");
    assert!(first_refused >= Duration::from_secs(2), "not before the maximum age: {first_refused:?}");
    assert_refused(busy.get(&server, "/api/session"), UNAUTHORIZED);
}

#[test]
fn logout_ends_the_session_at_once() {
    let server = Server::start();
    let browser = login(&server, "admin", &server.admin_password);
    // Logging out changes state: it needs the CSRF token like everything else.
    let (status, _, _) = browser.post(&server, "/logout", &json!({}), false);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get(&server, "/api/session").0, StatusCode::OK);
    let (status, headers, _) = browser.post(&server, "/logout", &json!({}), true);
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers[SET_COOKIE].to_str().unwrap().starts_with("omserver_session=; "), "the cookie is cleared");
    assert_refused(browser.get(&server, "/api/session"), UNAUTHORIZED);
    assert_refused(browser.get(&server, "/api/jobs"), UNAUTHORIZED);

    // By a form: the hidden field, then back to the login page.
    let browser = login(&server, "admin", &server.admin_password);
    let response = browser.form(&server, "/logout", &[("csrf_token", &browser.csrf)]).send().unwrap();
    assert_eq!((response.status(), &response.headers()[LOCATION]), (StatusCode::SEE_OTHER, &"/login".parse().unwrap()));
    assert_refused(browser.get(&server, "/api/session"), UNAUTHORIZED);
}

#[test]
fn user_disable_ends_the_session_and_the_users_tokens_at_once() {
    let server = Server::start();
    add_user(&server, "Alice", "operator", "alice's long password");
    let refused = cli_with_input(&server, &["user", "add", "bob", "--role", "viewer"], Some("short\n"));
    assert!(!refused.status.success() && refused.stderr.contains("at least 12 characters"), "{refused:?}");
    let empty = cli_with_input(&server, &["user", "add", "bob", "--role", "viewer"], Some(""));
    assert!(!empty.status.success() && empty.stderr.contains("no password on standard input"), "{empty:?}");

    let session = login(&server, "alice", "alice's long password");
    let out = cli(&server, &["token", "create", "ci", "--role", "operator", "--user", "ALICE"]);
    assert!(out.status.success(), "{out:?}");
    let token = out.stdout.trim().to_owned();
    let (status, me) = bearer(&server, &token, reqwest::Method::GET, "/api/session", None);
    assert_eq!((status, &me["name"], &me["role"]), (StatusCode::OK, &json!("alice"), &json!("operator")), "{me}");
    let too_much = cli(&server, &["token", "create", "root", "--role", "admin", "--user", "alice"]);
    assert!(!too_much.status.success(), "{too_much:?}");
    assert!(too_much.stderr.contains("a token cannot have more rights than its user (operator)"), "{too_much:?}");

    let list = cli(&server, &["token", "list"]);
    assert!(list.stdout.lines().any(|l| l.contains(" ci ") && l.contains("user alice")), "{list:?}");

    let out = cli(&server, &["user", "disable", "alice"]);
    assert!(out.status.success(), "{out:?}");
    assert_refused(session.get(&server, "/api/session"), UNAUTHORIZED);
    assert_refused(bearer(&server, &token, reqwest::Method::GET, "/api/jobs", None), UNAUTHORIZED);
    assert_eq!(login_json(&server, "alice", "alice's long password").0, StatusCode::UNAUTHORIZED);
    let users = cli(&server, &["user", "list"]);
    let words: Vec<Vec<&str>> = users.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(words, [vec!["admin", "admin", "active"], vec!["alice", "operator", "disabled"]]);

    // A new password ends the sessions too; the old one stops working.
    let admin = login(&server, "admin", &server.admin_password);
    let out = cli_with_input(&server, &["user", "passwd", "admin"], Some("a brand new password\n"));
    assert!(out.status.success(), "{out:?}");
    assert_refused(admin.get(&server, "/api/session"), UNAUTHORIZED);
    assert_eq!(login_json(&server, "admin", &server.admin_password).0, StatusCode::UNAUTHORIZED);
    login(&server, "admin", "a brand new password");
}

#[test]
fn cookie_requests_that_change_state_need_the_csrf_token_and_this_origin() {
    let server = Server::start();
    let browser = login(&server, "admin", &server.admin_password);
    let host = |name: &str, ip: &str| json!({ "name": name, "ip": ip });
    let csrf_refused = json!({ "error": "missing or invalid CSRF token" });

    let (status, _, answer) = browser.post(&server, "/api/hosts", &host("web1", "10.0.0.1"), false);
    assert_eq!((status, &answer), (StatusCode::FORBIDDEN, &csrf_refused));
    let wrong = Browser { cookie: browser.cookie.clone(), csrf: "0".repeat(64) };
    let (status, _, answer) = wrong.post(&server, "/api/hosts", &host("web1", "10.0.0.1"), true);
    assert_eq!((status, &answer), (StatusCode::FORBIDDEN, &csrf_refused));
    let (status, _, answer) = browser.post(&server, "/api/hosts", &host("web1", "10.0.0.1"), true);
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    // Another origin is refused even with the token; this one passes.
    let request = |origin: &str, name: &str, ip: &str| {
        client()
            .post(format!("{}/api/hosts", server.base))
            .header(COOKIE, &browser.cookie)
            .header("X-CSRF-Token", &browser.csrf)
            .header(ORIGIN, origin)
            .json(&host(name, ip))
            .send()
            .unwrap()
    };
    let (status, _, answer) = body(request("https://evil.example", "web2", "10.0.0.2"));
    assert_eq!((status, answer), (StatusCode::FORBIDDEN, json!({ "error": "cross-origin request refused" })));
    assert_eq!(request("null", "web2", "10.0.0.2").status(), StatusCode::FORBIDDEN);
    assert_eq!(request(&server.base, "web2", "10.0.0.2").status(), StatusCode::CREATED);
    let sibling = client()
        .post(format!("{}/api/hosts", server.base))
        .header(COOKIE, &browser.cookie)
        .header("X-CSRF-Token", &browser.csrf)
        .header("Sec-Fetch-Site", "same-site")
        .json(&host("web3", "10.0.0.3"))
        .send()
        .unwrap();
    assert_eq!(sibling.status(), StatusCode::FORBIDDEN);

    // A plain HTML form: the hidden field, read and put back for the handler; then back to the page.
    let form = [("name", "carol"), ("role", "viewer"), ("password", "carol's long password")];
    let response = browser.form(&server, "/api/users", &form).send().unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a form without the field");
    let mut with_field = form.to_vec();
    with_field.push(("csrf_token", &browser.csrf));
    let response = browser.form(&server, "/api/users", &with_field).send().unwrap();
    assert_eq!((response.status(), &response.headers()[LOCATION]), (StatusCode::SEE_OTHER, &"/users".parse().unwrap()));
    login(&server, "carol", "carol's long password");

    // A bearer token needs no CSRF token (a browser never sends one by itself).
    let (status, answer) =
        bearer(&server, &server.token, reqwest::Method::POST, "/api/hosts", Some(&host("web4", "10.0.0.4")));
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let names: Vec<String> =
        server.get("/api/hosts").1.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["localhost", "web1", "web2", "web4"]);
}

#[test]
fn tokens_never_have_more_rights_than_their_user_and_viewers_cannot_run_jobs() {
    let server = Server::start();
    add_user(&server, "vic", "viewer", "vic's long password");
    let vic = login(&server, "vic", "vic's long password");
    let job = json!({ "module": 1003, "hosts": ["127.0.0.1"] });

    let (status, _, answer) = vic.post(&server, "/api/jobs", &job, true);
    assert_eq!((status, answer), (StatusCode::FORBIDDEN, json!({ "error": "this needs the operator role" })));
    let (status, _, answer) = vic.post(&server, "/api/tokens", &json!({ "name": "up", "role": "operator" }), true);
    assert_eq!((status, answer), (StatusCode::FORBIDDEN, json!({ "error": "this needs the operator role" })));
    let (status, _, answer) =
        vic.post(&server, "/api/tokens", &json!({ "name": "for admin", "role": "viewer", "user": "admin" }), true);
    assert_eq!((status, answer), (StatusCode::FORBIDDEN, json!({ "error": "this needs the admin role" })));

    let (status, _, created) = vic.post(&server, "/api/tokens", &json!({ "name": "laptop", "role": "viewer" }), true);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((&created["user"], &created["role"]), (&json!("vic"), &json!("viewer")));
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&server, &token, reqwest::Method::GET, "/api/jobs", None).0, StatusCode::OK);
    assert_eq!(bearer(&server, &token, reqwest::Method::POST, "/api/jobs", Some(&job)).0, StatusCode::FORBIDDEN);

    // Listing: vic sees its own; the admin sees all, with last use recorded.
    let (status, mine) = vic.get(&server, "/api/tokens");
    assert_eq!(status, StatusCode::OK);
    let names = |list: &Value| {
        list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(names(&mine), ["laptop"]);
    assert!(mine[0]["last_used_at"].as_i64().is_some(), "used above: {mine}");
    assert!(mine[0].get("token_hash").is_none() && mine[0].get("token").is_none(), "{mine}");
    let (status, all) = server.get("/api/tokens");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&all), ["first-admin", "laptop"]);

    // An admin's session may make an operator token for another user only up to that user's role.
    let admin = login(&server, "admin", &server.admin_password);
    let (status, _, answer) =
        admin.post(&server, "/api/tokens", &json!({ "name": "x", "role": "operator", "user": "vic" }), true);
    assert_eq!(
        (status, answer),
        (StatusCode::FORBIDDEN, json!({ "error": "a token cannot have more rights than its user (viewer)" }))
    );

    // Revoking: not someone else's (as if it did not exist), its own yes; then it stops working.
    let first_admin = all[0]["id"].as_i64().unwrap();
    let (status, _) = bearer(&server, &token, reqwest::Method::DELETE, &format!("/api/tokens/{first_admin}"), None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = created["id"].as_i64().unwrap();
    let (status, answer) = bearer(&server, &token, reqwest::Method::DELETE, &format!("/api/tokens/{id}"), None);
    assert_eq!((status, answer), (StatusCode::OK, json!({ "id": id, "revoked": true })));
    assert_refused(bearer(&server, &token, reqwest::Method::GET, "/api/jobs", None), UNAUTHORIZED);
    assert_eq!(server.get("/api/jobs").0, StatusCode::OK, "the admin's token was left alone");
}

#[test]
fn users_over_the_api_are_for_admins() {
    let server = Server::start();
    let (status, created) = server.post("/api/users", &json!({ "name": " Dave ", "role": "operator" }));
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((&created["user"]["name"], &created["user"]["role"]), (&json!("dave"), &json!("operator")));
    assert!(created["user"].get("password_hash").is_none(), "{created}");
    let password = created["password"].as_str().expect("a generated password, answered once").to_owned();
    let dave = login(&server, "DAVE", &password);
    assert_eq!(dave.get(&server, "/api/users").0, StatusCode::FORBIDDEN);

    let (status, answer) =
        server.post("/api/users", &json!({ "name": "dave", "role": "viewer", "password": "another long one" }));
    assert_eq!((status, answer), (StatusCode::CONFLICT, json!({ "error": "a user named \"dave\" exists already" })));
    let (status, answer) = server.post("/api/users", &json!({ "name": "e ve", "role": "viewer" }));
    assert_eq!((status, &answer["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("name")), "{answer}");
    let (status, answer) = server.post("/api/users", &json!({ "name": "eve", "role": "agent" }));
    assert_eq!((status, &answer["field"]), (StatusCode::BAD_REQUEST, &json!("role")), "{answer}");
    let (status, answer) = server.post("/api/users", &json!({ "name": "eve", "role": "viewer", "password": "short" }));
    assert_eq!((status, &answer["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("password")), "{answer}");

    let (status, answer) = server.post("/api/users/dave/password", &json!({ "password": "dave's new password" }));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_refused(dave.get(&server, "/api/session"), UNAUTHORIZED);
    let dave = login(&server, "dave", "dave's new password");
    let (status, answer) = server.post("/api/users/Dave/disable", &json!({}));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["disabled_at"].as_i64().is_some(), "{answer}");
    assert_refused(dave.get(&server, "/api/session"), UNAUTHORIZED);
    assert_eq!(server.post("/api/users/nobody/disable", &json!({})).0, StatusCode::NOT_FOUND);

    let (status, list) = server.get("/api/users");
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "dave"]);
}

#[test]
fn a_role_change_applies_to_the_next_request_and_the_last_admin_keeps_theirs() {
    let server = Server::start();
    add_user(&server, "carol", "operator", "carol's long password");
    let carol = login(&server, "carol", "carol's long password");
    let out = cli(&server, &["token", "create", "carol-ci", "--role", "operator", "--user", "carol"]);
    assert!(out.status.success(), "{out:?}");
    let token = out.stdout.trim().to_owned();
    let job = json!({ "module": 1003, "hosts": ["127.0.0.1"], "params": {} });
    assert_eq!(carol.post(&server, "/api/jobs", &job, true).0, StatusCode::ACCEPTED, "an operator may run");

    // Down to viewer: the open session and the operator token both act as a viewer from the next request on.
    let (status, answer) = server.post("/api/users/Carol/role", &json!({ "role": "viewer" }));
    assert_eq!((status, &answer["role"]), (StatusCode::OK, &json!("viewer")), "{answer}");
    assert_eq!(carol.get(&server, "/api/session").1["role"], "viewer");
    let refused = (StatusCode::FORBIDDEN, json!({ "error": "this needs the operator role" }));
    let (status, _, answer) = carol.post(&server, "/api/jobs", &job, true);
    assert_eq!((status, answer), refused);
    assert_eq!(bearer(&server, &token, reqwest::Method::POST, "/api/jobs", Some(&job)), refused);
    let (status, answer) = server.post("/api/users/carol/role", &json!({ "role": "root" }));
    assert_eq!((status, &answer["field"]), (StatusCode::BAD_REQUEST, &json!("role")), "{answer}");
    assert_eq!(server.post("/api/users/nobody/role", &json!({ "role": "viewer" })).0, StatusCode::NOT_FOUND);
    assert_eq!(
        carol.post(&server, "/api/users/carol/role", &json!({ "role": "admin" }), true).0,
        StatusCode::FORBIDDEN
    );

    // The only enabled admin can be neither demoted nor disabled, from the API or the CLI.
    let last = json!({ "error": "admin is the last enabled admin; make another user admin first" });
    assert_eq!(
        server.post("/api/users/admin/role", &json!({ "role": "operator" })),
        (StatusCode::CONFLICT, last.clone())
    );
    assert_eq!(server.post("/api/users/admin/disable", &json!({})), (StatusCode::CONFLICT, last));
    let out = cli(&server, &["user", "role", "admin", "viewer"]);
    assert!(!out.status.success() && out.stderr.contains("admin is the last enabled admin"), "{out:?}");
    // With a second admin, the first may step down.
    let out = cli(&server, &["user", "role", "CAROL", "admin"]);
    assert_eq!((out.status.success(), out.stdout.as_str()), (true, "carol is now admin\n"), "{out:?}");
    assert_eq!(carol.get(&server, "/api/users").0, StatusCode::OK, "carol is an admin at once");
    let (status, answer) = server.post("/api/users/admin/role", &json!({ "role": "operator" }));
    assert_eq!((status, &answer["role"]), (StatusCode::OK, &json!("operator")), "{answer}");

    // Disabled, then enabled again: the user logs in again and its tokens work again.
    let out = cli(&server, &["user", "disable", "admin"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(login_json(&server, "admin", &server.admin_password).0, StatusCode::UNAUTHORIZED);
    let (status, _, answer) = carol.post(&server, "/api/users/admin/enable", &json!({}), true);
    assert_eq!((status, &answer["disabled_at"]), (StatusCode::OK, &Value::Null), "{answer}");
    login(&server, "admin", &server.admin_password);
    let out = cli(&server, &["user", "enable", "nobody"]);
    assert!(!out.status.success() && out.stderr.contains("no user named \"nobody\""), "{out:?}");
    let users = cli(&server, &["user", "list"]);
    let words: Vec<Vec<&str>> = users.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(words, [vec!["admin", "operator", "active"], vec!["carol", "admin", "active"]]);
}
