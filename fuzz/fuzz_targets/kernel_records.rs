//! The kernel's audit records (`agent/src/kernel/record.rs` and `exec.rs`): records in, execs and events out.
//!
//! Properties: any sequence of records (any type, any text, any serials, interleaved, with time passing) is
//! taken without a panic; the assembler never holds more than its bound and gives back, after `drain`, nothing
//! but execs whose `SYSCALL` record it was given; and an exec's command line, read back the way bash reads a
//! pasted line (quotes, `$'…'` escapes, and a first word that bash would take for an assignment or a reserved
//! word), is exactly its argument vector.

#![no_main]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omaudit_agent::kernel::exec::{shell_line, Assembler, Names};
use omaudit_agent::kernel::record;

const MAX_OPEN: usize = 4;

struct Numbers;

impl Names for Numbers {
    fn user(&mut self, uid: u32) -> String {
        uid.to_string()
    }
}

fuzz_target!(|data: &[u8]| {
    // As text (the seeds' form): one record a line, `TYPE TEXT`, as netlink delivers them.
    if let Ok(text) = std::str::from_utf8(data) {
        let lines = text.lines().filter_map(|l| {
            let (ty, text) = l.split_once(' ')?;
            Some((ty.parse().ok()?, text.replace("\\0", "\0")))
        });
        feed(lines.collect());
    }
    let _ = records(&mut Unstructured::new(data));
    let _ = command_lines(&mut Unstructured::new(data));
});

fn records(u: &mut Unstructured<'_>) -> Result<()> {
    let mut records = Vec::new();
    for _ in 0..u.int_in_range(0..=24)? {
        let serial = u.int_in_range(1..=6u64)?;
        let ty = *u.choose(&[
            record::SYSCALL,
            record::EXECVE,
            record::CWD,
            record::PATH,
            record::PROCTITLE,
            record::EOE,
            1105,
        ])?;
        let body = body(u, ty)?;
        let text = if u.ratio(15u8, 16u8)? { format!("audit(1764767100.250:{serial}): {body}\0") } else { body };
        records.push((ty, text));
    }
    feed(records);
    Ok(())
}

/// Records in, one every 10 ms: the bound holds throughout, and what comes out had its SYSCALL record.
fn feed(records: Vec<(u16, String)>) {
    let mut asm = Assembler::new(MAX_OPEN, Duration::from_millis(50));
    let mut out = Vec::new();
    let mut opened = HashSet::new();
    let mut now = Instant::now();
    for (ty, text) in records {
        if ty == record::SYSCALL {
            if let Some((stamp, _)) = record::parse_stamp(text.trim_end_matches('\0')) {
                opened.insert(stamp.serial);
            }
        }
        now += Duration::from_millis(10);
        asm.push(ty, &text, now, &mut out);
        assert!(asm.len() <= MAX_OPEN);
    }
    asm.drain(&mut out);
    assert!(asm.is_empty());
    for exec in out {
        assert!(opened.contains(&exec.stamp.serial), "{exec:?}");
        let args = exec.arguments();
        let event = exec.into_event("s", 1, &mut Numbers, &|secs| secs.to_string());
        assert_eq!(event.command, shell_line(&args));
    }
}

/// A record body: made of the keys the agent reads, values quoted, hex or anything.
fn body(u: &mut Unstructured<'_>, ty: u16) -> Result<String> {
    if u.ratio(1u8, 8u8)? {
        return common::text(u, "a=\" '0x", 40);
    }
    let keys: &[&str] = match ty {
        record::SYSCALL => &["arch", "syscall", "exit", "pid", "ppid", "uid", "euid", "auid", "ses", "tty", "exe"],
        record::EXECVE => &["argc", "a0", "a1", "a1_len", "a1[0]", "a1[1]", "a2", "a3"],
        record::CWD => &["cwd"],
        record::PATH => &["item", "name"],
        record::PROCTITLE => &["proctitle"],
        _ => &["msg", "pid"],
    };
    let mut fields = Vec::new();
    if ty == record::SYSCALL {
        // Mostly an exec from a login session, so that events open.
        fields.push(format!("arch={}", u.choose(&["c000003e", "40000003", "c00000b7", "zz"])?));
        fields.push(format!("syscall={}", u.choose(&["59", "322", "11", "221", "2"])?));
        fields.push(format!("auid={}", u.choose(&["1000", "0", "4294967295", "x"])?));
    }
    for _ in 0..u.int_in_range(0..=6)? {
        let key = u.choose(keys)?;
        let value = match u.int_in_range(0..=4u8)? {
            0 => u.int_in_range(0..=5u32)?.to_string(),
            1 => format!("\"{}\"", common::text(u, "ab/ ", 8)?),
            2 => common::word(u, "0123456789ABCDEF", 0, 12)?,
            3 => "(null)".to_owned(),
            _ => common::text(u, "'\"= 0", 8)?,
        };
        fields.push(format!("{key}={value}"));
    }
    Ok(fields.join(" "))
}

fn command_lines(u: &mut Unstructured<'_>) -> Result<()> {
    let mut args: Vec<Vec<u8>> = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let arg: Vec<u8> = match u.int_in_range(0..=3u8)? {
            0 => u.arbitrary()?,
            1 => common::text(u, "a=_\\'\"\n\t $é", 10)?.into_bytes(),
            2 => (*u.choose(&["if", "time", "A=b", "_x=1", "a+=b", "!", "{", "[[", "a.b=c", "-n", "%"])?).into(),
            _ => common::word(u, "abc_@%+=:,./-019", 0, 8)?.into_bytes(),
        };
        // An argument is a C string: it never holds a NUL.
        args.push(arg.into_iter().filter(|&b| b != 0).collect());
    }
    let line = shell_line(&args);
    assert_eq!(bash_words(&line), args, "{line}");
    Ok(())
}

/// Bash's reserved words: as a pasted line's first word they are syntax, not a command.
const RESERVED: [&str; 22] = [
    "!", "case", "coproc", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in", "select", "then",
    "until", "while", "{", "}", "time", "[[", "]]",
];

/// How bash splits and unquotes the kind of line `shell_line` writes: words separated by one space, each bare,
/// `'…'` or `$'…'`. Panics where bash would not run the words as one simple command with these arguments.
fn bash_words(line: &str) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !words.is_empty() {
            assert_eq!(bytes[i], b' ', "words are separated by a space: {line}");
            i += 1;
        }
        let mut word = Vec::new();
        if bytes[i..].starts_with(b"$'") {
            i += 2;
            loop {
                match bytes.get(i) {
                    None => panic!("unclosed $'…': {line}"),
                    Some(b'\'') => break,
                    Some(b'\\') => {
                        let (byte, len) = match bytes.get(i + 1) {
                            Some(b'\\') => (b'\\', 2),
                            Some(b'\'') => (b'\'', 2),
                            Some(b'n') => (b'\n', 2),
                            Some(b't') => (b'\t', 2),
                            Some(b'r') => (b'\r', 2),
                            Some(b'x') => {
                                let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("two hex digits");
                                (u8::from_str_radix(hex, 16).expect("two hex digits"), 4)
                            }
                            other => panic!("an escape bash reads otherwise: {other:?} in {line}"),
                        };
                        word.push(byte);
                        i += len;
                    }
                    Some(&b) => {
                        word.push(b);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else if bytes[i] == b'\'' {
            let end = line[i + 1..].find('\'').expect("a closing quote") + i + 1;
            word.extend_from_slice(&bytes[i + 1..end]);
            i = end + 1;
        } else {
            let end = line[i..].find(' ').map_or(line.len(), |e| e + i);
            let bare = &line[i..end];
            let special = |c: char| !(c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
            assert!(!bare.contains(special), "{bare:?} is not a plain word: {line}");
            if words.is_empty() {
                assert!(!RESERVED.contains(&bare), "bash reads {bare:?} as a reserved word: {line}");
                let assignment = bare.split_once('=').is_some_and(|(name, _)| {
                    let name = name.strip_suffix('+').unwrap_or(name);
                    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                assert!(!assignment, "bash reads {bare:?} as an assignment: {line}");
            }
            word.extend_from_slice(bare.as_bytes());
            i = end;
        }
        words.push(word);
    }
    words
}
