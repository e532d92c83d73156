//! The agent's batch (`POST /api/audit/events`): the JSON the server reads, and the checks each event passes.
//!
//! Properties: any body is read or refused, never a panic; an accepted event holds only what the checks promise
//! (a user without spaces or control characters, a real date, a command within the limit and without NUL, an
//! argument vector that is a JSON list); and across the API boundary, every event `omaudit-agent` can write (its
//! own `Event` and `Submission` types, serialised as it sends them) is read by the server, and one within the
//! documented limits is accepted with every field as sent.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omaudit_agent::event::{Arg, Event, Gap, Source, Submission};
use omserver::audit::event::{check_agent_event, check_stream, AgentBatch, Incoming, Limits, Source as HostSource};

const LIMITS: Limits = Limits { max_command_bytes: 512 };

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = serde_json::from_slice::<AgentBatch>(data) {
        for event in batch.events {
            if let Ok(incoming) = check_agent_event(7, "10.0.0.7", event, LIMITS) {
                assert_promises(&incoming);
            }
        }
        for gap in batch.gaps {
            let _ = check_stream(gap.stream);
        }
    }
    let _ = across_the_boundary(&mut Unstructured::new(data));
});

fn assert_promises(e: &Incoming) {
    assert!(!e.user.is_empty() && e.user.len() <= 64, "{e:?}");
    assert!(!e.user.chars().any(|c| c.is_control() || c.is_whitespace()), "{e:?}");
    assert!(e.login_user.as_ref().is_none_or(|u| u.len() <= 64 && !u.chars().any(char::is_control)), "{e:?}");
    assert!(e.tty.as_ref().is_none_or(|t| t.len() <= 64 && !t.chars().any(char::is_control)), "{e:?}");
    assert_eq!(e.datetime.len(), 19, "{e:?}");
    assert!(!e.command.trim().is_empty() && e.command.len() <= LIMITS.max_command_bytes, "{e:?}");
    assert!(!e.command.contains('\0'), "{e:?}");
    assert!(e.seq.is_some_and(|s| s >= 1) && e.history_id >= 0, "{e:?}");
    let stream = e.stream.as_deref().unwrap_or_default();
    assert!(!stream.is_empty() && stream.len() <= 64, "{e:?}");
    if let Some(argv) = &e.exec.argv {
        let list: Vec<serde_json::Value> = serde_json::from_str(argv).expect("argv is a JSON list");
        assert!(!list.is_empty());
    }
    for path in [&e.exec.cwd, &e.exec.exe].into_iter().flatten() {
        assert!(path.len() <= 4096 && !path.contains('\0'));
    }
}

fn across_the_boundary(u: &mut Unstructured<'_>) -> Result<()> {
    // Within the limits (as the agent's own capture produces them), or anything its types can hold.
    let tame = u.arbitrary::<bool>()?;
    let event = agent_event(u, tame)?;
    let gaps = if u.arbitrary()? {
        vec![Gap {
            stream: event.stream.clone(),
            from_seq: 1,
            to_seq: u.int_in_range(1..=9)?,
            reason: "spool full".into(),
        }]
    } else {
        Vec::new()
    };
    let body = serde_json::to_vec(&Submission { events: std::slice::from_ref(&event), gaps: &gaps }).unwrap();
    let batch: AgentBatch = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("the server cannot read what the agent sends: {e}: {}", String::from_utf8_lossy(&body))
    });
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.gaps.len(), gaps.len());
    let checked = check_agent_event(7, "10.0.0.7", batch.events.into_iter().next().unwrap(), LIMITS);
    match checked {
        Ok(incoming) => {
            assert_promises(&incoming);
            assert_same(&event, &incoming);
        }
        Err((why, stream)) => {
            assert_eq!(stream, event.stream);
            assert!(!tame, "an event within the limits was refused: {why}: {event:?}");
        }
    }
    Ok(())
}

fn assert_same(sent: &Event, got: &Incoming) {
    assert_eq!(got.stream.as_deref(), Some(sent.stream.as_str()));
    assert_eq!(got.seq, Some(sent.seq as i64));
    assert_eq!(got.history_id, sent.history_id as i64);
    assert_eq!(got.user, sent.user);
    let login = (!sent.login_user.is_empty()).then(|| format!("{}({})", sent.login_user, sent.uid));
    assert_eq!(got.login_user, login);
    assert_eq!(got.tty.as_deref(), Some(sent.tty.as_str()).filter(|t| !t.is_empty()));
    assert_eq!(got.datetime, sent.time);
    assert_eq!(got.command, sent.command);
    assert_eq!(got.session, sent.session.map(i64::from));
    match sent.source {
        Source::History => assert_eq!(got.source, HostSource::Agent),
        Source::Execve => {
            assert_eq!(got.source, HostSource::Execve);
            let argv: serde_json::Value = serde_json::from_str(got.exec.argv.as_deref().unwrap()).unwrap();
            assert_eq!(argv, serde_json::to_value(&sent.argv).unwrap());
            assert_eq!(got.exec.cwd, sent.cwd);
            assert_eq!(got.exec.exe, sent.exe);
            assert_eq!(got.exec.exit_code, sent.exit);
            assert_eq!(got.exec.pid, sent.pid.map(i64::from));
            assert_eq!(got.exec.auid, sent.auid.map(i64::from));
        }
    }
}

fn agent_event(u: &mut Unstructured<'_>, tame: bool) -> Result<Event> {
    let any = |u: &mut Unstructured<'_>, max| common::text(u, "ab \t\0\n(é", max);
    let execve = u.arbitrary::<bool>()?;
    let argv = if execve || !tame && u.arbitrary()? {
        let mut args = Vec::new();
        for _ in 0..u.int_in_range(usize::from(tame)..=4)? {
            let bytes: Vec<u8> = if tame {
                common::text(u, "ls -la/\u{7f}é'\"", 12)?.replace('\0', "").into_bytes()
            } else {
                u.arbitrary()?
            };
            // A NUL cannot be in an exec's argument; the hex form is for bytes that are not UTF-8.
            let bytes = if tame { bytes.into_iter().filter(|&b| b != 0).collect() } else { bytes };
            args.push(Arg::from_bytes(bytes));
        }
        Some(args)
    } else {
        None
    };
    let user = if tame { common::word(u, common::ALNUM, 1, 32)? } else { any(u, 70)? };
    let login_user = if tame { common::word(u, common::ALNUM, 0, 32)? } else { any(u, 70)? };
    Ok(Event {
        stream: if tame { common::word(u, "0123456789abcdef-", 1, 64)? } else { any(u, 70)? },
        seq: if tame { u.int_in_range(1..=i64::MAX as u64)? } else { u.int_in_range(0..=i64::MAX as u64)? },
        history_id: u.int_in_range(0..=i64::MAX as u64)?,
        user,
        login_user,
        uid: if tame { u.int_in_range(0..=9_999_999)? } else { u.arbitrary()? },
        tty: if tame { common::word(u, "/devpts0123", 0, 20)? } else { any(u, 70)? },
        ip: if tame { "10.0.0.7".into() } else { any(u, 20)? },
        time: if tame || u.arbitrary()? { common::datetime(u)? } else { any(u, 20)? },
        command: if tame {
            // At most 200 characters, but the limit is in bytes (a character takes up to 4): cut at a character.
            let mut command = format!("x{}", common::text(u, "ls -la|&;'\"\\é\t", 200)?.replace('\0', ""));
            while command.len() > LIMITS.max_command_bytes {
                command.pop();
            }
            command
        } else {
            any(u, 600)?
        },
        source: if execve { Source::Execve } else { Source::History },
        session: u.arbitrary()?,
        argv,
        exe: if tame { Some("/usr/bin/ls".into()) } else { u.arbitrary()? },
        cwd: if tame { Some(common::text(u, "/tmp é", 30)?.replace('\0', "")) } else { u.arbitrary()? },
        pid: u.arbitrary()?,
        ppid: u.arbitrary()?,
        euid: u.arbitrary()?,
        auid: u.arbitrary()?,
        exit: u.arbitrary()?,
    })
}
