//! salt-api's event stream (`host/src/backends/saltstack/events.rs`).
//!
//! Properties: the events and the ready flag are the same for any split of the stream into chunks (the parser is
//! fed whatever the network delivers), never a panic; events written in salt-api's framing (`tag:`, one or more
//! `data:` lines, a blank line; LF or CRLF; comments and other fields between) read back exactly.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::fuzzing::{SseEvent, SseParser};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(splits) = u.arbitrary::<Vec<u8>>() else { return };
    let stream = u.peek_bytes(u.len()).unwrap_or_default();
    same_in_any_split(stream, &splits);
    let _ = written_then_read(&mut Unstructured::new(data));
});

/// Whole, byte by byte, and in the chunk sizes the fuzzer chose: one answer.
fn same_in_any_split(stream: &[u8], splits: &[u8]) {
    let mut whole = SseParser::new();
    let expected = whole.push(stream);
    let mut chunked = SseParser::new();
    let mut got = Vec::new();
    let mut rest = stream;
    let mut sizes = splits.iter().map(|&s| usize::from(s)).chain(std::iter::repeat(7));
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).min(rest.len());
        got.extend(chunked.push(&rest[..n]));
        rest = &rest[n..];
    }
    assert_eq!(got, expected);
    assert_eq!(chunked.is_ready(), whole.is_ready());
    if stream.len() < 512 {
        let mut bytewise = SseParser::new();
        let got: Vec<SseEvent> = stream.iter().flat_map(|b| bytewise.push(std::slice::from_ref(b))).collect();
        assert_eq!(got, expected);
    }
}

fn written_then_read(u: &mut Unstructured<'_>) -> Result<()> {
    let line_end = if u.arbitrary()? { "\r\n" } else { "\n" };
    let mut stream = format!("retry: 400{line_end}");
    let mut events = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        if u.arbitrary()? {
            stream.push_str(&format!(": keep-alive{line_end}{line_end}"));
        }
        // A line ends at LF; salt-api's JSON never holds a raw one (nor a CR, which would end up at a line's end).
        let clean = |s: String| s.replace(['\n', '\r'], "");
        let tag = clean(common::text(u, "salt/job/12ret:mi- ", 24)?);
        let lines: Vec<String> = (0..u.int_in_range(1..=3)?)
            .map(|_| Ok(clean(common::text(u, "{}\":, abé", 24)?)))
            .collect::<Result<_>>()?;
        // A value's one leading space is part of the framing, as in `data: x`.
        stream.push_str(&format!("tag: {tag}{line_end}"));
        if u.arbitrary()? {
            stream.push_str(&format!("id: 5{line_end}"));
        }
        for line in &lines {
            stream.push_str(&format!("data: {line}{line_end}"));
        }
        stream.push_str(line_end);
        events.push(SseEvent { tag, data: lines.join("\n") });
    }
    let mut parser = SseParser::new();
    assert_eq!(parser.push(stream.as_bytes()), events, "{stream:?}");
    assert!(parser.is_ready());
    Ok(())
}
