//! Notification messages (`host/src/notify/notice.rs` stored with a delivery, `message.rs` rendering it).
//!
//! Properties: any stored payload is a notice or refused, never a panic, and any notice renders in every format;
//! a notice reads back from its stored JSON unchanged; the subject is one line of at most 200 characters after
//! its prefix; untrusted text never adds markup: the HTML part has exactly the tags and quotes of the same notice
//! with every markup character of its text replaced by a letter, the Slack text has one closed code block per
//! block, no `<` but our link's, and no `@` a mention could start from.

#![no_main]

mod common;

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::notify::message::{compose, html, plain, slack, subject};
use omserver::notify::notice::{AlertNotice, FireNotice, HostGroup, JobNotice, Notice};

fuzz_target!(|data: &[u8]| {
    if let Ok(notice) = serde_json::from_slice::<Notice>(data) {
        render(&notice, 1);
    }
    let _ = generated(&mut Unstructured::new(data));
});

fn generated(u: &mut Unstructured<'_>) -> Result<()> {
    let notice = notice(u, &mut |u| common::text(u, "<>&\"'@`*_~|!\r\nab é", 16))?;
    let count = u.arbitrary()?;
    let stored = serde_json::to_string(&notice).unwrap();
    assert_eq!(serde_json::from_str::<Notice>(&stored).unwrap(), notice, "{stored}");
    render(&notice, count);

    // The same notice, its text's markup characters turned into letters: the markup must be the same.
    let tame = defang(&notice);
    let (a, b) =
        (html(&compose(&notice, count, "https://om.example/")), html(&compose(&tame, count, "https://om.example/")));
    for mark in ['<', '>', '"'] {
        assert_eq!(a.matches(mark).count(), b.matches(mark).count(), "{mark}\n{a}\n{b}");
    }
    Ok(())
}

fn render(notice: &Notice, count: i64) {
    let message = compose(notice, count, "https://om.example/");
    let subject = subject(&message);
    let title = subject.strip_prefix("[OMServer] ").expect("the prefix");
    assert!(title.chars().count() <= 200 && !subject.chars().any(char::is_control), "{subject:?}");
    let _ = plain(&message);
    let text = slack(&message)["text"].as_str().expect("text").to_owned();
    assert_eq!(text.matches("```").count(), 2 * message.blocks.len(), "{text}");
    let link_at = text.rfind("<https://om.example").unwrap_or(text.len());
    assert!(!text[..link_at].contains('<'), "{text}");
    for (i, _) in text.match_indices('@') {
        assert!(text[i + 1..].starts_with('\u{2060}'), "a mention can start at {i}: {text}");
    }
    let _ = html(&message);
}

fn notice(u: &mut Unstructured<'_>, s: &mut dyn FnMut(&mut Unstructured<'_>) -> Result<String>) -> Result<Notice> {
    let opt = |u: &mut Unstructured<'_>, s: &mut dyn FnMut(&mut Unstructured<'_>) -> Result<String>| {
        Ok::<_, arbitrary::Error>(if u.arbitrary()? { Some(s(u)?) } else { None })
    };
    Ok(match u.int_in_range(0..=6u8)? {
        0 => Notice::JobFinished(JobNotice {
            job: u.arbitrary()?,
            module: u.arbitrary()?,
            module_name: opt(u, s)?,
            status: s(u)?,
            error: opt(u, s)?,
            by: s(u)?,
            template: opt(u, s)?,
            hosts: u.arbitrary()?,
            counts: (0..u.int_in_range(0..=3)?)
                .map(|_| Ok((s(u)?, u.arbitrary()?)))
                .collect::<Result<BTreeMap<_, _>>>()?,
            not_ok: (0..u.int_in_range(0..=3)?)
                .map(|_| {
                    Ok(HostGroup {
                        status: s(u)?,
                        text: s(u)?,
                        hosts: (0..u.int_in_range(0..=3)?).map(|_| s(u)).collect::<Result<_>>()?,
                        more: u.arbitrary()?,
                    })
                })
                .collect::<Result<_>>()?,
            more_groups: u.arbitrary()?,
            apps: Vec::new(),
            started_at: u.arbitrary()?,
            finished_at: u.arbitrary()?,
        }),
        1 => Notice::ScheduleFire(FireNotice {
            schedule_id: u.arbitrary()?,
            schedule: s(u)?,
            slot: u.arbitrary()?,
            outcome: (*u.choose(&["missed", "failed"])?).to_owned(),
            reason: opt(u, s)?,
        }),
        2 => Notice::AuditAlert(AlertNotice {
            rule: s(u)?,
            event_id: u.arbitrary()?,
            host: s(u)?,
            host_id: u.arbitrary()?,
            user: s(u)?,
            login_user: opt(u, s)?,
            tty: opt(u, s)?,
            command: s(u)?,
            datetime: s(u)?,
            last_command: opt(u, s)?,
        }),
        3 => Notice::ModuleRejected { file: s(u)?, reason: s(u)? },
        4 => Notice::BackendUnhealthy { backend: s(u)?, detail: s(u)? },
        5 => Notice::AuditVerify { findings: u.arbitrary()?, hosts: u.arbitrary()?, first: s(u)? },
        _ => Notice::Test { by: s(u)? },
    })
}

/// The notice with `<`, `>`, `&`, `"`, `'` in its text replaced by `x` (same lengths, same empty fields).
fn defang(notice: &Notice) -> Notice {
    let json = serde_json::to_value(notice).unwrap();
    fn walk(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(s.replace(['<', '>', '&', '"', '\''], "x")),
            Value::Array(a) => Value::Array(a.into_iter().map(walk).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(
                        |(k, v)| {
                            if k == "event" {
                                (k, v)
                            } else {
                                (k.replace(['<', '>', '&', '"', '\''], "x"), walk(v))
                            }
                        },
                    )
                    .collect(),
            ),
            other => other,
        }
    }
    serde_json::from_value(walk(json)).unwrap()
}
