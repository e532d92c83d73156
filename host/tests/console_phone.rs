//! The console on a phone (issue 15, item 5): at 390×844 no page scrolls sideways, the menu folds behind a
//! button, wide tables scroll in their own box or turn into cards. Every page, as admin and as viewer; screenshots
//! at 1280×800 and 390×844 under target/screenshots/phone_*.

mod common;

use std::time::Duration;

use common::{
    browser::Browser,
    console::{open, pages, seeded, PASSWORD, VIEWER},
};
use serde_json::json;

/// Every page at both sizes for one user: at 390 px the page is no wider than the window.
fn walk(who: &str, password: &str, can_run: bool) {
    let seeded = seeded();
    let base = &seeded.server.base;
    let browser = Browser::start(&format!("phone_{who}"));
    browser.log_in(base, who, if who == "admin" { &seeded.server.admin_password } else { password });
    let mut too_wide = Vec::new();
    for page in pages(seeded.job).iter().filter(|p| can_run || !p.operators_only) {
        browser.resize(1280, 800);
        open(&browser, base, page);
        browser.screenshot(&format!("{}-1280", page.name));
        browser.resize(390, 844);
        open(&browser, base, page);
        let (scroll, inner) = browser.widths();
        assert_eq!(inner, 390, "the layout viewport is the phone's width");
        println!("{who} {}: scrollWidth {scroll} at {inner} px", page.name);
        if scroll > 390 {
            too_wide.push(format!("{} ({scroll} px)", page.name));
        }
        browser.screenshot(&format!("{}-390", page.name));
    }
    // Logged out, the login page too.
    browser.eval("document.querySelector('header.top form').submit(); return null");
    browser.find("#password");
    let (scroll, _) = browser.widths();
    browser.screenshot("login-390");
    if scroll > 390 {
        too_wide.push(format!("login ({scroll} px)"));
    }
    assert!(too_wide.is_empty(), "pages wider than 390 px for {who}: {too_wide:?}");
}

#[test]
fn no_page_scrolls_sideways_at_390_px_for_an_admin() {
    walk("admin", "", true);
}

#[test]
fn no_page_scrolls_sideways_at_390_px_for_a_viewer() {
    walk(VIEWER, PASSWORD, false);
}

/// Whether `css` is rendered (not `display: none` anywhere up its tree).
fn shown(browser: &Browser, css: &str) -> bool {
    browser
        .eval(&format!("const e = document.querySelector({}); return !!e && e.getClientRects().length > 0", json!(css)))
        == json!(true)
}

#[test]
fn the_menu_folds_behind_a_button_on_a_phone_and_wide_tables_stay_in_their_box() {
    let seeded = seeded();
    let base = &seeded.server.base;
    let browser = Browser::start("phone_menu");
    browser.log_in(base, "admin", &seeded.server.admin_password);
    browser.resize(1280, 800);
    browser.goto(&format!("{base}/audit"));
    browser.find("#events tbody tr");
    assert!(shown(&browser, "#main-nav") && !shown(&browser, "#menu-toggle"), "on a desktop the menu is open");

    browser.resize(390, 844);
    browser.goto(&format!("{base}/audit"));
    browser.find("#events tbody tr");
    assert!(!shown(&browser, "#main-nav"), "on a phone the menu is folded");
    assert!(!shown(&browser, "header.top .who"), "and so is the log-out form");
    assert_eq!(
        browser.eval("return document.getElementById('menu-toggle').getAttribute('aria-expanded')"),
        json!("false")
    );
    let header = browser.eval("return document.querySelector('header.top').getBoundingClientRect().height");
    assert!(header.as_f64().unwrap() < 80.0, "the folded header is one line: {header}");
    browser.screenshot("1-folded");

    browser.click("#menu-toggle");
    assert!(shown(&browser, "#main-nav") && shown(&browser, "header.top .who button"), "the button opens the menu");
    assert_eq!(
        browser.eval("return document.getElementById('menu-toggle').getAttribute('aria-expanded')"),
        json!("true")
    );
    // Every link and the log-out button are inside the window, none off screen to the right.
    let outside = browser.eval(
        "return [...document.querySelectorAll('#main-nav a, header.top .who button')]
           .filter((e) => { const r = e.getBoundingClientRect(); return r.left < 0 || r.right > window.innerWidth; })
           .map((e) => e.textContent)",
    );
    assert_eq!(outside, json!([]), "menu entries off screen");
    let (scroll, _) = browser.widths();
    assert!(scroll <= 390, "the open menu fits: {scroll}");
    browser.screenshot("2-open");
    browser.click("#main-nav a[href='/jobs']");
    browser.find("#history tbody tr[data-job]");
    assert!(!shown(&browser, "#main-nav"), "a new page starts with the menu folded");

    // The history becomes cards, each line labelled; the audit events too.
    let display = browser.eval("return getComputedStyle(document.querySelector('#history tbody tr')).display");
    assert_eq!(display, json!("block"), "a job is a card on a phone");
    let label = browser.eval(
        "return getComputedStyle(document.querySelector('#history tbody td[data-label=Status]'), '::before').content",
    );
    assert_eq!(label, json!("\"Status\""));
    browser.screenshot("3-jobs-as-cards");
    browser.goto(&format!("{base}/audit"));
    browser.wait_for_text("#events tbody", "rm -rf /", Duration::from_secs(5));
    assert_eq!(
        browser.eval("return getComputedStyle(document.querySelector('#events tbody tr')).display"),
        json!("block")
    );
    // The module table scrolls inside its own box: the box is as wide as the window, the table wider.
    browser.goto(&format!("{base}/modules"));
    browser.find("#modules tbody tr");
    let boxed = browser.eval(
        "const box = document.querySelector('#modules').parentElement;
         return [box.className, getComputedStyle(box).overflowX, box.clientWidth <= window.innerWidth]",
    );
    assert_eq!(boxed, json!(["table-box", "auto", true]));
    let (scroll, _) = browser.widths();
    assert!(scroll <= 390, "modules page: {scroll}");
    browser.screenshot("4-modules-boxed");
}
