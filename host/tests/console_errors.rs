//! Errors in the console (issue 15, item 4): every page answers errors in the console's layout with the right
//! status (404, 403 naming the role needed, 400), never raw JSON; a form's error sits beside its field and goes at
//! the next success; revoking a token and deleting a host are confirmed first. Screenshots at 1280×800 and
//! 390×844 under target/screenshots/errors_*.

mod common;

use std::time::Duration;

use common::{browser::Browser, cli_with_input, Server};
use serde_json::{json, Value};

const PASSWORD: &str = "console-password-1";

/// Status and content type of a GET made by the page itself (the session cookie goes with it).
fn answer(browser: &Browser, path: &str) -> Value {
    browser.eval(&format!(
        "return fetch({}).then((r) => [r.status, (r.headers.get('content-type') || '').split(';')[0]])",
        json!(path)
    ))
}

/// Opens `path` and checks it is an error page in the layout, with the menu when someone is logged in.
fn error_page(browser: &Browser, base: &str, path: &str, status: u16, title: &str, logged_in: bool) -> String {
    assert_eq!(answer(browser, path), json!([status, "text/html"]), "{path}");
    browser.goto(&format!("{base}{path}"));
    assert_eq!(browser.text("h1"), title, "{path}");
    assert_eq!(browser.exists("header.top nav"), logged_in, "{path}: the menu is there for someone logged in");
    let body = browser.text("body");
    assert!(!body.contains("{\"error\""), "{path} shows raw JSON: {body}");
    browser.text("#error-message")
}

#[test]
fn console_pages_answer_errors_as_pages_in_the_layout() {
    let server = Server::start();
    let out = cli_with_input(&server, &["user", "add", "vera", "--role", "viewer"], Some(&format!("{PASSWORD}\n")));
    assert!(out.status.success(), "{out:?}");
    let browser = Browser::start("errors_pages");
    browser.log_in(&server.base, "admin", &server.admin_password);
    let base = &server.base;
    for (width, height) in [(1280, 800), (390, 844)] {
        browser.resize(width, height);
        let missing = error_page(&browser, base, "/jobs/999999", 404, "Not found", true);
        assert_eq!(missing, "job 999999 not found");
        browser.screenshot(&format!("1-job-404-{width}"));
        let nowhere = error_page(&browser, base, "/nothing/here", 404, "Not found", true);
        assert_eq!(nowhere, "There is no page at /nothing/here.");
        let bad = error_page(&browser, base, "/jobs/seven", 400, "Bad request", true);
        assert_eq!(bad, "A job id is a number, such as /jobs/7.");
        browser.screenshot(&format!("2-job-400-{width}"));
    }
    // The API keeps answering in JSON.
    assert_eq!(answer(&browser, "/api/nothing"), json!([404, "application/json"]));
    assert_eq!(answer(&browser, "/api/jobs/999999"), json!([404, "application/json"]));

    // A viewer on an operator's page: a 403 that names the role needed and the viewer's own.
    let viewer = Browser::start("errors_viewer");
    viewer.log_in(base, "vera", PASSWORD);
    for (width, height) in [(1280, 800), (390, 844)] {
        viewer.resize(width, height);
        let refused = error_page(&viewer, base, "/run", 403, "Not allowed", true);
        assert_eq!(refused, "This page needs the operator role.");
        assert_eq!(viewer.text("#error-hint"), "You are logged in as vera with the viewer role.");
        let (scroll, inner) = viewer.widths();
        assert!(scroll <= inner, "{scroll} > {inner}");
        viewer.screenshot(&format!("3-run-403-{width}"));
    }

    // Logged out: an unknown page is a 404 page without the menu; a real page still goes to the login.
    let stranger = Browser::start("errors_stranger");
    stranger.goto(&format!("{base}/login"));
    error_page(&stranger, base, "/nothing/here", 404, "Not found", false);
    stranger.goto(&format!("{base}/jobs/999999"));
    assert!(stranger.url().ends_with("/login"), "{}", stranger.url());
}

/// Waits until `css` exists no more.
fn gone(browser: &Browser, css: &str) {
    let started = std::time::Instant::now();
    while browser.exists(css) {
        assert!(started.elapsed() < Duration::from_secs(5), "{css} is still there");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn form_errors_sit_beside_their_field_until_the_next_success_and_deletions_are_confirmed() {
    let server = Server::start();
    let base = &server.base;
    let browser = Browser::start("errors_forms");
    browser.log_in(base, "admin", &server.admin_password);

    // The host form: a bad name is refused beside the name, and the next save clears it.
    browser.goto(&format!("{base}/inventory"));
    browser.fill("#h-name", "bad name!");
    browser.fill("#h-ip", "192.0.2.20");
    browser.click("#save-host");
    browser.wait_for_text("#err-h-name", "must be 1-255 letters", Duration::from_secs(5));
    assert_eq!(browser.eval("return document.getElementById('h-name').getAttribute('aria-invalid')"), json!("true"));
    assert_eq!(browser.text("#problem"), "", "the error is beside the field, not at the top");
    browser.screenshot("1-field-error-1280");
    browser.eval("document.getElementById('h-name').value = 'web9'; return null");
    browser.click("#save-host");
    browser.wait_for_text("#tree", "web9 (192.0.2.20)", Duration::from_secs(5));
    assert_eq!(browser.text("#err-h-name"), "", "cleared by the next success");
    assert!(!browser.exists("#h-name[aria-invalid]"));

    // Deleting a host asks first; "Keep" keeps it.
    browser.click("li[data-host='web9'] button.danger");
    browser.wait_for_text("li[data-host='web9'] .ask", "Delete web9?", Duration::from_secs(2));
    browser.screenshot("2-delete-asked-1280");
    browser.click("li[data-host='web9'] .ask button.secondary");
    assert!(!browser.exists("li[data-host='web9'] .ask"));
    assert_eq!(server.get("/api/hosts").1.as_array().unwrap().len(), 2, "still there");
    browser.click("li[data-host='web9'] button.danger");
    browser.click("li[data-host='web9'] .ask button.danger");
    gone(&browser, "li[data-host='web9']");
    assert_eq!(server.get("/api/hosts").1.as_array().unwrap().len(), 1);

    // The alert rule form: a bad pattern beside the pattern, cleared by the next rule added.
    browser.goto(&format!("{base}/audit"));
    browser.fill("#r-name", "broken");
    browser.fill("#r-pattern", "(");
    browser.click("#add-rule");
    browser.find("#err-r-pattern");
    browser.wait_for_text("#err-r-pattern", "unclosed group", Duration::from_secs(5));
    browser.resize(390, 844);
    browser.screenshot("3-rule-error-390");
    browser.resize(1280, 800);
    browser.eval("document.getElementById('r-pattern').value = 'shutdown'; return null");
    browser.click("#add-rule");
    browser.wait_for_text("#rules tbody", "broken", Duration::from_secs(5));
    assert_eq!(browser.text("#err-r-pattern"), "");

    // The run form: what is missing is said beside its input, and goes once the form is right.
    browser.goto(&format!("{base}/run"));
    browser.find("#host-list input[value='localhost']");
    browser.find("#module option[value='1003']");
    browser.eval("const s = document.getElementById('module'); s.value = '1003'; s.dispatchEvent(new Event('change')); return null");
    browser.click("#review");
    browser.wait_for_text("#err-host-filter", "Choose at least one host.", Duration::from_secs(2));
    assert_eq!(browser.text("#problem"), "");
    browser.screenshot("5-run-field-error-1280");
    browser.click("#host-list input[value='localhost']");
    browser.click("#review");
    browser.wait_for_text("#summary", "on 1 host", Duration::from_secs(5));
    assert_eq!(browser.text("#err-host-filter"), "", "cleared by the next success");

    // Revoking a token asks first, and the token works until it is confirmed.
    browser.goto(&format!("{base}/users"));
    browser.fill("#t-name", "ci");
    browser.click("#create-token");
    browser.wait_for_text("#tokens tbody", "ci", Duration::from_secs(5));
    let token = browser.text("#new-token");
    let works = |token: &str| {
        let check = server.client.get(format!("{base}/api/session")).bearer_auth(token);
        server.send(check).0.is_success()
    };
    browser.click("tr[data-token='ci'] button.danger");
    browser.wait_for_text("tr[data-token='ci'] .ask", "Revoke ci?", Duration::from_secs(2));
    assert!(works(&token), "asking revokes nothing");
    browser.resize(390, 844);
    browser.screenshot("4-revoke-asked-390");
    browser.resize(1280, 800);
    browser.click("tr[data-token='ci'] .ask button.danger");
    gone(&browser, "tr[data-token='ci']");
    assert!(!works(&token), "revoked once confirmed");
}
