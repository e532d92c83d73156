//! Accessibility of the console (issue 15, item 6): axe-core (npm, installed by testenv's chromium piece) run
//! inside Chromium on every page, as admin and as viewer, at 1280×800 and 390×844, with no violation of impact
//! "serious" or "critical"; then what axe does not check: a visible focus outline, `aria-current`, the skip link,
//! 3:1 control borders and alert rows marked by more than colour.

mod common;

use common::{
    browser::Browser,
    console::{open, pages, seeded, PASSWORD, VIEWER},
};
use serde_json::json;

fn axe_everywhere(who: &str, can_run: bool) {
    let seeded = seeded();
    let base = &seeded.server.base;
    let browser = Browser::start(&format!("a11y_{who}"));
    let password = if who == "admin" { seeded.server.admin_password.clone() } else { PASSWORD.to_owned() };
    browser.log_in(base, who, &password);
    let mut bad = Vec::new();
    for page in pages(seeded.job).iter().filter(|p| can_run || !p.operators_only) {
        for (width, height) in [(1280, 800), (390, 844)] {
            browser.resize(width, height);
            open(&browser, base, page);
            let label = format!("{} {width}px", page.name);
            bad.extend(browser.axe(&label).into_iter().map(|v| format!("{label}: {v}")));
            browser.screenshot(&format!("{}-{width}", page.name));
        }
    }
    browser.eval("document.querySelector('header.top form').submit(); return null");
    browser.find("#password");
    bad.extend(browser.axe("login").into_iter().map(|v| format!("login: {v}")));
    assert!(bad.is_empty(), "serious or critical axe-core violations for {who}:\n{}", bad.join("\n"));
}

#[test]
fn axe_finds_nothing_serious_on_any_page_for_an_admin() {
    axe_everywhere("admin", true);
}

#[test]
fn axe_finds_nothing_serious_on_any_page_for_a_viewer() {
    axe_everywhere(VIEWER, false);
}

/// WCAG's contrast ratio of two `rgb(…)` colours, computed in the page (the same formula axe uses for text).
const CONTRAST: &str = "
  const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
    if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };";

#[test]
fn focus_current_page_skip_link_borders_and_alert_rows() {
    let seeded = seeded();
    let base = &seeded.server.base;
    let browser = Browser::start("a11y_details");
    browser.log_in(base, "admin", &seeded.server.admin_password);

    // The current page's link says so, also on a job page (under Jobs); no other link does.
    browser.goto(&format!("{base}/jobs/{}", seeded.job));
    browser.find("#host-table tbody tr");
    let current =
        browser.eval("return [...document.querySelectorAll('[aria-current=page]')].map((a) => a.textContent)");
    assert_eq!(current, json!(["Jobs"]));

    // The skip link is the first thing Tab reaches, shows when focused, and leads to the main content.
    let first = browser.eval(
        "const f = [...document.querySelectorAll('a[href], button, input, select, textarea')][0];
         f.focus(); const r = f.getBoundingClientRect();
         return [f.className, f.getAttribute('href'), r.left >= 0 && r.top >= 0 && r.width > 0]",
    );
    assert_eq!(first, json!(["skip", "#main", true]));
    browser.screenshot("1-skip-link-focused");
    browser.click("a.skip");
    assert_eq!(browser.eval("return document.activeElement.id"), json!("main"));

    // Every control gets a visible outline when focused from the keyboard: on dark buttons and on inputs.
    browser.goto(&format!("{base}/run"));
    browser.find("#host-list input");
    let outlines = browser.eval(
        "document.querySelector('#review').focus();
         const button = getComputedStyle(document.querySelector('#review'), null);
         const b = [button.outlineStyle, parseFloat(button.outlineWidth), button.outlineColor];
         document.querySelector('#host-filter').focus();
         const input = getComputedStyle(document.querySelector('#host-filter'));
         return [b, [input.outlineStyle, parseFloat(input.outlineWidth), input.outlineColor]]",
    );
    for outline in outlines.as_array().unwrap() {
        assert_eq!(outline[0], json!("solid"), "{outlines}");
        assert!(outline[1].as_f64().unwrap() >= 2.0, "{outlines}");
    }
    // Focus set by a script does not count as keyboard focus everywhere: :focus-visible is asked directly.
    let ring = browser.eval(&format!(
        "{CONTRAST} const b = document.querySelector('#review'); b.focus();
         return ratio(getComputedStyle(b).outlineColor, background(b.parentElement))"
    ));
    assert!(ring.as_f64().unwrap() >= 3.0, "the focus ring stands out from the page: {ring}");
    browser.screenshot("2-focus");

    // Every visible input, select and textarea, and the light buttons: borders at 3:1 against what is around them.
    let mut weak = Vec::new();
    for path in ["/run", "/inventory", "/users", "/audit", "/jobs"] {
        browser.goto(&format!("{base}{path}"));
        browser.find("main");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let found = browser.eval(&format!(
            "{CONTRAST} return [...document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]), select, textarea, button')]
               .filter((e) => e.getClientRects().length && !e.disabled)
               .map((e) => [e.id || e.textContent, ratio(getComputedStyle(e).borderTopColor, background(e.parentElement))])
               .filter(([, r]) => r < 3)"
        ));
        for item in found.as_array().unwrap() {
            // A dark button's border is its own fill colour: the control stands out by its fill, at 10:1.
            let fill = browser.eval(&format!(
                "{CONTRAST} const e = [...document.querySelectorAll('button')].find((b) => (b.id || b.textContent) === {});
                 return e ? ratio(getComputedStyle(e).backgroundColor, background(e.parentElement)) : 0",
                json!(item[0])
            ));
            if fill.as_f64().unwrap_or(0.0) < 3.0 {
                weak.push(format!("{path} {item}"));
            }
        }
    }
    assert!(weak.is_empty(), "controls under 3:1: {weak:?}");

    // An audit event that matched an alert rule: a bar at 3:1 or better and a marker word, not only a tint.
    browser.goto(&format!("{base}/audit"));
    browser.find("#events tbody tr.flagged");
    let marked = browser.eval(&format!(
        "{CONTRAST} const row = document.querySelector('#events tbody tr.flagged');
         const bar = getComputedStyle(row.cells[0]).boxShadow.match(/rgb\\([^)]*\\)/)[0];
         return [ratio(bar, 'rgb(255, 255, 255)'), ratio(bar, background(row.cells[0])), row.querySelector('.alerts').textContent]"
    ));
    assert!(marked[0].as_f64().unwrap() >= 3.0 && marked[1].as_f64().unwrap() >= 3.0, "{marked}");
    assert!(marked[2].as_str().unwrap().starts_with("⚠ alert: rm-root"), "{marked}");
    browser.screenshot("3-alert-row");
}
