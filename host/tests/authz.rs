//! The API surface against the running binary, driven by the router's own route table
//! (`omserver::http::route_table()`): every route × every kind of caller answers as its rule says; nothing
//! outside the table is served; the OpenAPI document lists exactly the table's `/api` routes; and every answer
//! carries the security headers.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use common::{cli, Server};
use omserver::{
    auth::Role,
    http::{
        route_table,
        routes::{Access, RouteRule},
        CONTENT_SECURITY_POLICY,
    },
};
use reqwest::{
    blocking::{Client, Response},
    Method, StatusCode,
};
use serde_json::{json, Value};

/// A kind of caller: its name in messages, its bearer token, its role.
struct Caller {
    name: &'static str,
    token: Option<String>,
    role: Option<Role>,
}

fn token(server: &Server, role: &str) -> String {
    let out = cli(server, &["token", "create", "--role", role, "--name", &format!("authz-{role}")]);
    assert!(out.status.success(), "token create --role {role}: {out:?}");
    out.stdout.trim().to_owned()
}

/// One caller of each kind: none, the agent of `localhost`, viewer, operator, admin (the first-start token).
fn callers(server: &Server) -> Vec<Caller> {
    let agent = cli(server, &["hosts", "token", "localhost"]);
    assert!(agent.status.success(), "hosts token localhost: {agent:?}");
    vec![
        Caller { name: "no credentials", token: None, role: None },
        Caller { name: "agent", token: Some(agent.stdout.trim().to_owned()), role: Some(Role::Agent) },
        Caller { name: "viewer", token: Some(token(server, "viewer")), role: Some(Role::Viewer) },
        Caller { name: "operator", token: Some(token(server, "operator")), role: Some(Role::Operator) },
        Caller { name: "admin", token: Some(server.token.clone()), role: Some(Role::Admin) },
    ]
}

/// The path with each `{parameter}` filled in: `999999` is a well-formed id (and user name) that names nothing
/// (`1` would be the first-start admin token itself, which the admin caller would revoke).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { "999999" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `path` is one the template routes (a `{parameter}` takes one whole segment).
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// Sends `method path` with the smallest body (`{}` unless GET or HEAD) and returns the answer without reading
/// its body (a live stream never ends).
fn send(client: &Client, server: &Server, method: &Method, path: &str, token: Option<&str>) -> Response {
    let mut request = client.request(method.clone(), format!("{}{path}", server.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if *method != Method::GET && *method != Method::HEAD {
        request = request.json(&json!({}));
    }
    request.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn table() -> Vec<RouteRule> {
    let table = route_table();
    let mut seen = BTreeSet::new();
    for rule in &table {
        assert!(
            seen.insert((rule.method.to_string(), rule.path.clone())),
            "{} {} is in the table twice",
            rule.method,
            rule.path
        );
    }
    table
}

#[test]
fn every_route_answers_each_caller_as_its_rule_says() {
    let server = Server::start();
    let callers = callers(&server);
    // Redirects are answers here (a page sends a caller without a session to /login), not hops to follow.
    let client =
        Client::builder().timeout(Duration::from_secs(30)).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut failures = Vec::new();
    let table = table();
    for rule in &table {
        let path = concrete(&rule.path);
        for caller in &callers {
            let response = send(&client, &server, &rule.method, &path, caller.token.as_deref());
            let status = response.status();
            drop(response);
            let wanted = match (rule.access, caller.role) {
                (Access::Agent | Access::AtLeast(_), None) => Some(StatusCode::UNAUTHORIZED),
                // A console page sends a browser without a session to the login page.
                (Access::Page(_), None) => Some(StatusCode::SEE_OTHER),
                (access, role) if !access.admits(role) => Some(StatusCode::FORBIDDEN),
                _ => None,
            };
            let ok = match wanted {
                Some(wanted) => status == wanted,
                None => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            };
            if !ok {
                let wanted = wanted.map_or("anything but 401/403".to_owned(), |s| s.to_string());
                failures.push(format!(
                    "{} {path} ({}) as {}: {status}, expected {wanted}",
                    rule.method,
                    rule.access.as_str(),
                    caller.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} calls broke their rule:\n{}",
        failures.len(),
        table.len() * callers.len(),
        failures.join("\n")
    );

    // The rule no token can satisfy: an address that is not an inventory host's is refused whatever it sends.
    let elsewhere = Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let query = "?history_id=9&history_ip=127.0.0.2&history_user=root&history_datetime=2014-06-07%2022:05:56\
                 &history_command=uptime";
    let peer_rules: Vec<_> = table.iter().filter(|r| r.access == Access::InventoryPeer).collect();
    assert!(!peer_rules.is_empty(), "the original agent's routes are in the table");
    for rule in peer_rules {
        for caller in &callers {
            let response =
                send(&elsewhere, &server, &rule.method, &format!("{}{query}", rule.path), caller.token.as_deref());
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{} {} from 127.0.0.2 as {}",
                rule.method,
                rule.path,
                caller.name
            );
        }
    }
}

#[test]
fn nothing_outside_the_table_is_served() {
    let server = Server::start();
    let table = table();
    let served = |method: &Method, path: &str| table.iter().any(|r| r.method == *method && matches(&r.path, path));
    let mut failures = Vec::new();
    let check = |method: &Method, path: &str, wanted: StatusCode, failures: &mut Vec<String>| {
        let status = send(&server.client, &server, method, path, Some(&server.token)).status();
        if status != wanted {
            failures.push(format!("{method} {path}: {status}, expected {wanted}"));
        }
    };
    // Paths next to the table's: one segment more, the last one changed, and a few no table would have.
    let mut paths: BTreeSet<String> = ["/", "/api", "/api/", "/api/nothing", "/admin", "/omaudit", "/healthz/x"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for rule in &table {
        let path = concrete(&rule.path);
        paths.insert(format!("{path}/x"));
        paths.insert(format!("{path}x"));
    }
    for path in paths.iter().filter(|p| !table.iter().any(|r| matches(&r.path, p))) {
        check(&Method::GET, path, StatusCode::NOT_FOUND, &mut failures);
        check(&Method::POST, path, StatusCode::NOT_FOUND, &mut failures);
    }
    // The table's paths with the methods it does not list (HEAD goes with GET, as axum serves it).
    let templates: BTreeSet<&str> = table.iter().map(|r| r.path.as_str()).collect();
    for template in templates {
        let path = concrete(template);
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            if !served(&method, &path) {
                check(&method, &path, StatusCode::METHOD_NOT_ALLOWED, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "served outside the table:\n{}", failures.join("\n"));
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                out.push(target);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_openapi_document_lists_exactly_the_api_routes_the_router_serves() {
    let server = Server::start();
    let viewer = token(&server, "viewer");
    let (status, _) = server.send(server.client.get(format!("{}/api/openapi.json", server.base)));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the document needs credentials like every /api route");
    let (status, document) =
        server.send(server.client.get(format!("{}/api/openapi.json", server.base)).bearer_auth(&viewer));
    assert_eq!(status, StatusCode::OK, "{document}");
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", document["openapi"]);

    let mut listed = BTreeMap::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let access = operation["x-omserver-access"].as_str().unwrap_or("(none)").to_owned();
            listed.insert((method.to_uppercase(), path.clone()), access);
        }
    }
    let served: BTreeMap<(String, String), String> = table()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .map(|r| ((r.method.to_string(), r.path), r.access.as_str().to_owned()))
        .collect();
    let only_listed: Vec<_> = listed.iter().filter(|(k, v)| served.get(*k) != Some(*v)).collect();
    let only_served: Vec<_> = served.iter().filter(|(k, v)| listed.get(*k) != Some(*v)).collect();
    assert!(
        only_listed.is_empty() && only_served.is_empty(),
        "in the document, not so in the table: {only_listed:?}\nserved, not so in the document: {only_served:?}"
    );
    assert!(served.len() >= 15, "the table has the /api routes: {served:?}");

    // Each operation that needs credentials says how they are sent, and every schema it names is in the document.
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(
        (&schemes["bearer"]["type"], &schemes["bearer"]["scheme"]),
        (&json!("http"), &json!("bearer")),
        "{schemes}"
    );
    assert_eq!(
        (&schemes["session"]["type"], &schemes["session"]["in"], &schemes["session"]["name"]),
        (&json!("apiKey"), &json!("cookie"), &json!("omserver_session")),
        "{schemes}"
    );
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has an operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            for (code, response) in operation["responses"].as_object().unwrap() {
                let described = response["description"].as_str().is_some_and(|d| !d.is_empty());
                assert!(described, "{method} {path} {code}: OpenAPI requires a description");
            }
            // The console's session stands in for a bearer token wherever a role is the rule, not for agents.
            let by_role = table().into_iter().any(|r| {
                r.path == *path
                    && r.method.as_str().eq_ignore_ascii_case(method)
                    && matches!(r.access, Access::AtLeast(_))
            });
            let security =
                if by_role { json!([{ "bearer": [] }, { "session": [] }]) } else { json!([{ "bearer": [] }]) };
            assert_eq!(operation["security"], security, "{method} {path}");
            let error = &operation["responses"]["403"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(error, "#/components/schemas/ErrorBody", "{method} {path}");
        }
    }
    let mut targets = Vec::new();
    refs(&document, &mut targets);
    for target in targets {
        let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("a schema ref: {target}"));
        assert!(document["components"]["schemas"][name].is_object(), "{target} is named but not in the document");
    }

    // The schemas describe what the routes send: the fields of real answers are the documented properties.
    let properties = |schema: &str| -> BTreeSet<String> {
        document["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{schema}"))
            .keys()
            .cloned()
            .collect()
    };
    let (_, hosts) = server.get("/api/hosts");
    let host: BTreeSet<String> = hosts[0].as_object().expect("localhost is listed").keys().cloned().collect();
    assert_eq!(host, properties("HostRow"));
    let (_, modules) = server.get("/api/modules");
    let module: BTreeSet<String> = modules[0].as_object().expect("module 1003 is listed").keys().cloned().collect();
    assert_eq!(module, properties("ModuleListing"));
    let keys = |value: &Value| -> BTreeSet<String> {
        value.as_object().unwrap_or_else(|| panic!("an object: {value}")).keys().cloned().collect()
    };
    let (status, submitted) = server.post("/api/jobs", &json!({ "module": 1003, "hosts": ["127.0.0.1"] }));
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    assert_eq!(keys(&submitted), properties("Submitted"));
    let job = server.wait_job(submitted["id"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!(keys(&job), properties("JobView"));
    assert_eq!(keys(&job["results"][0]), properties("ResultRow"));
    let (_, page) = server.get("/api/audit/events");
    assert_eq!(keys(&page), properties("AuditPage"));
    let (_, report) = server.get("/api/audit/verify");
    assert_eq!(keys(&report), properties("Report"));
    let (_, backends) = server.get("/api/backends");
    assert_eq!(keys(&backends[0]), properties("Health"));
    let (status, error) = server.post("/api/hosts", &json!({ "name": "x" }));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: BTreeSet<String> = error.as_object().unwrap().keys().cloned().collect();
    assert!(fields.is_subset(&properties("ErrorBody")), "{error}");
}

#[test]
fn every_answer_carries_the_security_headers() {
    let server = Server::start();
    let get = |path: &str, token: Option<&str>| send(&server.client, &server, &Method::GET, path, token);
    let cases = [
        ("JSON route", get("/api/jobs", Some(&server.token)), StatusCode::OK, true),
        ("health check", get("/healthz", None), StatusCode::OK, false),
        ("icon", get("/favicon.ico", None), StatusCode::OK, false),
        ("unknown path", get("/nothing/here", Some(&server.token)), StatusCode::NOT_FOUND, false),
        ("unknown /api path", get("/api/nothing", Some(&server.token)), StatusCode::NOT_FOUND, true),
        ("refused", get("/api/jobs", None), StatusCode::UNAUTHORIZED, true),
    ];
    for (what, response, status, api) in cases {
        assert_eq!(response.status(), status, "{what}");
        let headers = response.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(header("content-security-policy"), CONTENT_SECURITY_POLICY, "{what}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header("referrer-policy"), "same-origin", "{what}");
        assert_eq!(header("x-frame-options"), "DENY", "{what}");
        if api {
            assert_eq!(header("cache-control"), "no-store", "{what}");
        }
    }
    let csp = CONTENT_SECURITY_POLICY;
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
}

/// Browsers ask for `/favicon.ico` on every page, without a session: it answers, with an ETag like every asset,
/// and the table says it is public.
#[test]
fn the_icon_is_public_and_revalidated_by_its_etag() {
    let rule = table().into_iter().find(|r| r.path == "/favicon.ico").expect("/favicon.ico is in the route table");
    assert_eq!((rule.method, rule.access), (Method::GET, Access::Public));
    let server = Server::start();
    let client = Client::new();
    let icon = client.get(format!("{}/favicon.ico", server.base)).send().unwrap();
    assert_eq!(icon.status(), StatusCode::OK);
    let header =
        |r: &Response, name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header(&icon, "content-type"), "image/svg+xml");
    let etag = header(&icon, "etag");
    assert!(!etag.is_empty(), "an ETag");
    assert!(icon.text().unwrap().starts_with("<svg"));
    let again = client.get(format!("{}/favicon.ico", server.base)).header("if-none-match", &etag).send().unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let linked = client.get(format!("{}/assets/favicon.svg", server.base)).send().unwrap();
    assert_eq!((linked.status(), header(&linked, "etag")), (StatusCode::OK, etag));
    let login = client.get(format!("{}/login", server.base)).send().unwrap().text().unwrap();
    assert!(login.contains(r#"<link rel="icon" href="/assets/favicon.svg""#), "{login}");
}

/// The id each `{parameter}` of a route under `prefix` takes: an object on the host outside the scoped user's
/// grants.
struct Outside {
    job: i64,
    template: i64,
    schedule: i64,
    host: i64,
}

impl Outside {
    fn fill(&self, template: &str) -> String {
        let id = if template.starts_with("/api/jobs/") || template.starts_with("/jobs/") {
            self.job
        } else if template.starts_with("/api/templates/") {
            self.template
        } else if template.starts_with("/api/schedules/") {
            self.schedule
        } else if template.starts_with("/api/hosts/") {
            self.host
        } else {
            999_999
        };
        template
            .split('/')
            .map(|s| if s.starts_with('{') && s.ends_with('}') { id.to_string() } else { s.to_owned() })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Every route a scoped operator's role admits, called as that operator with the ids of objects on a host outside
/// its grants: nothing on that host is shown or done. A route added later is walked too: one that lists what
/// is on a host must not show `web1`, one that names an object on it must not succeed.
#[test]
fn every_route_keeps_a_scoped_user_to_the_hosts_its_grants_cover() {
    let server = Server::start();
    for host in [
        json!({ "name": "web1", "ip": "127.0.0.151", "function": "Linux.Web", "app": "nginx" }),
        json!({ "name": "db1", "ip": "127.0.0.152", "function": "Linux.DB", "app": "mysql" }),
    ] {
        let (status, body) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, hosts) = server.get("/api/hosts");
    let host_id = |name: &str| hosts.as_array().unwrap().iter().find(|h| h["name"] == name).unwrap()["id"].as_i64();
    // What there is on web1: a job, a saved job and its schedule, audit events.
    let job = server.submit(1003, &["web1"], json!({}));
    server.wait_job(job, Duration::from_secs(60));
    server.wait_job(server.submit(1003, &["db1"], json!({})), Duration::from_secs(60));
    let body = json!({ "name": "web-check", "module": 1003, "targets": { "hosts": ["web1"] } });
    let (status, template) = server.post("/api/templates", &body);
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let template = template["id"].as_i64().unwrap();
    let body = json!({ "name": "web-nightly", "template": template, "cron": "0 3 * * *" });
    let (status, schedule) = server.post("/api/schedules", &body);
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let agent = cli(&server, &["hosts", "token", "web1"]);
    let event = json!({ "stream": "s1", "seq": 1, "history_id": 1, "user": "root", "login_user": "", "uid": 0,
        "tty": "/dev/pts/1", "ip": "127.0.0.151", "time": "2026-12-04 10:00:00", "command": "cat /etc/web1.conf" });
    let ingest = server.client.post(format!("{}/api/audit/events", server.base));
    let (status, body) = server.send(ingest.bearer_auth(agent.stdout.trim()).json(&json!({ "events": [event] })));
    assert_eq!(status, StatusCode::OK, "{body}");
    let outside = Outside { job, template, schedule: schedule["id"].as_i64().unwrap(), host: host_id("web1").unwrap() };

    // dbop: an operator limited to Linux.DB.
    let (status, body) = server.post("/api/users", &json!({ "name": "dbop", "role": "operator" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.narrow("dbop", &json!({ "functions": ["Linux.DB"] }));
    let out = cli(&server, &["token", "create", "--role", "operator", "--name", "dbop", "--user", "dbop"]);
    assert!(out.status.success(), "{out:?}");
    let dbop = out.stdout.trim().to_owned();

    let client =
        Client::builder().timeout(Duration::from_secs(30)).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut failures = Vec::new();
    let mut walked = 0;
    for rule in table() {
        let admitted = match rule.access {
            Access::AtLeast(role) | Access::Page(role) => role <= Role::Operator,
            _ => false,
        };
        if !admitted {
            continue;
        }
        walked += 1;
        let path = outside.fill(&rule.path);
        let response = send(&client, &server, &rule.method, &path, Some(&dbop));
        let status = response.status();
        let streaming = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/event-stream"));
        // A stream is judged by its status (what it sends is the grants test's); its body never ends.
        let text = if streaming { String::new() } else { response.text().unwrap_or_default() };
        let names_object = rule.path.contains('{');
        if names_object && status.is_success() && !path.contains("999999") {
            failures.push(format!("{} {path}: {status}, yet it names an object on web1: {text}", rule.method));
        } else if text.contains("web1") {
            failures.push(format!("{} {path}: {status}, and shows web1: {text}", rule.method));
        }
    }
    assert!(walked > 30, "only {walked} routes walked");
    assert!(failures.is_empty(), "{} routes let dbop past its grants:\n{}", failures.len(), failures.join("\n"));
}
