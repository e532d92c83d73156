//! The web console in headless Chromium (testenv's chromium piece), against the real server binary.
//! Screenshots are kept under target/screenshots/<test>/.

mod common;

use std::time::Duration;

use common::{browser::Browser, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::json;

fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |e| e.is_some_and(|e| e["status"] == "loaded"));
    server
}

#[test]
fn logging_in_then_watching_a_job_finish_without_a_reload() {
    let server = server();
    let browser = Browser::start("job_live");
    browser.goto(&format!("{}/jobs", server.base));
    assert!(browser.url().ends_with("/login"), "a page without a session goes to /login: {}", browser.url());
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.find("header.top");
    browser.screenshot("1-logged-in");

    let id = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 2 }));
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "running", Duration::from_secs(5));
    browser.screenshot("2-running");
    assert!(!browser.exists("#groups section"), "no host has finished yet");
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(15));
    browser.wait_for_text("#groups", "localhost", Duration::from_secs(2));
    browser.screenshot("3-finished");
}

#[test]
fn a_job_can_be_cancelled_from_its_page() {
    let server = server();
    let browser = Browser::start("job_cancel");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let id = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 60 }));
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "running", Duration::from_secs(5));
    browser.click("#cancel");
    browser.wait_for_text("#status", "cancelled", Duration::from_secs(10));
    browser.screenshot("cancelled");
    let job = server.wait_job(id, Duration::from_secs(5));
    assert_eq!(job["status"], "cancelled", "{job}");
}

#[test]
fn after_logging_out_pages_go_to_the_login_page() {
    let server = server();
    let browser = Browser::start("logout");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.click("header.top form button");
    browser.find("#password");
    browser.goto(&format!("{}/jobs", server.base));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    let status = browser.eval("return fetch('/api/session').then(r => r.status)");
    assert_eq!(status, json!(StatusCode::UNAUTHORIZED.as_u16()));
}

/// `omserver hosts token NAME`: the host's agent token.
fn agent_token(server: &Server, host: &str) -> String {
    let out = common::cli(server, &["hosts", "token", host]);
    assert!(out.status.success(), "hosts token: {out:?}");
    out.stdout.trim().to_owned()
}

fn send_audit(server: &Server, token: &str, seq: i64, command: &str) {
    let event = json!({ "stream": "console", "seq": seq, "history_id": seq, "user": "root", "login_user": "alice",
                        "uid": 0, "tty": "/dev/pts/3", "ip": "127.0.0.1", "time": "2026-12-02 10:00:00",
                        "command": command });
    let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(token);
    let (status, body) = server.send(request.json(&json!({ "events": [event] })));
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn the_audit_page_shows_what_a_typed_line_ran() {
    let server = server();
    let token = agent_token(&server, "localhost");
    // A typed line in audit session 9 on pts/3, two execs of that session after it (one argument hostile HTML),
    // and one of another session that must not be listed under it.
    let typed = json!({ "stream": "console", "seq": 1, "history_id": 1, "user": "root", "login_user": "alice",
                        "uid": 0, "tty": "/dev/pts/3", "ip": "127.0.0.1", "time": "2026-12-02 10:00:00",
                        "command": "./deploy.sh", "session": 9 });
    let exec = |seq: i64, session: i64, time: &str, argv: serde_json::Value, command: &str, exit: i64| {
        json!({ "stream": "watch", "seq": seq, "history_id": 0, "user": "root", "login_user": "alice", "uid": 0,
                "tty": "/dev/pts/3", "ip": "127.0.0.1", "time": time, "command": command, "source": "execve",
                "session": session, "argv": argv, "cwd": "/srv/app", "exe": "/usr/bin/curl", "exit": exit })
    };
    let events = json!([
        typed,
        exec(
            1,
            9,
            "2026-12-02 10:00:01",
            json!(["curl", "<img src=x onerror=alert(1)>"]),
            "curl '<img src=x onerror=alert(1)>'",
            0
        ),
        exec(2, 9, "2026-12-02 10:00:02", json!(["./missing"]), "./missing", -2),
        exec(3, 10, "2026-12-02 10:00:01", json!(["other-session"]), "other-session", 0),
    ]);
    let request = server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(&token);
    let (status, body) = server.send(request.json(&json!({ "events": events })));
    assert_eq!((status, &body["stored"]), (StatusCode::OK, &json!(4)), "{body}");

    let browser = Browser::start("audit_what_ran");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/audit", server.base));
    browser.wait_for_text("#events tbody", "./deploy.sh", Duration::from_secs(5));
    // Execs show their program and directory; the hostile argument is text, not markup.
    browser.wait_for_text(
        "#events tbody tr[data-source='execve']",
        "program /usr/bin/curl · in /srv/app",
        Duration::from_secs(5),
    );
    assert!(browser.text("#events tbody").contains("exec failed (errno 2)"));
    assert_eq!(browser.eval("return document.querySelectorAll('#events img').length"), json!(0));
    browser.click("#events tbody tr[data-source='agent'] button.what-ran");
    browser.wait_for_text("#events tbody tr[data-source='agent'] .ran", "./missing", Duration::from_secs(5));
    let ran = browser.text("#events tbody tr[data-source='agent'] .ran");
    assert!(ran.contains("curl '<img src=x onerror=alert(1)>'"), "{ran}");
    assert!(!ran.contains("other-session"), "another session's exec is not what this line ran: {ran}");
    assert_eq!(browser.eval("return document.querySelectorAll('#events img').length"), json!(0));
    browser.screenshot("what-ran");

    // The Source filter: only execs.
    browser.eval("document.getElementById('f-source').value = 'execve'; return null");
    browser.click("#apply");
    browser.wait_for_text("#events tbody", "other-session", Duration::from_secs(5));
    assert!(!browser.text("#events tbody").contains("./deploy.sh"), "typed lines are filtered out");
    browser.screenshot("execs-only");

    // A command search, case ignored; one too short for the index says which events it read.
    browser.eval(
        "document.getElementById('f-source').value = ''; document.getElementById('f-q').value = 'DEPLOY'; return null",
    );
    browser.click("#apply");
    browser.wait_for_text("#events tbody", "./deploy.sh", Duration::from_secs(5));
    assert!(!browser.text("#events tbody").contains("other-session"), "only the matching line");
    assert_eq!(browser.text("#scanned"), "");
    browser.eval("document.getElementById('f-q').value = 'sh'; return null");
    browser.click("#apply");
    browser.wait_for_text("#scanned", "A term under three characters is not indexed", Duration::from_secs(5));
    assert!(browser.text("#scanned").contains("searched events 1–4 (to the end)"), "{}", browser.text("#scanned"));
}

#[test]
fn an_audit_event_appears_on_an_open_audit_page_within_a_second() {
    let server = server();
    let token = agent_token(&server, "localhost");
    send_audit(&server, &token, 1, "uptime");
    let browser = Browser::start("audit_live");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/audit", server.base));
    browser.wait_for_text("#events tbody", "uptime", Duration::from_secs(5));
    browser.wait_for_text("#live-state", "live", Duration::from_secs(5));
    send_audit(&server, &token, 2, "systemctl restart nginx");
    let took = browser.wait_for_text("#events tbody", "systemctl restart nginx", Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "the event took {took:?} to appear");

    // An alert rule added on the page flags matching events as they arrive.
    browser.fill("#r-name", "rm-root");
    browser.fill("#r-pattern", r"rm\s+-rf\s+/(\s|$)");
    browser.click("#add-rule");
    browser.wait_for_text("#rules tbody", "rm-root", Duration::from_secs(5));
    send_audit(&server, &token, 3, "rm -rf /");
    browser.wait_for_text("#events tbody tr.flagged .alerts", "rm-root", Duration::from_secs(5));
    browser.screenshot("live");
    // A rule limited to a host shows the host by name, not by its id.
    browser.fill("#r-name", "on-localhost");
    browser.fill("#r-pattern", "^never typed$");
    browser.fill("#r-host", "localhost");
    browser.click("#add-rule");
    browser.wait_for_text("#rules tbody", "on-localhost", Duration::from_secs(5));
    assert_eq!(browser.text("#rules tbody tr[data-rule='on-localhost'] td:nth-child(3)"), "localhost");
    assert_eq!(browser.text("#rules tbody tr[data-rule='rm-root'] td:nth-child(3)"), "any");

    // The app category filter keeps the hosts in it, in the history and in the live stream.
    let web2 = json!({ "name": "web2", "ip": "127.0.0.2", "function": "web", "app": "nginx" });
    let (status, row) = server.post("/api/hosts", &web2);
    assert_eq!(status, StatusCode::CREATED, "{row}");
    let web2_token = agent_token(&server, "web2");
    send_audit(&server, &web2_token, 1, "nginx -t");
    browser.goto(&format!("{}/audit", server.base));
    browser.wait_for_text("#events tbody", "nginx -t", Duration::from_secs(5));
    browser.eval("document.getElementById('f-app').value = 'nginx'; return null");
    browser.click("#apply");
    browser.wait_for_text("#events tbody", "nginx -t", Duration::from_secs(5));
    assert!(!browser.text("#events tbody").contains("uptime"), "localhost is not in nginx");
    // Sent in this order, so an unfiltered stream would show localhost's event first.
    send_audit(&server, &token, 4, "only on localhost");
    send_audit(&server, &web2_token, 2, "nginx -s reload");
    browser.wait_for_text("#events tbody", "nginx -s reload", Duration::from_secs(5));
    assert!(!browser.text("#events tbody").contains("only on localhost"), "the live stream is filtered too");
    browser.screenshot("app-filter");

    // Chain verification, each host on its own row: intact, then one row edited behind the server's back.
    browser.click("#verify");
    browser.wait_for_text("#verify-result", "Intact: 2 hosts, 6 rows.", Duration::from_secs(10));
    browser.wait_for_text("#chains tbody tr[data-host='web2']", "intact", Duration::from_secs(1));
    let edited = "UPDATE server_history SET history_command = 'uptime # harmless' WHERE history_command = 'uptime'";
    assert_eq!(common::database::db_exec(&server, edited), 1);
    browser.click("#verify");
    browser.wait_for_text("#verify-result", "1 problem on 1 of 2 hosts.", Duration::from_secs(10));
    let localhost = "#chains tbody tr.flagged[data-host='localhost']";
    browser.wait_for_text(localhost, "1 problem", Duration::from_secs(1));
    browser.wait_for_text(localhost, "at chain position 1: row id 1 was edited or forged", Duration::from_secs(1));
    browser.wait_for_text("#chains tbody tr[data-host='web2']", "intact", Duration::from_secs(1));
    browser.eval("document.getElementById('chains').scrollIntoView(); return null");
    browser.screenshot("verify");
}

#[test]
fn markup_from_modules_hosts_and_audited_commands_shows_as_text_and_runs_nothing() {
    const PAYLOAD: &str = "<img src=x onerror=\"window.__xss='img'\"></script><script>window.__xss='script'</script>";
    let server = server();
    install(&fixture("fx_markup"), &server.plugins_dir(), "Mid_9007.so");
    server.wait_for_module("Mid_9007.so", Duration::from_secs(10), |e| e.is_some_and(|e| e["status"] == "loaded"));
    let browser = Browser::start("markup");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let ran = |browser: &Browser| browser.eval("return window.__xss === undefined ? null : window.__xss");

    browser.goto(&format!("{}/modules", server.base));
    browser.wait_for_text("tr[data-file='Mid_9007.so'] .description", PAYLOAD, Duration::from_secs(5));
    browser.wait_for_text("tr[data-file='Mid_9007.so'] .name", "Markup <b>bold</b>", Duration::from_secs(1));
    assert!(!browser.exists("#modules img") && !browser.exists("#modules b"), "module text became elements");
    browser.screenshot("modules");
    assert_eq!(ran(&browser), json!(null));

    let job = server.run_job(9007, &["127.0.0.1"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
    browser.goto(&format!("{}/jobs/{}", server.base, job["id"]));
    browser.wait_for_text("#groups pre.stdout", PAYLOAD, Duration::from_secs(5));
    assert!(!browser.exists("#groups img") && !browser.exists("#groups script"), "job output became elements");
    browser.screenshot("job");
    assert_eq!(ran(&browser), json!(null));

    send_audit(&server, &agent_token(&server, "localhost"), 1, PAYLOAD);
    browser.goto(&format!("{}/audit", server.base));
    browser.wait_for_text("#events tbody", PAYLOAD, Duration::from_secs(5));
    assert!(!browser.exists("#events img") && !browser.exists("#events script"), "a command became elements");
    browser.screenshot("audit");
    assert_eq!(ran(&browser), json!(null));

    // The activity log shows what a client sent (its user agent, a rule's pattern) as text.
    let request = server.client.post(format!("{}/api/audit/rules", server.base)).bearer_auth(&server.token);
    let (status, body) =
        server.send(request.header("user-agent", PAYLOAD).json(&json!({ "name": "markup", "pattern": "<b>x</b>" })));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    browser.goto(&format!("{}/activity?kind=alert_rule", server.base));
    browser.wait_for_text("#entries tbody", PAYLOAD, Duration::from_secs(5));
    browser.wait_for_text("#entries tbody td.changes", "pattern: <b>x</b>", Duration::from_secs(1));
    assert!(!browser.exists("#entries img") && !browser.exists("#entries b"), "a logged value became elements");
    browser.screenshot("activity");
    assert_eq!(ran(&browser), json!(null));
}

#[test]
fn a_user_limited_by_grants_is_offered_and_shown_only_its_hosts() {
    let server = server();
    for (name, ip, function, app) in
        [("web1", "127.0.0.2", "Linux.Web", "nginx"), ("db1", "127.0.0.4", "Linux.DB", "mysql")]
    {
        let (status, row) =
            server.post("/api/hosts", &json!({ "name": name, "ip": ip, "function": function, "app": app }));
        assert_eq!(status, StatusCode::CREATED, "{row}");
    }
    let password = "db operator's long password";
    let (status, body) =
        server.post("/api/users", &json!({ "name": "dbop", "role": "operator", "password": password }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.narrow("dbop", &json!({ "functions": ["Linux.DB"] }));
    let web_job = server.submit(1003, &["web1"], json!({}));
    server.wait_job(web_job, Duration::from_secs(30));

    let browser = Browser::start("grants");
    browser.log_in(&server.base, "dbop", password);
    browser.goto(&format!("{}/run", server.base));
    browser.find("#host-list input[value='db1']");
    let offered = browser.eval("return [...document.querySelectorAll('#host-list input')].map((b) => b.value)");
    assert_eq!(offered, json!(["db1"]), "the run page offers only the hosts its grants cover");
    browser.screenshot("run");
    browser.goto(&format!("{}/inventory", server.base));
    browser.wait_for_text("#tree", "db1", Duration::from_secs(5));
    assert!(!browser.text("#tree").contains("web1"), "{}", browser.text("#tree"));
    browser.goto(&format!("{}/jobs", server.base));
    assert!(!browser.text("main").contains("web1"), "{}", browser.text("main"));
    browser.goto(&format!("{}/jobs/{web_job}", server.base));
    browser.wait_for_text("main", "not found", Duration::from_secs(5));
    browser.screenshot("web-job");
}

#[test]
fn an_admin_narrows_a_user_with_grants_on_the_users_page() {
    let server = server();
    let (status, row) =
        server.post("/api/hosts", &json!({ "name": "db1", "ip": "127.0.0.4", "function": "Linux.DB", "app": "mysql" }));
    assert_eq!(status, StatusCode::CREATED, "{row}");
    let (status, body) = server.post("/api/users", &json!({ "name": "dbop", "role": "operator" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let browser = Browser::start("grants_page");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/users", server.base));
    // The page first lists the first user's grants (admin's); choosing dbop before that list is drawn would race
    // with it (CI saw admin's list land last, and the grant added to admin).
    browser.wait_for_text("#grants", "of admin", Duration::from_secs(10));
    browser.eval("const s = document.getElementById('g-user'); s.value = 'dbop'; s.dispatchEvent(new Event('change')); return null");
    browser.wait_for_text("#grants", "of dbop", Duration::from_secs(5));
    browser.wait_for_text("#grants", "the user's own role on every host", Duration::from_secs(5));

    // A category no host is in is refused beside its field; nothing is added.
    browser.fill("#g-functions", "Linux.Nope");
    browser.click("#add-grant");
    browser.wait_for_text("#err-g-functions", "Linux.Nope", Duration::from_secs(5));
    browser.eval("document.getElementById('g-functions').value = ''; return null");
    browser.fill("#g-functions", "Linux.DB");
    browser.click("#add-grant");
    browser.wait_for_text("#grants", "the user's own role on function Linux.DB", Duration::from_secs(5));
    browser.screenshot("added");
    let (_, grants) = server.get("/api/users/dbop/grants");
    let everything = grants[0]["id"].as_i64().unwrap();
    browser.click(&format!("#grants li[data-grant='{everything}'] button"));
    browser.click(&format!("#grants li[data-grant='{everything}'] .ask button.danger"));
    wait(Duration::from_secs(5), || server.get("/api/users/dbop/grants").1.as_array().unwrap().len() == 1);
    let (_, grants) = server.get("/api/users/dbop/grants");
    assert_eq!(grants[0]["functions"], json!(["Linux.DB"]), "{grants}");
    // The page redraws the list once the delete's answer arrives, which may be after the API shows it gone.
    wait(Duration::from_secs(5), || !browser.text("#grants").contains("every host"));
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_run_page_picks_hosts_by_category_tag_and_text() {
    let server = server();
    for (name, ip, function, app, tags) in [
        ("web1", "127.0.0.2", "web", "nginx", vec!["prod", "eu"]),
        ("web2", "127.0.0.3", "web", "nginx", vec!["staging"]),
        ("db1", "127.0.0.4", "db", "mysql", vec!["prod"]),
    ] {
        let host = json!({ "name": name, "ip": ip, "function": function, "app": app, "tags": tags });
        let (status, row) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{row}");
    }
    let browser = Browser::start("run_pick");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/run", server.base));
    browser.find("#host-list input[value='db1']");
    let shown = |browser: &Browser| {
        let names = browser.eval("return [...document.querySelectorAll('#host-list input')].map((b) => b.value)");
        serde_json::from_value::<Vec<String>>(names).unwrap()
    };
    let choose = |browser: &Browser, id: &str, value: &str| {
        browser.eval(&format!(
            "const s = document.getElementById('{id}'); s.value = '{value}'; s.dispatchEvent(new Event('change')); return null"
        ));
    };
    assert_eq!(shown(&browser), ["db1", "localhost", "web1", "web2"]);
    choose(&browser, "tag", "prod");
    assert_eq!(shown(&browser), ["db1", "web1"]);
    browser.wait_for_text("#host-list", "web1 (127.0.0.2) [eu, prod]", Duration::from_secs(1));
    choose(&browser, "function", "web");
    assert_eq!(shown(&browser), ["web1"]);
    choose(&browser, "tag", "");
    assert_eq!(shown(&browser), ["web1", "web2"]);
    browser.fill("#host-filter", "0.0.3");
    assert_eq!(shown(&browser), ["web2"], "by address");
    browser.eval("const f = document.getElementById('host-filter'); f.value = ''; f.dispatchEvent(new Event('input')); return null");
    browser.fill("#host-filter", "WEB2");
    assert_eq!(shown(&browser), ["web2"], "by name, in any case");
    browser.click("#select-visible");
    browser.screenshot("filtered");
    browser.find("#module option[value='1003']");
    choose(&browser, "module", "1003");
    browser.click("#review");
    browser.wait_for_text("#summary", "on 1 host", Duration::from_secs(5));
}

#[test]
fn running_1003_from_the_run_page_shows_its_result_on_the_job_page() {
    let server = server();
    let browser = Browser::start("run_page");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/run", server.base));
    browser.find("#host-list input[value='localhost']");
    browser.click("#host-list input[value='localhost']");
    browser.find("#module option[value='1003']");
    browser.eval("const s = document.getElementById('module'); s.value = '1003'; s.dispatchEvent(new Event('change')); return null");
    browser.click("#review");
    browser.wait_for_text("#summary", "on 1 host", Duration::from_secs(5));
    browser.screenshot("1-confirm");
    browser.click("#run");
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(20));
    let issue = std::fs::read_to_string("/etc/issue").unwrap_or_default();
    let first = issue.lines().next().unwrap_or_default().trim().to_owned();
    browser.wait_for_text("#groups pre.stdout", &first, Duration::from_secs(5));
    assert!(browser.url().contains("/jobs/"), "{}", browser.url());
    browser.screenshot("2-result");
}

#[test]
fn a_viewer_sees_no_run_button_and_the_api_refuses_them() {
    let server = server();
    let out =
        common::cli_with_input(&server, &["user", "add", "vera", "--role", "viewer"], Some("viewer-password-1\n"));
    assert!(out.status.success(), "{out:?}");
    let id = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 30 }));
    let browser = Browser::start("viewer");
    browser.log_in(&server.base, "vera", "viewer-password-1");
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "running", Duration::from_secs(5));
    assert!(!browser.exists("#cancel"), "a viewer must not get a cancel button");
    assert!(!browser.exists("header.top a[href='/run']"), "a viewer must not get a Run link");
    browser.screenshot("job");
    let status = browser.eval(
        "return fetch('/api/session').then(r => r.json()).then(s => fetch('/api/jobs', { method: 'POST', \
         headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token }, \
         body: JSON.stringify({ module: 1003, hosts: ['localhost'] }) })).then(r => r.status)",
    );
    assert_eq!(status, json!(403));
    server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));

    // The token form offers no role above the viewer's own.
    browser.goto(&format!("{}/users", server.base));
    browser.find("#token-form");
    let offered = browser.eval("return [...document.querySelectorAll('#t-role option')].map(o => o.value)");
    assert_eq!(offered, json!(["viewer"]));
    browser.screenshot("tokens");
}

#[test]
fn an_admin_manages_users_and_tokens_from_the_users_page() {
    let server = server();
    let browser = Browser::start("users");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/users", server.base));
    browser.fill("#u-name", "olga");
    browser.eval("document.getElementById('u-role').value = 'operator'; return null");
    browser.click("#add-user");
    let shown = browser.text("#user-result");
    browser.wait_for_text("#user-result", "shown once", Duration::from_secs(5));
    browser.wait_for_text("#users tbody", "olga", Duration::from_secs(5));
    let password = browser.text("#user-result").rsplit(": ").next().unwrap().trim().to_owned();
    assert!(password.len() >= 12, "a generated password: {password:?} ({shown:?})");

    let offered = browser.eval("return [...document.querySelectorAll('#t-role option')].map(o => o.value)");
    assert_eq!(offered, json!(["viewer", "operator", "admin"]), "an admin may give any role");
    browser.fill("#t-name", "ci-deploy");
    browser.click("#create-token");
    browser.wait_for_text("#tokens tbody", "ci-deploy", Duration::from_secs(5));
    let token = browser.text("#new-token");
    let check = server.client.get(format!("{}/api/session", server.base)).bearer_auth(&token);
    assert_eq!(server.send(check).0, StatusCode::OK, "the token shown works");
    browser.screenshot("created");
    browser.click("tr[data-token='ci-deploy'] button");
    // Revoking is confirmed first (console_errors.rs checks that asking alone revokes nothing).
    browser.click("tr[data-token='ci-deploy'] .ask button.danger");
    let started = std::time::Instant::now();
    while browser.exists("tr[data-token='ci-deploy']") {
        assert!(started.elapsed() < Duration::from_secs(5), "the revoked token is still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let check = server.client.get(format!("{}/api/session", server.base)).bearer_auth(&token);
    assert_eq!(server.send(check).0, StatusCode::UNAUTHORIZED, "a revoked token is refused");

    // The new operator logs in with the password the page showed once.
    let second = Browser::start("users-olga");
    second.log_in(&server.base, "olga", &password);
    second.find("header.top a[href='/run']");

    // Made a viewer from the page, olga loses the run link at her next page; the last admin stays one.
    browser.eval("document.getElementById('role-olga').value = 'viewer'; return null");
    browser.click("tr[data-user='olga'] td:nth-child(2) button");
    let started = std::time::Instant::now();
    loop {
        let (_, users) = server.get("/api/users");
        if users.as_array().unwrap().iter().any(|u| u["name"] == "olga" && u["role"] == "viewer") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "olga is still an operator: {users}");
        std::thread::sleep(Duration::from_millis(20));
    }
    second.goto(&format!("{}/jobs", server.base));
    second.find("header.top");
    assert!(!second.exists("header.top a[href='/run']"), "a viewer has no run link");
    browser.eval("document.getElementById('role-admin').value = 'operator'; return null");
    browser.click("tr[data-user='admin'] td:nth-child(2) button");
    browser.wait_for_text("#problem", "admin is the last enabled admin", Duration::from_secs(5));
    assert_eq!(browser.eval("return document.getElementById('role-admin').value"), json!("admin"));
    browser.screenshot("roles");
}

#[test]
fn the_api_page_lists_every_operation_of_the_document() {
    let server = server();
    let browser = Browser::start("api_docs");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/api-docs", server.base));
    browser.find("section[data-operation='POST /api/jobs']");
    let (_, doc) = server.get("/api/openapi.json");
    let operations: usize =
        doc["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    let shown = browser.eval("return document.querySelectorAll('#operations section').length");
    assert_eq!(shown, json!(operations));
    browser.screenshot("api");
}

#[test]
fn an_admin_adds_a_host_with_the_form_and_imports_an_ini_file_with_one_bad_line() {
    let server = server();
    let browser = Browser::start("inventory");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/inventory", server.base));
    browser.fill("#h-name", "web1");
    browser.fill("#h-ip", "10.0.0.11");
    browser.fill("#h-function", "Linux.Web");
    browser.fill("#h-app", "nginx");
    browser.fill("#h-tags", "prod eu");
    browser.click("#save-host");
    browser.wait_for_text(
        "details[data-function='Linux.Web'] details[data-app='nginx']",
        "web1 (10.0.0.11)",
        Duration::from_secs(5),
    );
    browser.screenshot("1-added");

    let ini = "[db]\ndb1 ansible_host=10.0.2.1 ansible_port=2222\ndb2 ansible_host=10.0.2.2\ndb3 ansible_port=x\n";
    browser.eval(&format!("document.getElementById('i-text').value = {}; return null", json!(ini)));
    browser.click("#preview");
    browser.wait_for_text("#import-summary", "2 lines ready, 1 with errors", Duration::from_secs(5));
    browser.wait_for_text("tr[data-line='4'] .result", "ansible_port", Duration::from_secs(1));
    browser.screenshot("2-preview");
    browser.click("#do-import");
    browser.wait_for_text("#import-summary", "2 hosts imported, 1 lines not imported", Duration::from_secs(5));
    browser.wait_for_text("#tree", "db2 (10.0.2.2)", Duration::from_secs(5));
    browser.screenshot("3-imported");
    let (_, hosts) = server.get("/api/hosts");
    let names: Vec<&str> = hosts.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db1", "db2", "localhost", "web1"]);
    let db1 = hosts.as_array().unwrap().iter().find(|h| h["name"] == "db1").unwrap();
    assert_eq!((db1["port"].clone(), db1["tags"].clone()), (json!(2222), json!(["db"])));
}

#[test]
fn the_job_history_is_filtered_from_its_form_and_refuses_a_bad_filter_in_words() {
    let server = server();
    let browser = Browser::start("job_history");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let quick = server.run_job(1003, &["127.0.0.1"], json!({}))["id"].as_i64().unwrap();
    let long = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 60 }));
    let (status, body) = server.post(&format!("/api/jobs/{long}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    server.wait_job(long, Duration::from_secs(10));

    browser.goto(&format!("{}/jobs", server.base));
    let rows = |browser: &Browser| -> Vec<String> {
        let ids = browser.eval("return [...document.querySelectorAll('#history tbody a')].map(a => a.textContent)");
        ids.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(rows(&browser), [long.to_string(), quick.to_string()]);
    browser.eval("document.getElementById('f-status').value = 'cancelled'; return null");
    browser.click("form.filters button[type=submit]");
    browser.wait_for_text("#history", "cancelled", Duration::from_secs(5));
    assert_eq!(rows(&browser), [long.to_string()], "{}", browser.url());
    assert!(browser.url().contains("status=cancelled"), "the filter is in the address, to share: {}", browser.url());
    browser.screenshot("1-cancelled-only");

    browser.goto(&format!("{}/jobs?module=1003&host=localhost", server.base));
    assert_eq!(rows(&browser), [quick.to_string()]);
    assert_eq!(browser.eval("return document.getElementById('f-module').value"), json!("1003"), "the form keeps it");
    browser.goto(&format!("{}/jobs?host=local", server.base));
    browser.wait_for_text("#history", "No job matches these filters.", Duration::from_secs(1));

    browser.fill("#f-from", "yesterday");
    browser.click("form.filters button[type=submit]");
    browser.wait_for_text("#problem", "from: must be a UTC time such as 2026-12-02", Duration::from_secs(5));
    browser.screenshot("2-bad-filter");
    assert!(rows(&browser).is_empty());
}

#[test]
fn the_servers_page_shows_this_server_up_and_the_job_it_runs() {
    let server = server();
    let browser = Browser::start("servers");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let id = server.submit(9003, &["127.0.0.1"], json!({ "seconds": 30 }));
    browser.goto(&format!("{}/cluster", server.base));
    browser.wait_for_text("#servers tbody", "(this server)", Duration::from_secs(5));
    browser.wait_for_text("#servers tbody", "up", Duration::from_secs(2));
    // The page redraws every 5 s: the job shows once it runs.
    browser.wait_for_text("#servers tbody", &format!("#{id}"), Duration::from_secs(12));
    browser.screenshot("running");
    browser.click(&format!("#servers a[href=\"/jobs/{id}\"]"));
    browser.wait_for_text("#status", "running", Duration::from_secs(5));
    let (status, _) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK);
}
