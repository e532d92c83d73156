//! Cron expressions (`host/src/schedules/cron.rs`): parsing and the next fire times.
//!
//! Properties: any expression and time zone parse or are refused with a message, never a panic; for a schedule
//! that parses, the next fire time from any instant is strictly later (or none), within a bounded search (the
//! target's time limit catches a loop), and the next five are strictly increasing; a time zone name is accepted
//! whatever spaces surround it, and an expression whatever spaces surround and separate its fields.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::schedules::cron::Cron;

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
    "Antarctica/Troll",
];

fuzz_target!(|data: &[u8]| {
    // As text (the seeds' form): `zone`, `expression`, `instant` lines.
    if let Ok(text) = std::str::from_utf8(data) {
        let mut lines = text.splitn(3, '\n');
        if let (Some(zone), Some(expression)) = (lines.next(), lines.next()) {
            let after = lines.next().and_then(|t| t.trim().parse().ok()).unwrap_or(1_764_720_000_000);
            check(zone, expression, [after, after.wrapping_mul(7)]);
        }
    }
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    // Any instant, and one in this century (where a schedule's times really are computed).
    let zone =
        if u.ratio(7u8, 8u8)? { (*u.choose(&ZONES)?).to_owned() } else { common::text(u, "UTC/Europa_+-0", 12)? };
    let expression = if u.arbitrary()? {
        // Field by field from the pieces cron is made of.
        let pieces = ["*", "*/", "-", ",", "/", "L", "W", "#", "?", "+", "MON", "jan", "@daily", "@midnight"];
        let mut text = String::new();
        for _ in 0..u.int_in_range(0..=7)? {
            for _ in 0..u.int_in_range(1..=3)? {
                if u.arbitrary()? {
                    text.push_str(u.choose(&pieces)?);
                } else {
                    text.push_str(&u.int_in_range(0..=61u32)?.to_string());
                }
            }
            text.push(' ');
        }
        text
    } else {
        common::text(u, "0123456789*/-, LW#?+@JANMONdaily", 40)?
    };
    let instants = [u.arbitrary::<i64>()?, u.int_in_range(946_684_800_000..=4_102_444_800_000i64)?];
    check(&zone, &expression, instants);
    Ok(())
}

fn check(zone: &str, expression: &str, instants: [i64; 2]) {
    let Ok(cron) = Cron::parse(expression, zone) else { return };

    let spaced = format!("  {}\t", expression.split_whitespace().collect::<Vec<_>>().join("   "));
    assert!(Cron::parse(&spaced, &format!(" {zone} ")).is_ok(), "{spaced:?}");

    for after in instants {
        if let Some(next) = cron.next_after(after) {
            assert!(next > after, "{expression:?} in {zone}: {next} is not after {after}");
        }
        let upcoming = cron.upcoming(after, 5);
        assert!(upcoming.windows(2).all(|w| w[0] < w[1]), "{expression:?} in {zone}: {upcoming:?}");
        assert!(upcoming.first().is_none_or(|&first| first > after));
    }
}
