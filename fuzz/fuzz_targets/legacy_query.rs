//! The original agent's query string (`GET /omaudit/omaudit_pull/?history_id=…`).
//!
//! Properties: any query is decoded or refused, never a panic; five values percent-encoded in any of the ways a
//! client may (urllib's `quote`, `+` for space, lower- or upper-case hex, literal safe characters), mixed with
//! unknown parameters and empty pairs, decode back exactly; a parameter given twice is refused naming it.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::audit::event::{parse_legacy_query, LegacyParams};

const KEYS: [&str; 5] = ["history_id", "history_ip", "history_user", "history_datetime", "history_command"];

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = parse_legacy_query(raw);
    }
    let _ = round_trip(&mut Unstructured::new(data));
});

fn round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let mut values: [Option<String>; 5] = Default::default();
    for value in values.iter_mut() {
        if u.arbitrary()? {
            *value = Some(common::text(u, "az09 +&=%/:-_.~é\"'<>\n", 40)?);
        }
    }
    let mut pairs = Vec::new();
    for (key, value) in KEYS.iter().zip(&values) {
        if let Some(value) = value {
            pairs.push(format!("{key}={}", encode(u, value)?));
        }
    }
    // Unknown parameters (ignored, whatever their value, as Django did) and empty pairs, anywhere.
    for _ in 0..u.int_in_range(0..=3)? {
        let key = common::word(u, "abhistory_dx", 0, 12)?;
        if KEYS.contains(&key.as_str()) {
            continue;
        }
        let junk = common::text(u, "%zz+=", 8)?.replace('&', "");
        let at = u.int_in_range(0..=pairs.len())?;
        pairs.insert(at, if key.is_empty() { String::new() } else { format!("{key}={junk}") });
    }
    let query = pairs.join("&");
    let parsed = parse_legacy_query(&query).unwrap_or_else(|e| panic!("{query:?} refused: {e}"));
    assert_eq!(slots(parsed), values, "{query:?}");

    if let Some(i) = (0..5).find(|&i| values[i].is_some()) {
        let twice = format!("{query}&{}=x", KEYS[i]);
        let err = parse_legacy_query(&twice).expect_err("a repeated parameter is refused");
        assert_eq!(err.field, KEYS[i]);
    }
    Ok(())
}

fn slots(p: LegacyParams) -> [Option<String>; 5] {
    [p.history_id, p.history_ip, p.history_user, p.history_datetime, p.history_command]
}

/// Percent-encodes `value`, choosing per character among the spellings a client may use.
fn encode(u: &mut Unstructured<'_>, value: &str) -> Result<String> {
    let mut out = String::new();
    for c in value.chars() {
        let safe = c.is_ascii_alphanumeric() || "/_.-~:".contains(c);
        let spelling = u.int_in_range(0..=2u8)?;
        if c == ' ' && spelling == 0 {
            out.push('+');
        } else if (safe || !c.is_ascii()) && spelling < 2 {
            // Literal characters (the query is already text, so non-ASCII may come through as it is).
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                if u.arbitrary()? {
                    out.push_str(&format!("%{b:02X}"));
                } else {
                    out.push_str(&format!("%{b:02x}"));
                }
            }
        }
    }
    Ok(out)
}
