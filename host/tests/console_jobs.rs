//! The job history and the job page in Chromium (issue 15, items 3 and 2): status by colour, icon and word,
//! running jobs updating in place, modules by name; on the job page everything about the job, the counts bar,
//! "only hosts not ok", host durations, grouping that ignores each host's own address, and the output as text and
//! JSON. Screenshots at 1280×800 and 390×844 under target/screenshots/jobs_*.

mod common;

use std::time::{Duration, Instant};

use common::{browser::Browser, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Seed module 1003, fx_sleep as 9003, and three hosts at documentation addresses that the local backend refuses
/// by address ("… 192.0.2.11 is not a loopback address"): the same failure but for each host's own address.
fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![1003], ..Options::default() });
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |e| e.is_some_and(|e| e["status"] == "loaded"));
    for i in 1..=3 {
        let host = json!({ "name": format!("web{i}"), "ip": format!("192.0.2.{}", 10 + i) });
        let (status, body) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

fn module_name(server: &Server, id: u32) -> String {
    let (_, modules) = server.get("/api/modules");
    let module = modules.as_array().unwrap().iter().find(|m| m["id"] == id).cloned().unwrap_or(Value::Null);
    module["name"].as_str().unwrap_or_else(|| panic!("module {id} has a name: {module}")).to_owned()
}

#[test]
fn the_history_shows_status_by_icon_and_word_modules_by_name_and_follows_running_jobs() {
    let server = server();
    let done = server.run_job(1003, &["localhost"], json!({}));
    let failed = server.run_job(1003, &["web1"], json!({}));
    assert_eq!((done["status"].as_str(), failed["status"].as_str()), (Some("succeeded"), Some("failed")));
    let browser = Browser::start("jobs_history");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let running = server.submit(9003, &["localhost"], json!({ "seconds": 3 }));
    browser.goto(&format!("{}/jobs", server.base));
    let row = format!("#history tr[data-job='{running}']");
    browser.wait_for_text(&format!("{row} .status"), "running", Duration::from_secs(5));
    // A mark in the page: gone if the page were reloaded.
    browser.eval("window.__samePage = true; return null");
    browser.screenshot("1-running-1280");

    // Status: a coloured badge with an icon and the word.
    let badge = |id: &Value| -> Vec<Value> {
        let found = browser.eval(&format!(
            "const b = document.querySelector(\"#history tr[data-job='{id}'] .status .badge\");
             return [b.className, b.textContent.trim(), getComputedStyle(b).color]"
        ));
        found.as_array().cloned().unwrap_or_default()
    };
    assert_eq!(badge(&done["id"])[0..2], [json!("badge succeeded"), json!("✓ succeeded")]);
    assert_eq!(badge(&failed["id"])[0..2], [json!("badge failed"), json!("✗ failed")]);
    assert_ne!(badge(&done["id"])[2], badge(&failed["id"])[2], "the two statuses have their own colours");
    // Modules by name.
    let name = module_name(&server, 1003);
    let module = browser.text(&format!("#history tr[data-job='{}'] td[data-label=Module]", done["id"]));
    assert!(module.starts_with(&name), "{module:?} starts with {name:?}");
    let choices = browser.eval("return [...document.querySelectorAll('#f-module option')].map((o) => o.textContent)");
    assert!(choices.as_array().unwrap().contains(&json!(format!("{name} (1003)"))), "{choices}");

    // The running job ends on the open page, without a reload.
    browser.wait_for_text(&format!("{row} .status"), "succeeded", Duration::from_secs(15));
    assert_eq!(browser.eval("return window.__samePage === true"), json!(true), "the page was not reloaded");
    let took = browser.text(&format!("{row} td.took"));
    assert!(took.ends_with(" s") && took != "–", "the time taken shows up: {took:?}");
    browser.wait_for_text("#live-note", "", Duration::from_secs(5));
    browser.screenshot("2-finished-1280");
    browser.resize(390, 844);
    browser.goto(&format!("{}/jobs", server.base));
    browser.find("#history tbody tr");
    let (scroll, _) = browser.widths();
    assert!(scroll <= 390, "/jobs at 390 px is {scroll} px wide");
    browser.screenshot("3-history-390");
}

#[test]
fn the_job_page_tells_everything_groups_by_own_address_filters_and_exports_the_output() {
    let server = server();
    let browser = Browser::start("jobs_page");
    browser.log_in(&server.base, "admin", &server.admin_password);

    // A job with parameters: module name and version, parameters, who, times and duration.
    let slept = server.run_job(9003, &["localhost"], json!({ "seconds": 1 }));
    browser.goto(&format!("{}/jobs/{}", server.base, slept["id"]));
    browser.find("#host-table tbody tr");
    let name = module_name(&server, 9003);
    let module = browser.text("#module");
    assert!(
        module.contains(&name) && module.contains(&format!("version {}", slept["module_version"].as_str().unwrap())),
        "{module}"
    );
    assert_eq!(browser.text("#params"), "seconds = 1");
    assert_eq!(browser.text("#created-by"), slept["created_by"].as_str().unwrap());
    assert!(browser.text("#started").ends_with(" UTC") && browser.text("#ended").ends_with(" UTC"));
    let took = (slept["finished_at"].as_i64().unwrap() - slept["started_at"].as_i64().unwrap()) as f64 / 1000.0;
    assert_eq!(browser.text("#duration"), format!("{took:.1} s"));
    let host_took = browser.text("#host-table tr[data-host='localhost'] .duration");
    let ms = slept["results"][0]["duration_ms"].as_i64().unwrap();
    assert_eq!(host_took, format!("{:.1} s", ms as f64 / 1000.0), "each host's own duration");
    browser.screenshot("1-facts-1280");

    // One ok host and three failing with the same message but their own address in it: two groups, not four.
    let job = server.run_job(1003, &["localhost", "web1", "web2", "web3"], json!({}));
    let id = job["id"].as_i64().unwrap();
    let messages: Vec<String> = job["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "failed")
        .map(|r| r["stderr"].to_string())
        .collect();
    assert_eq!(messages.len(), 3, "{job}");
    assert!(
        messages[0] != messages[1] && messages[0].contains("192.0.2.1"),
        "each message has its address: {messages:?}"
    );
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.find("#host-table tbody tr");
    assert_eq!(browser.eval("return document.querySelectorAll('#groups section').length"), json!(2));
    browser.wait_for_text("#groups section.failed .hosts", "web[1-3]", Duration::from_secs(2));
    browser.wait_for_text("#groups section.failed pre", "{host} is not a loopback address", Duration::from_secs(2));
    // The bar: one part per status, as wide as its count, and the counts in words.
    let bar = browser.eval(
        "return [...document.querySelectorAll('#count-bar span')].map((s) => [s.className, getComputedStyle(s).flexGrow])",
    );
    assert_eq!(bar, json!([["ok", "1"], ["failed", "3"]]));
    assert_eq!(browser.text("#count-legend"), "1 ok\n3 failed");
    assert!(browser
        .eval("return document.getElementById('count-bar').getAttribute('aria-label')")
        .as_str()
        .unwrap()
        .contains("1 ok, 3 failed"));
    browser.screenshot("2-grouped-1280");

    // Only hosts not ok.
    browser.click("#only-not-ok");
    let groups = browser.eval("return [...document.querySelectorAll('#groups section')].map((s) => s.className)");
    assert_eq!(groups, json!(["group failed"]));
    let rows = browser.eval("return [...document.querySelectorAll('#host-table tbody tr')].map((r) => r.dataset.host)");
    assert_eq!(rows, json!(["web1", "web2", "web3"]));
    browser.screenshot("3-only-not-ok-1280");

    // Downloads: the text has the groups, the JSON every host's own result as the API has it.
    browser.click("#download-json");
    let exported: Value = serde_json::from_str(&browser.downloaded(&format!("job-{id}.json"), Duration::from_secs(10)))
        .expect("the JSON download parses");
    assert_eq!(exported["job"]["id"], json!(id));
    assert_eq!(exported["job"]["module_name"], json!(module_name(&server, 1003)));
    let mut api_results = job["results"].as_array().unwrap().clone();
    api_results.sort_by_key(|r| r["host"].as_str().unwrap().to_owned());
    assert_eq!(exported["results"], json!(api_results));
    browser.click("#download-text");
    let text = browser.downloaded(&format!("job-{id}.txt"), Duration::from_secs(10));
    assert!(text.starts_with(&format!("Job {id}: module 1003")), "{text}");
    assert!(text.contains("== web[1-3] (3 hosts): failed"), "{text}");
    assert!(text.contains("== localhost (1 host): ok"), "{text}");

    // Copy: the clipboard holds the same text as the download, pasted with Ctrl+V into a field made for it (a
    // script may not read the clipboard without a permission; a paste needs none).
    browser.click("#copy-text");
    browser.wait_for_text("#copy-state", "Copied", Duration::from_secs(5));
    browser.eval("document.querySelector('main').append(Object.assign(document.createElement('textarea'), { id: 'paste-here' })); return null");
    browser.fill("#paste-here", "\u{E009}v\u{E000}");
    assert_eq!(browser.eval("return document.getElementById('paste-here').value"), json!(text));

    browser.resize(390, 844);
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.find("#host-table tbody tr");
    let (scroll, _) = browser.widths();
    assert!(scroll <= 390, "the job page at 390 px is {scroll} px wide");
    browser.screenshot("4-job-390");
}

#[test]
fn a_scheduled_job_names_its_schedule() {
    let server = server();
    let template = json!({ "name": "nightly sleep", "module": 9003, "params": { "seconds": 0 },
                           "targets": { "hosts": ["localhost"] } });
    let (status, body) = server.post("/api/templates", &template);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let schedule = json!({ "name": "every second", "template": body["id"], "cron": "* * * * * *" });
    let (status, created) = server.post("/api/schedules", &schedule);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let started = Instant::now();
    let job = loop {
        let (_, jobs) = server.get("/api/jobs");
        if let Some(job) = jobs.as_array().unwrap().first() {
            break job["id"].as_i64().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the schedule never fired");
        std::thread::sleep(Duration::from_millis(100));
    };
    let browser = Browser::start("jobs_scheduled");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/jobs/{job}", server.base));
    browser.wait_for_text(
        "#created-by",
        "schedule “every second” of saved job “nightly sleep”",
        Duration::from_secs(5),
    );
    browser.screenshot("scheduled-1280");
}

/// Approvals in the console: an admin adds a policy on /jobs (a category no host is in is refused beside its
/// field); a job under it shows on the home page as waiting and on its page with the decision box; another operator
/// approves it there with a comment and watches it run without a reload.
#[test]
fn a_job_waiting_for_approval_is_approved_on_its_page_and_runs_live() {
    let server = server();
    let browser = Browser::start("jobs_approval");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/jobs", server.base));
    browser.wait_for_text("#policies-empty", "No policy", Duration::from_secs(5));
    browser.fill("#p-name", "sleepers wait");
    browser.fill("#p-modules", "9003");
    browser.fill("#p-functions", "Linux.Nope");
    browser.click("#add-policy");
    browser.wait_for_text("#err-p-functions", "Linux.Nope", Duration::from_secs(5));
    browser.eval("document.getElementById('p-functions').value = ''; return null");
    browser.click("#add-policy");
    browser.wait_for_text("#policies tbody", "module 9003 on any host", Duration::from_secs(5));
    browser.screenshot("policies");

    let password = "bob's long enough password";
    for (name, password) in [("alice", "alice's long enough password"), ("bob", password)] {
        let (status, body) =
            server.post("/api/users", &json!({ "name": name, "role": "operator", "password": password }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, token) = server.post("/api/tokens", &json!({ "name": "alice", "role": "operator", "user": "alice" }));
    let request = server.client.post(format!("{}/api/jobs", server.base)).bearer_auth(token["token"].as_str().unwrap());
    let (status, job) =
        server.send(request.json(&json!({ "module": 9003, "hosts": ["localhost"], "params": { "seconds": 1 } })));
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_i64().unwrap();

    let bob = Browser::start("jobs_approval_bob");
    bob.log_in(&server.base, "bob", password);
    bob.goto(&format!("{}/", server.base));
    bob.wait_for_text("#waiting", &format!("Job {id}"), Duration::from_secs(5));
    bob.goto(&format!("{}/jobs/{id}", server.base));
    bob.wait_for_text("#status", "pending_approval", Duration::from_secs(5));
    bob.wait_for_text("#approval-summary", "asked by alice", Duration::from_secs(5));
    bob.screenshot("waiting");
    bob.fill("#approval-comment", "window agreed in #ops");
    bob.click("#approve");
    let waited = bob.wait_for_text("#status", "succeeded", Duration::from_secs(20));
    assert!(bob.text("#approval").contains("approved by bob"), "{}", bob.text("#approval"));
    assert!(bob.exists("#host-table tbody tr"), "the hosts' results arrived on the open page");
    bob.screenshot("approved");
    println!("approved job seen succeeded {waited:?} after the click");
}
