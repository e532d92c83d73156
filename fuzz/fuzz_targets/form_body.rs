//! Form bodies (`host/src/http/body.rs` `read_form`, as `/login` and the console's forms send them).
//!
//! Properties: any body is read or refused with a 400, never a panic; fields written by a browser (urlencoded,
//! with `csrf_token` and `return_to` anywhere among them) read back into the route's type without those two, and
//! `return_to` comes back as sent; a `return_to` that `is_local_page` accepts stays on this server when a browser
//! resolves it (no open redirect), and the 303 points at it or at `/`.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::fuzzing::{is_local_page, read_form, see_other};
use omserver::http::HttpError;
use serde::Deserialize;

/// `/login`'s form.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Login {
    name: String,
    password: String,
}

/// A console form with an optional number, as `/users` and `/tokens` have.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct WithNumber {
    name: String,
    role: Option<String>,
    days: Option<u16>,
}

fuzz_target!(|data: &[u8]| {
    for result in [read_form::<Login>(data).map(|_| ()), read_form::<WithNumber>(data).map(|_| ())] {
        if let Err(e) = result {
            assert!(matches!(e, HttpError::BadRequest { .. }), "{e:?}");
        }
    }
    if let Ok((_, Some(back))) = read_form::<Login>(data) {
        stays_here(&back);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        stays_here(text);
    }
    let _ = written_then_read(&mut Unstructured::new(data));
});

/// A local page resolves, against this server's address, to this server.
fn stays_here(page: &str) {
    let location = see_other(page);
    let location = location.headers().get("location").expect("a 303 has a location");
    if !is_local_page(page) {
        return;
    }
    assert!(location.as_bytes() == page.as_bytes() || location == "/", "{page:?} → {location:?}");
    let base = url::Url::parse("https://om.example:8443/jobs/1").unwrap();
    if let Ok(resolved) = base.join(page) {
        assert_eq!(resolved.origin(), base.origin(), "{page:?} leaves the server: {resolved}");
    }
}

fn written_then_read(u: &mut Unstructured<'_>) -> Result<()> {
    let value = |u: &mut Unstructured<'_>| common::text(u, "ab &=+%/\\é\n", 16);
    let (name, password, csrf) = (value(u)?, value(u)?, value(u)?);
    let back = if u.arbitrary()? { Some(common::text(u, "/\\ab:.?#%@", 16)?) } else { None };
    let mut pairs = vec![("name", name.clone()), ("password", password.clone())];
    for (key, extra) in [("csrf_token", Some(csrf)), ("return_to", back.clone())] {
        if let Some(extra) = extra {
            let at = u.int_in_range(0..=pairs.len())?;
            pairs.insert(at, (key, extra));
        }
    }
    let body = serde_urlencoded::to_string(&pairs).unwrap();
    let (login, got_back) = read_form::<Login>(body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e:?}"));
    assert_eq!(login, Login { name: name.clone(), password }, "{body:?}");
    assert_eq!(got_back, back, "{body:?}");
    if let Some(back) = &back {
        stays_here(back);
    }

    let days: Option<u16> = u.arbitrary()?;
    let role = if u.arbitrary()? { Some(value(u)?) } else { None };
    let mut pairs = vec![("name", name.clone())];
    pairs.extend(role.clone().map(|r| ("role", r)));
    pairs.extend(days.map(|d| ("days", d.to_string())));
    pairs.push(("csrf_token", "t".into()));
    let body = serde_urlencoded::to_string(&pairs).unwrap();
    let (form, _) = read_form::<WithNumber>(body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e:?}"));
    assert_eq!(form, WithNumber { name, role, days }, "{body:?}");
    Ok(())
}
