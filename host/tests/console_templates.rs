//! Saved jobs and rolling jobs in the web console (headless Chromium from the test environment, the real server):
//! the /templates form with a field error shown beside its field, "Run now" confirmed with the matched hosts, a
//! rolling job's batches and skipped hosts, cancelled hosts, re-runs, what a viewer sees, "Save as template", and
//! schedules (added under a saved job, fired, paused, edited, a bad cron, what a viewer sees). Module `fx_roll` (9008) on the local backend with loopback hosts. Screenshots: target/screenshots/templates_*.

mod common;

use std::time::{Duration, Instant};

use common::{browser::Browser, cli_with_input, fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PASSWORD: &str = "console-password-1";

/// A server with `fx_roll` loaded and an inventory: web1, web2 (Linux.Web / nginx), db1 (Linux.DB / mysql), and
/// l1…l6 without categories.
fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![], ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    let mut hosts = vec![
        json!({ "name": "web1", "ip": "127.0.0.131", "function": "Linux.Web", "app": "nginx", "tags": ["prod"] }),
        json!({ "name": "web2", "ip": "127.0.0.132", "function": "Linux.Web", "app": "nginx", "tags": ["canary"] }),
        json!({ "name": "db1", "ip": "127.0.0.133", "function": "Linux.DB", "app": "mysql", "tags": ["prod"] }),
    ];
    hosts.extend((1..=6).map(|i| json!({ "name": format!("l{i}"), "ip": format!("127.0.0.{}", 140 + i) })));
    for host in hosts {
        let (status, body) = server.post("/api/hosts", &host);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

fn add_user(server: &Server, name: &str, role: &str) {
    let input = format!("{PASSWORD}\n");
    let out = cli_with_input(server, &["user", "add", name, "--role", role], Some(&input));
    assert!(out.status.success(), "{out:?}");
}

fn submit(server: &Server, body: Value) -> i64 {
    let (status, answer) = server.post("/api/jobs", &body);
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["id"].as_i64().unwrap()
}

/// Sets a select's (or input's) value as a person would, change event included.
fn choose(browser: &Browser, id: &str, value: &str) {
    browser.eval(&format!(
        "const s = document.getElementById({}); s.value = {}; s.dispatchEvent(new Event('change')); return null",
        json!(id),
        json!(value)
    ));
}

/// Replaces an input's text (typing would append to what is there).
fn set(browser: &Browser, id: &str, value: &str) {
    browser.eval(&format!("document.getElementById({}).value = {}; return null", json!(id), json!(value)));
}

fn wait_for(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The job id of the job page the browser is on.
fn job_on_page(browser: &Browser) -> i64 {
    let url = browser.url();
    url.rsplit("/jobs/").next().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("not a job page: {url}"))
}

/// The error messages shown beside fields now, by their element id.
fn field_errors(browser: &Browser) -> Value {
    browser.eval(
        "return Object.fromEntries([...document.querySelectorAll('.field-error')]
           .filter((p) => p.textContent).map((p) => [p.id, p.textContent]))",
    )
}

/// No horizontal scrolling: the page fits the window's width.
fn fits_the_width(browser: &Browser) {
    let widths = browser.eval("return [document.documentElement.scrollWidth, window.innerWidth]");
    assert!(widths[0].as_u64() <= widths[1].as_u64(), "wider than the window: {widths}");
}

#[test]
fn an_operator_saves_a_job_with_the_form_and_runs_it_after_confirming_its_hosts() {
    let server = server();
    add_user(&server, "otto", "operator");
    let browser = Browser::start("templates_create");
    browser.log_in(&server.base, "otto", PASSWORD);
    browser.click("header.top a[href='/templates']");
    browser.wait_for_text("#empty", "No saved jobs yet.", Duration::from_secs(5));

    browser.fill("#t-name", "web check");
    browser.fill("#t-description", "The web tier and db1.");
    browser.find("#t-module option[value='9008']");
    choose(&browser, "t-module", "9008");
    browser.find("#params #param-seconds"); // the module's parameters, from its schema
    set(&browser, "param-seconds", "0");
    browser.click("#t-functions input[value='Linux.Web']");
    browser.click("#t-hosts input[value='db1']");
    browser.wait_for_text("#t-matches", "Matches 3 hosts now: db1,web[1-2].", Duration::from_secs(2));
    choose(&browser, "t-backend", "local");
    browser.fill("#t-batch", "0");
    browser.fill("#t-max-failed", "1");
    browser.click("#save");

    // The server's 422 names rollout.batch: its message sits right under the batch input, which is marked.
    browser.wait_for_text("#err-rollout-batch", "must be 1 or more", Duration::from_secs(5));
    assert!(browser.text("#err-rollout-batch").starts_with("must be"), "the field's name is not repeated beside it");
    let beside = browser.eval(
        "const i = document.getElementById('t-batch');
         return [i.nextElementSibling.id, i.getAttribute('aria-invalid'), document.activeElement.id]",
    );
    assert_eq!(beside, json!(["err-rollout-batch", "true", "t-batch"]));
    assert_eq!(
        field_errors(&browser).as_object().unwrap().len(),
        1,
        "only beside the batch: {}",
        field_errors(&browser)
    );
    assert_eq!(browser.text("#form-problem"), "");
    browser.screenshot("1-field-error");
    let (_, none) = server.get("/api/templates");
    assert_eq!(none, json!([]), "nothing was saved");

    set(&browser, "t-batch", "50%");
    browser.click("#save");
    browser.wait_for_text("#form-result", "Saved “web check”.", Duration::from_secs(5));
    assert_eq!(field_errors(&browser), json!({}), "the error is gone after the save");
    assert!(!browser.exists("[aria-invalid]"));
    let row = "tr[data-template='web check']";
    browser.wait_for_text(row, "9008 — Rolls (test fixture)", Duration::from_secs(5));
    let shown = browser.text(row);
    for part in [
        "The web tier and db1.",
        "Host: db1",
        "Function categories: Linux.Web",
        "local",
        "batches of 50%, stop once more than 1 not ok",
        "the server's default",
        "UTC by otto",
    ] {
        assert!(shown.contains(part), "{part:?} not in the row: {shown:?}");
    }
    browser.screenshot("2-saved");
    let (_, list) = server.get("/api/templates");
    let saved = &list[0];
    assert_eq!(saved["targets"], json!({ "hosts": ["db1"], "functions": ["Linux.Web"], "apps": [], "tags": [] }));
    assert_eq!(saved["rollout"], json!({ "batch": "50%", "max_failed": 1, "pause_secs": 0 }));
    assert_eq!((saved["params"]["seconds"].as_i64(), saved["backend"].as_str()), (Some(0), Some("local")), "{saved}");

    // Run now: the hosts the targets match now, counted and folded, before anything runs.
    browser.click(&format!("{row} button.run"));
    browser.wait_for_text("#run-summary", "on 3 hosts through the local backend", Duration::from_secs(5));
    browser.wait_for_text("#run-hosts", "db1,web[1-2]", Duration::from_secs(1));
    assert_eq!(browser.text("#run-go"), "Run on 3 hosts");
    let (_, history) = server.get("/api/jobs");
    assert_eq!(history, json!([]), "nothing runs before the confirmation");
    browser.screenshot("3-confirm");
    browser.click("#run-go");
    wait_for("the job page", Duration::from_secs(10), || browser.url().contains("/jobs/"));
    let id = job_on_page(&browser);
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(30));
    browser.wait_for_text("#progress", "3 of 3 reported (3 ok)", Duration::from_secs(5));
    browser.wait_for_text("#origin", "saved job “web check”", Duration::from_secs(5));
    browser.wait_for_text("#batches", "web2 (1 host)", Duration::from_secs(5));
    browser.screenshot("4-job");
    let (_, job) = server.get(&format!("/api/jobs/{id}"));
    assert_eq!(
        (job["template_id"].clone(), job["hosts"].clone()),
        (saved["id"].clone(), json!(["db1", "web1", "web2"]))
    );
}

#[test]
fn a_rolling_job_shows_its_batches_and_skipped_hosts_and_reruns_the_hosts_not_ok() {
    let server = server();
    let hosts = ["l1", "l2", "l3", "l4", "l5", "l6"];
    let body = json!({
        "module": 9008, "hosts": hosts, "backend": "local", "params": { "seconds": 0, "fail": "l2" },
        "rollout": { "batch": 2, "max_failed": 0 },
    });
    let id = submit(&server, body);
    server.wait_job(id, Duration::from_secs(30));
    let browser = Browser::start("templates_rolling");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "failed", Duration::from_secs(10));
    browser.wait_for_text(
        "#error",
        "failure threshold: 1 of 6 hosts not ok, at most 0 allowed",
        Duration::from_secs(1),
    );
    browser.wait_for_text("#rollout", "batches of 2, stop once more than 0 not ok", Duration::from_secs(1));
    browser.wait_for_text("#batches li:first-child", "l[1-2] (2 hosts)", Duration::from_secs(5));
    browser.wait_for_text("#not-started", "Not started: l[3-6] (4 hosts, skipped)", Duration::from_secs(5));
    browser.wait_for_text("#groups section.group.skipped h3", "l[3-6] — 4 hosts: ↷ skipped", Duration::from_secs(5));
    browser.wait_for_text(
        "#groups section.group.skipped pre.stderr",
        "not started: failure threshold",
        Duration::from_secs(1),
    );
    browser.wait_for_text("#groups section.group.failed h3", "l2 — 1 host: ✗ failed, rc 3", Duration::from_secs(1));
    browser.wait_for_text("#progress", "6 of 6 reported (1 ok, 1 failed, 4 skipped)", Duration::from_secs(1));
    browser.screenshot("1-threshold");

    // Re-run on the hosts not ok: confirmed with exactly those hosts, then the new job's page.
    browser.click("#rerun-not-ok");
    browser.wait_for_text("#rerun-summary", "on 5 hosts", Duration::from_secs(2));
    browser.wait_for_text("#rerun-hosts", "l[2-6]", Duration::from_secs(1));
    browser.screenshot("2-rerun-confirm");
    browser.click("#rerun-go");
    wait_for("the re-run's page", Duration::from_secs(10), || !browser.url().ends_with(&format!("/jobs/{id}")));
    let rerun = job_on_page(&browser);
    browser.wait_for_text("#origin", &format!("re-run of job {id}"), Duration::from_secs(5));
    // l2 still fails in the re-run's first batch (l2, l3): the threshold skips l4…l6.
    browser.wait_for_text("#status", "failed", Duration::from_secs(30));
    browser.wait_for_text("#not-started", "l[4-6]", Duration::from_secs(5));
    browser.screenshot("3-rerun");
    let (_, job) = server.get(&format!("/api/jobs/{rerun}"));
    assert_eq!((job["rerun_of"].as_i64(), job["hosts"].clone()), (Some(id), json!(["l2", "l3", "l4", "l5", "l6"])));

    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#reruns", &format!("job {rerun}"), Duration::from_secs(5));
    let link = browser.eval("return document.querySelector('#reruns a').getAttribute('href')");
    assert_eq!(link, json!(format!("/jobs/{rerun}")));
}

#[test]
fn cancelled_and_skipped_hosts_look_different_from_each_other_and_from_failures() {
    let server = server();
    let body = json!({
        "module": 9008, "hosts": ["l1", "l2", "l3", "l4", "l5"], "backend": "local",
        "params": { "seconds": 0, "fail": "l1", "slow": "l2,l3", "slow_seconds": 6031 },
        "rollout": { "batch": 3 },
    });
    let id = submit(&server, body);
    let started = Instant::now();
    loop {
        let (_, job) = server.get(&format!("/api/jobs/{id}"));
        if job["results"].as_array().is_some_and(|r| r.iter().any(|r| r["host"] == "l1")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "l1 never finished: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    server.wait_job(id, Duration::from_secs(30));

    let browser = Browser::start("templates_statuses");
    browser.log_in(&server.base, "admin", &server.admin_password);
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "cancelled", Duration::from_secs(10));
    browser.wait_for_text(
        "#groups section.group.cancelled h3",
        "l[2-3] — 2 hosts: ⊘ cancelled",
        Duration::from_secs(5),
    );
    browser.wait_for_text("#groups section.group.skipped h3", "l[4-5] — 2 hosts: ↷ skipped", Duration::from_secs(5));
    browser.wait_for_text("#groups section.group.failed h3", "l1 — 1 host: ✗ failed", Duration::from_secs(5));
    browser.wait_for_text("#not-started", "Not started: l[4-5] (2 hosts, skipped)", Duration::from_secs(1));
    // Each status has its own look: border, background and the colour of its word.
    let looks = browser.eval(
        "return ['failed', 'cancelled', 'skipped'].map((s) => {
           const g = getComputedStyle(document.querySelector(`#groups section.group.${s}`));
           const b = getComputedStyle(document.querySelector(`#groups section.group.${s} .badge`));
           return [g.borderLeftColor + ' ' + g.borderLeftStyle, g.backgroundColor, b.color, b.backgroundColor].join(' | ');
         })",
    );
    let looks: Vec<String> = serde_json::from_value(looks).unwrap();
    assert!(looks[0] != looks[1] && looks[1] != looks[2] && looks[0] != looks[2], "{looks:?}");
    browser.eval("document.getElementById('groups').scrollIntoView(); return null");
    browser.screenshot("1-cancelled-and-skipped");
    browser.resize(390, 844);
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#groups section.group.skipped h3", "skipped", Duration::from_secs(5));
    assert_eq!(browser.eval("return window.innerWidth"), json!(390));
    fits_the_width(&browser);
    browser.screenshot("2-narrow");
}

#[test]
fn a_viewer_reads_saved_jobs_but_gets_no_controls() {
    let server = server();
    let spec = json!({ "name": "tier check", "module": 9008, "params": { "seconds": 0 }, "targets": { "tags": ["prod"] },
                       "rollout": { "batch": 1 }, "timeout_secs": 60 });
    let (status, body) = server.post("/api/templates", &spec);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let template = body["id"].as_i64().unwrap();
    let (status, body) = server.post(&format!("/api/templates/{template}/run"), &json!({}));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = body["id"].as_i64().unwrap();
    server.wait_job(job, Duration::from_secs(30));
    // Names and descriptions are anyone's text: shown as text, never as markup.
    let markup = json!({ "name": "<img src=x onerror=\"window.__xss=1\">", "description": "<b>bold</b>", "module": 9008,
                         "targets": { "hosts": ["<script>x</script>"] } });
    let (status, body) = server.post("/api/templates", &markup);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    add_user(&server, "vera", "viewer");

    let browser = Browser::start("templates_viewer");
    browser.log_in(&server.base, "vera", PASSWORD);
    browser.click("header.top a[href='/templates']");
    let row = "tr[data-template='tier check']";
    browser.wait_for_text(row, "Tags: prod", Duration::from_secs(5));
    browser.wait_for_text(row, "batches of 1, no failure threshold", Duration::from_secs(1));
    browser.wait_for_text(row, "60 s", Duration::from_secs(1));
    browser.wait_for_text("#templates", "<img src=x onerror=\"window.__xss=1\">", Duration::from_secs(1));
    browser.wait_for_text("#templates", "<b>bold</b>", Duration::from_secs(1));
    browser.wait_for_text("#templates", "Host: <script>x</script>", Duration::from_secs(1));
    assert!(!browser.exists("#templates img, #templates b, #templates script"), "text became elements");
    assert_eq!(browser.eval("return window.__xss === undefined"), json!(true));
    assert!(!browser.exists("#templates button"), "no run, edit or delete buttons");
    assert!(!browser.exists("#template-form") && !browser.exists("#editor"), "no form");
    assert_eq!(browser.eval("return document.querySelectorAll('#templates thead th').length"), json!(7));
    browser.screenshot("1-list");

    browser.goto(&format!("{}/templates?from={job}", server.base));
    browser.wait_for_text(row, "Tags: prod", Duration::from_secs(5));
    assert!(!browser.exists("#template-form"));
    assert_eq!(browser.text("#problem"), "");

    browser.goto(&format!("{}/jobs/{job}", server.base));
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(5));
    browser.wait_for_text("#origin", "saved job “tier check”", Duration::from_secs(5));
    browser.click("#origin a");
    browser.wait_for_text(".highlight", "tier check", Duration::from_secs(5));
    browser.goto(&format!("{}/jobs/{job}", server.base));
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(5));
    assert!(!browser.exists("#save-as-template") && !browser.exists("#rerun-all"), "no operator controls");
    let status = browser.eval(&format!(
        "return fetch('/api/session').then(r => r.json()).then(s => fetch('/api/templates/{template}/run', \
         {{ method: 'POST', headers: {{ 'X-CSRF-Token': s.csrf_token }} }})).then(r => r.status)"
    ));
    assert_eq!(status, json!(403));
}

#[test]
fn save_as_template_fills_the_form_from_the_job_and_the_saved_job_can_be_edited_and_deleted() {
    let server = server();
    let body = json!({
        "module": 9008, "hosts": ["l1", "l3"], "backend": "local", "params": { "seconds": 0, "fail": "l3" },
        "rollout": { "batch": 1, "max_failed": "50%", "pause_secs": 1 },
    });
    let id = submit(&server, body);
    server.wait_job(id, Duration::from_secs(30));
    add_user(&server, "otto", "operator");
    let browser = Browser::start("templates_from_job");
    browser.log_in(&server.base, "otto", PASSWORD);
    browser.goto(&format!("{}/jobs/{id}", server.base));
    browser.wait_for_text("#status", "failed", Duration::from_secs(10));
    browser.click("#save-as-template");
    wait_for("the saved jobs page", Duration::from_secs(10), || {
        browser.url().ends_with(&format!("/templates?from={id}"))
    });
    browser.wait_for_text("#form-title", &format!("New saved job from job {id}"), Duration::from_secs(5));
    let form = browser.eval(
        "const v = (id) => document.getElementById(id).value;
         return { module: v('t-module'), seconds: v('param-seconds'), fail: v('param-fail'), backend: v('t-backend'),
                  batch: v('t-batch'), max_failed: v('t-max-failed'), pause: v('t-pause'), name: v('t-name'),
                  description: v('t-description'),
                  hosts: [...document.querySelectorAll('#t-hosts input:checked')].map((b) => b.value),
                  others: document.querySelectorAll('#t-functions input:checked, #t-apps input:checked, #t-tags input:checked').length }",
    );
    assert_eq!(
        form,
        json!({ "module": "9008", "seconds": "0", "fail": "l3", "backend": "local", "batch": "1", "max_failed": "50%",
                "pause": "1", "name": "", "description": format!("Saved from job {id}."), "hosts": ["l1", "l3"], "others": 0 })
    );
    browser.wait_for_text("#t-matches", "Matches 2 hosts now: l[1,3].", Duration::from_secs(1));
    browser.screenshot("1-prefilled");
    browser.fill("#t-name", "retry l3");
    browser.click("#save");
    browser.wait_for_text("#form-result", "Saved “retry l3”.", Duration::from_secs(5));
    assert!(browser.url().ends_with("/templates"), "a reload must not fill the form again: {}", browser.url());
    let (_, list) = server.get("/api/templates");
    let saved = &list[0];
    assert_eq!(saved["targets"]["hosts"], json!(["l1", "l3"]));
    assert_eq!(saved["rollout"], json!({ "batch": 1, "max_failed": "50%", "pause_secs": 1 }));
    assert_eq!((saved["params"]["fail"].as_str(), saved["backend"].as_str()), (Some("l3"), Some("local")), "{saved}");
    let row = "tr[data-template='retry l3']";
    browser.wait_for_text(row, "2 hosts: l[1,3]", Duration::from_secs(5));

    // Edit: the form takes the saved definition; the save replaces it.
    browser.click(&format!("{row} button.edit"));
    browser.wait_for_text("#form-title", "Edit “retry l3”", Duration::from_secs(2));
    assert_eq!(browser.eval("return document.getElementById('t-max-failed').value"), json!("50%"));
    browser.fill("#t-description", " Edited.");
    browser.click("#save");
    browser.wait_for_text(row, "Edited.", Duration::from_secs(5));
    let (_, list) = server.get("/api/templates");
    assert_eq!(list.as_array().unwrap().len(), 1, "edited, not added: {list}");

    // A second one with the same name: the 409 is shown beside the name.
    browser.fill("#t-name", "retry l3");
    choose(&browser, "t-module", "9008");
    browser.click("#t-hosts input[value='l1']");
    browser.click("#save");
    browser.wait_for_text("#err-name", "exists already", Duration::from_secs(5));
    browser.screenshot("2-name-taken");

    // At phone width the list is a stack of cards and the form fits.
    browser.resize(390, 844);
    browser.goto(&format!("{}/templates", server.base));
    browser.wait_for_text(row, "2 hosts: l[1,3]", Duration::from_secs(5));
    browser.find("#t-module option[value='9008']");
    assert_eq!(browser.eval("return window.innerWidth"), json!(390));
    fits_the_width(&browser);
    browser.screenshot("3-narrow");
    browser.eval("document.getElementById('editor').scrollIntoView(); return null");
    browser.screenshot("4-narrow-form");
    browser.resize(1280, 900);

    // Delete, after the browser's confirmation.
    browser.eval("window.confirm = () => true; return null");
    browser.click(&format!("{row} button.delete"));
    browser.wait_for_text("#empty", "No saved jobs yet.", Duration::from_secs(5));
    let (_, list) = server.get("/api/templates");
    assert_eq!(list, json!([]));
}

/// The newest fire's slot (ms) of schedule `id` and how many fires it has, through the API.
fn newest_fire(server: &Server, id: i64) -> (Option<i64>, usize) {
    let (status, list) = server.get(&format!("/api/schedules/{id}/fires?limit=1000"));
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    (list.first().and_then(|f| f["slot"].as_i64()), list.len())
}

/// The slot the browser shows first (newest) in a schedule's fires.
fn newest_shown(browser: &Browser, schedule: &str) -> Value {
    browser.eval(&format!(
        "const s = document.querySelector({}); return s ? s.textContent : null",
        json!(format!("{schedule} .fires li:first-child .slot"))
    ))
}

/// `ms` as the console writes times (`utc()` in console.js).
fn utc_text(browser: &Browser, ms: i64) -> Value {
    browser.eval(&format!("return new Date({ms}).toISOString().slice(0, 19).replace('T', ' ') + ' UTC'"))
}

#[test]
fn an_operator_schedules_a_saved_job_sees_it_fire_and_pauses_it_and_a_viewer_only_reads_it() {
    let server = server();
    let spec = json!({ "name": "tick", "module": 9008, "params": { "seconds": 0 }, "targets": { "hosts": ["l1"] },
                       "backend": "local" });
    let (status, body) = server.post("/api/templates", &spec);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let template = body["id"].as_i64().unwrap();
    add_user(&server, "otto", "operator");
    add_user(&server, "vera", "viewer");

    let browser = Browser::start("templates_schedules");
    browser.log_in(&server.base, "otto", PASSWORD);
    browser.goto(&format!("{}/templates", server.base));
    let row = "tr[data-template='tick']";
    let box_ = format!("#schedules-{template}");
    browser.wait_for_text(row, "Host: l1", Duration::from_secs(5));
    assert_eq!(
        browser.eval(&format!("return document.querySelector('{box_}').hidden")),
        json!(true),
        "no schedule yet"
    );

    // The form opens under the saved job, the browser's own time zone filled in and common ones offered.
    browser.click(&format!("{row} button.add-schedule"));
    browser.wait_for_text("#s-title", "Add a schedule to “tick”", Duration::from_secs(2));
    let zone = browser.eval(
        "const i = document.getElementById('s-timezone');
         const offered = [...i.list.options].map((o) => o.value);
         return [i.value, Intl.DateTimeFormat().resolvedOptions().timeZone, offered.includes('Europe/Paris'),
                 offered.length > 20, document.getElementById('schedule-editor').closest('tr').id]",
    );
    assert_eq!(zone[0], zone[1], "the browser's zone by default: {zone}");
    assert_eq!(zone.as_array().unwrap()[2..], [json!(true), json!(true), json!(format!("schedules-{template}"))]);
    browser.wait_for_text("#s-cron-hint", "5 fields: minute hour day month weekday", Duration::from_secs(1));
    browser.fill("#s-name", "every 2 s");
    browser.fill("#s-cron", "*/2 * * * * *");
    set(&browser, "s-timezone", "UTC");
    browser.click("#s-save");
    browser.wait_for_text(&box_, "every 2 s", Duration::from_secs(5));
    let (_, list) = server.get("/api/schedules");
    let id = list[0]["id"].as_i64().unwrap();
    assert_eq!((list[0]["template"].as_i64(), list[0]["enabled"].as_bool()), (Some(template), Some(true)), "{list}");
    let schedule = format!("#schedule-{id}");
    browser.wait_for_text(&format!("{schedule} .timing"), "*/2 * * * * * UTC", Duration::from_secs(1));
    browser.wait_for_text(&format!("{schedule} .state"), "enabled", Duration::from_secs(1));
    browser.wait_for_text(&format!("{schedule} .rules"), "overlap: skip", Duration::from_secs(1));
    assert!(browser.exists("#schedule-editor[hidden]"), "the form closes once saved");

    // The next 5 fire times, 2 s apart, in UTC.
    let next: Vec<String> = serde_json::from_value(
        browser
            .eval(&format!("return [...document.querySelectorAll('{schedule} .next li')].map((li) => li.textContent)")),
    )
    .unwrap();
    assert_eq!(next.len(), 5, "{next:?}");
    let seconds: Vec<u32> = next
        .iter()
        .map(|t| {
            assert!(t.len() == 23 && t.ends_with(" UTC"), "{t:?}");
            t[17..19].parse().unwrap()
        })
        .collect();
    assert!(seconds.windows(2).all(|w| (w[0] + 2) % 60 == w[1]), "2 s apart: {next:?}");

    // A fire shows up by itself, as the word "fired" in green, with a link to its job.
    let took = browser.wait_for_text(&format!("{schedule} .fires"), "fired", Duration::from_secs(10));
    eprintln!("the first fire showed after {took:?}");
    let fire = browser.eval(&format!(
        "const li = [...document.querySelectorAll('{schedule} .fires li')].find((l) => l.querySelector('.badge.fired'));
         return [li.querySelector('a').getAttribute('href'), getComputedStyle(li.querySelector('.badge')).color]"
    ));
    assert_eq!(fire[1], json!("rgb(28, 124, 60)"), "{fire}");
    let href = fire[0].as_str().unwrap().to_owned();
    let job: i64 = href.strip_prefix("/jobs/").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{href}"));
    let (_, shown) = server.get(&format!("/api/jobs/{job}"));
    assert_eq!(shown["created_by"], json!("schedule:every 2 s"), "{shown}");
    browser.screenshot("1-fired");
    browser.click(&format!("{schedule} .fires a[href='{href}']"));
    wait_for("the job page", Duration::from_secs(10), || browser.url().ends_with(&href));
    browser.wait_for_text("#status", "succeeded", Duration::from_secs(30));
    browser.wait_for_text("#origin", "saved job “tick”", Duration::from_secs(5));

    // Pause: no next time, no new fire (one claimed just before the pause may still land: its slot is older).
    browser.goto(&format!("{}/templates", server.base));
    browser.wait_for_text(&format!("{schedule} button.toggle"), "Pause", Duration::from_secs(5));
    browser.click(&format!("{schedule} button.toggle"));
    browser.wait_for_text(&format!("{schedule} .next"), "paused", Duration::from_secs(5));
    browser.wait_for_text(&format!("{schedule} .state"), "paused", Duration::from_secs(1));
    browser.wait_for_text(&format!("{schedule} button.toggle"), "Resume", Duration::from_secs(1));
    assert!(!browser.exists(&format!("{schedule} .next li")));
    let (_, paused) = server.get(&format!("/api/schedules/{id}"));
    assert_eq!((paused["enabled"].as_bool(), paused["next"].clone()), (Some(false), json!([])), "{paused}");
    let paused_at = paused["updated_at"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (newest, count) = newest_fire(&server, id);
    let newest = newest.expect("it fired before the pause");
    assert!(newest <= paused_at, "a slot after the pause fired: {newest} > {paused_at}");
    let newest_text = utc_text(&browser, newest);
    wait_for("the page to show the last fire", Duration::from_secs(10), || {
        newest_shown(&browser, &schedule) == newest_text
    });
    std::thread::sleep(Duration::from_millis(4500)); // two slots and more than one refresh of the page
    assert_eq!(newest_fire(&server, id), (Some(newest), count), "no fire while paused");
    assert_eq!(newest_shown(&browser, &schedule), newest_text);
    browser.wait_for_text(&format!("{schedule} .next"), "paused", Duration::from_secs(1));
    browser.screenshot("2-paused");

    // A bad cron: the server's message under the cron input, nothing saved.
    browser.click(&format!("{row} button.add-schedule"));
    browser.wait_for_text("#s-title", "Add a schedule to “tick”", Duration::from_secs(2));
    assert_eq!(browser.eval("return document.getElementById('s-name').value"), json!(""), "a fresh form");
    browser.fill("#s-name", "bad");
    browser.fill("#s-cron", "61 * * * *");
    browser.click("#s-save");
    browser.wait_for_text("#err-s-cron", "61", Duration::from_secs(5));
    let beside = browser.eval(
        "const i = document.getElementById('s-cron'), e = document.getElementById('err-s-cron');
         return [e.parentElement === i.parentElement, i.getAttribute('aria-invalid'), document.activeElement.id,
                 e.textContent.startsWith('cron: ')]",
    );
    assert_eq!(beside, json!([true, "true", "s-cron", false]));
    let errors = field_errors(&browser);
    assert_eq!(errors.as_object().unwrap().keys().collect::<Vec<_>>(), ["err-s-cron"], "{errors}");
    assert_eq!(browser.text("#s-problem"), "");
    browser.screenshot("3-bad-cron");
    let (_, list) = server.get("/api/schedules");
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing saved: {list}");
    browser.click("#s-cancel");
    assert!(browser.exists("#schedule-editor[hidden]"));

    // Edit: the form takes the schedule; the save keeps it paused.
    browser.click(&format!("{schedule} button.edit"));
    browser.wait_for_text("#s-title", "Edit the schedule “every 2 s”", Duration::from_secs(2));
    let form = browser.eval(
        "const v = (id) => document.getElementById(id).value;
         return [v('s-name'), v('s-cron'), v('s-timezone'), v('s-overlap'), v('s-catch-up')]",
    );
    assert_eq!(form, json!(["every 2 s", "*/2 * * * * *", "UTC", "skip", "0"]));
    choose(&browser, "s-overlap", "queue");
    set(&browser, "s-timezone", "Europe/Paris");
    browser.click("#s-save");
    browser.wait_for_text(&format!("{schedule} .rules"), "overlap: queue", Duration::from_secs(5));
    browser.wait_for_text(&format!("{schedule} .timing"), "*/2 * * * * * Europe/Paris", Duration::from_secs(1));
    browser.wait_for_text(&format!("{schedule} .next"), "paused", Duration::from_secs(1));
    let (_, edited) = server.get(&format!("/api/schedules/{id}"));
    assert_eq!((edited["overlap"].as_str(), edited["enabled"].as_bool()), (Some("queue"), Some(false)), "{edited}");

    // The saved job cannot go while it has a schedule: the server's reason, under it.
    browser.eval("window.confirm = () => true; return null");
    browser.click(&format!("{row} button.delete"));
    browser.wait_for_text(&format!("{box_} .problem"), "has schedules", Duration::from_secs(5));

    // At phone width: the schedules continue the saved job's card, and the form fits.
    browser.resize(390, 844);
    browser.goto(&format!("{}/templates", server.base));
    browser.wait_for_text(&format!("{schedule} .fires"), "fired", Duration::from_secs(5));
    assert_eq!(browser.eval("return window.innerWidth"), json!(390));
    fits_the_width(&browser);
    browser.eval(&format!("document.querySelector(\"{row}\").scrollIntoView(); return null"));
    browser.screenshot("4-narrow");
    browser.click(&format!("{row} button.add-schedule"));
    browser.wait_for_text("#s-title", "Add a schedule", Duration::from_secs(2));
    browser.fill("#s-name", "bad");
    browser.fill("#s-cron", "61 * * * *");
    browser.click("#s-save");
    browser.wait_for_text("#err-s-cron", "61", Duration::from_secs(5));
    fits_the_width(&browser);
    browser.eval("document.getElementById('schedule-editor').scrollIntoView(); return null");
    browser.screenshot("5-narrow-form");
    browser.resize(1280, 900);

    // A viewer sees the schedule and its fires, and no control.
    {
        let viewer = Browser::start("templates_schedules_viewer");
        viewer.log_in(&server.base, "vera", PASSWORD);
        viewer.goto(&format!("{}/templates", server.base));
        viewer.wait_for_text(&format!("{schedule} .fires"), "fired", Duration::from_secs(5));
        viewer.wait_for_text(&format!("{schedule} .timing"), "*/2 * * * * * Europe/Paris", Duration::from_secs(1));
        viewer.wait_for_text(&format!("{schedule} .next"), "paused", Duration::from_secs(1));
        assert!(viewer.exists(&format!("{schedule} .fires a[href='{href}']")), "the job links are there");
        assert!(!viewer.exists("#templates button"), "no add, pause, edit or delete");
        assert!(!viewer.exists("#schedule-editor") && !viewer.exists("#schedule-form"), "no form");
        viewer.screenshot("1-viewer");
        viewer.resize(390, 844);
        viewer.goto(&format!("{}/templates", server.base));
        viewer.wait_for_text(&format!("{schedule} .fires"), "fired", Duration::from_secs(5));
        fits_the_width(&viewer);
        viewer.eval(&format!("document.querySelector('{schedule}').scrollIntoView(); return null"));
        viewer.screenshot("2-viewer-narrow");
        let status = viewer.eval(&format!(
            "return fetch('/api/session').then(r => r.json()).then(s => fetch('/api/schedules/{id}', \
             {{ method: 'DELETE', headers: {{ 'X-CSRF-Token': s.csrf_token }} }})).then(r => r.status)"
        ));
        assert_eq!(status, json!(403));
    }

    // Resume: fire times again. Delete, after the confirmation: then the saved job can go.
    browser.goto(&format!("{}/templates", server.base));
    browser.wait_for_text(&format!("{schedule} button.toggle"), "Resume", Duration::from_secs(5));
    browser.click(&format!("{schedule} button.toggle"));
    browser.wait_for_text(&format!("{schedule} .state"), "enabled", Duration::from_secs(5));
    let shown = browser.eval(&format!("return document.querySelectorAll('{schedule} .next li').length"));
    assert_eq!(shown, json!(5));
    browser.eval("window.confirm = () => true; return null");
    browser.click(&format!("{schedule} button.delete"));
    wait_for("the schedule to go", Duration::from_secs(5), || !browser.exists(&schedule));
    let (_, list) = server.get("/api/schedules");
    assert_eq!(list, json!([]));
    browser.click(&format!("{row} button.delete"));
    browser.wait_for_text("#empty", "No saved jobs yet.", Duration::from_secs(5));
}
