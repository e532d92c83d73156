//! The worker protocol's frames (`host/src/worker/protocol.rs`).
//!
//! Properties: any byte stream yields frames, `Closed`, `Truncated` or `TooLarge`, never a panic, and never more
//! memory than the bytes that really arrived (a frame's length is the sender's claim); a decoded message encodes
//! to a message that decodes to the same encoding; every message either side can send, framed, reads back as the
//! same bytes and the same message through both readers (blocking and async) for any split of the stream into
//! reads, the library frame after `Load` included.

#![no_main]

mod common;

use std::io::Read;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::worker::protocol::{
    decode, frame, raw_frame, read_frame, read_frame_async, Call, FromWorker, ProtocolError, ToWorker, WireInit,
    WireKind, WireMetadata, WireParam, WireResult, WireStatus, WireTarget, WireValue,
};

fuzz_target!(|data: &[u8]| {
    any_stream(data);
    let _ = framed_then_read(&mut Unstructured::new(data));
});

fn any_stream(data: &[u8]) {
    let mut reader = data;
    loop {
        match read_frame(&mut reader) {
            Ok(body) => {
                if let Ok(message) = decode::<FromWorker>(&body) {
                    stable(&message, |b| decode::<FromWorker>(b).ok());
                }
                if let Ok(message) = decode::<ToWorker>(&body) {
                    stable(&message, |b| decode::<ToWorker>(b).ok());
                }
            }
            Err(ProtocolError::Closed | ProtocolError::Truncated { .. } | ProtocolError::TooLarge(_)) => break,
            Err(e) => panic!("unexpected error from a byte slice: {e}"),
        }
    }
}

/// encode ∘ decode is the identity on encodings.
fn stable<T: serde::Serialize>(message: &T, decode_again: impl Fn(&[u8]) -> Option<T>) {
    let once = frame(message).expect("a decoded message encodes");
    let again = decode_again(&once[4..]).expect("an encoded message decodes");
    assert_eq!(frame(&again).unwrap(), once);
}

fn framed_then_read(u: &mut Unstructured<'_>) -> Result<()> {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        let body = if u.arbitrary()? {
            frame(&from_worker(u)?).unwrap()
        } else {
            match to_worker(u)? {
                ToWorker::Load => {
                    let library: Vec<u8> = u.arbitrary()?;
                    let load = frame(&ToWorker::Load).unwrap();
                    stream.extend_from_slice(&load);
                    frames.push(load[4..].to_vec());
                    raw_frame(&library)
                }
                other => frame(&other).unwrap(),
            }
        };
        stream.extend_from_slice(&body);
        frames.push(body[4..].to_vec());
    }
    let sizes: Vec<u8> = u.arbitrary()?;

    let mut reader = Chunked { data: &stream, sizes: &sizes, next: 0 };
    for want in &frames {
        assert_eq!(&read_frame(&mut reader).expect("a whole frame"), want);
    }
    assert!(matches!(read_frame(&mut reader), Err(ProtocolError::Closed)));

    let mut reader = Chunked { data: &stream, sizes: &sizes, next: 0 };
    runtime().block_on(async {
        for want in &frames {
            assert_eq!(&read_frame_async(&mut reader).await.expect("a whole frame"), want);
        }
        assert!(matches!(read_frame_async(&mut reader).await, Err(ProtocolError::Closed)));
    });

    // Cut anywhere inside the last frame: truncated, not a hang or a short frame.
    let cut = u.int_in_range(stream.len() - frames.last().map_or(0, Vec::len) - 3..=stream.len() - 1)?;
    let mut reader = &stream[..cut];
    let results: Vec<_> = std::iter::from_fn(|| Some(read_frame(&mut reader))).take(frames.len()).collect();
    assert!(results.last().is_some_and(|r| matches!(r, Err(ProtocolError::Truncated { .. } | ProtocolError::Closed))));
    Ok(())
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

/// A stream that hands out its bytes in the chunk sizes given (then 3 at a time), as a socket may.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl Chunked<'_> {
    fn take(&mut self, room: usize) -> &[u8] {
        let size = self.sizes.get(self.next).map_or(3, |&s| usize::from(s).max(1));
        self.next += 1;
        let n = size.min(room).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let chunk = self.take(buf.len());
        buf[..chunk.len()].copy_from_slice(chunk);
        Ok(chunk.len())
    }
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let chunk = this.take(buf.remaining());
        buf.put_slice(chunk);
        Poll::Ready(Ok(()))
    }
}

fn s(u: &mut Unstructured<'_>) -> Result<String> {
    common::text(u, "ab\"\\\n\u{0}é", 12)
}

fn target(u: &mut Unstructured<'_>) -> Result<WireTarget> {
    Ok(WireTarget { name: s(u)?, address: s(u)? })
}

fn targets(u: &mut Unstructured<'_>) -> Result<Vec<WireTarget>> {
    (0..u.int_in_range(0..=3)?).map(|_| target(u)).collect()
}

fn result(u: &mut Unstructured<'_>) -> Result<WireResult> {
    Ok(WireResult {
        host: s(u)?,
        status: *u.choose(&[WireStatus::Ok, WireStatus::Failed, WireStatus::Unreachable])?,
        rc: u.arbitrary()?,
        stdout: s(u)?,
        stderr: s(u)?,
        duration_ms: u.arbitrary()?,
    })
}

fn results(u: &mut Unstructured<'_>) -> Result<Vec<WireResult>> {
    (0..u.int_in_range(0..=3)?).map(|_| result(u)).collect()
}

fn strings(u: &mut Unstructured<'_>) -> Result<Vec<String>> {
    (0..u.int_in_range(0..=3)?).map(|_| s(u)).collect()
}

fn from_worker(u: &mut Unstructured<'_>) -> Result<FromWorker> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => FromWorker::Hello { protocol: u.arbitrary()? },
        1 => FromWorker::Loaded {
            metadata: WireMetadata {
                id: u.arbitrary()?,
                name: s(u)?,
                description: s(u)?,
                version: s(u)?,
                backends: strings(u)?,
                params: (0..u.int_in_range(0..=3)?)
                    .map(|_| {
                        Ok(WireParam {
                            name: s(u)?,
                            description: s(u)?,
                            required: u.arbitrary()?,
                            kind: match u.int_in_range(0..=2u8)? {
                                0 => WireKind::Integer {
                                    min: u.arbitrary()?,
                                    max: u.arbitrary()?,
                                    default: u.arbitrary()?,
                                },
                                1 => WireKind::Choice { choices: strings(u)?, default: u.arbitrary()? },
                                _ => {
                                    WireKind::Text { pattern: s(u)?, max_len: u.arbitrary()?, default: u.arbitrary()? }
                                }
                            },
                        })
                    })
                    .collect::<Result<_>>()?,
            },
        },
        2 => FromWorker::LoadFailed { reason: s(u)? },
        3 => FromWorker::Call { id: u.arbitrary()?, call: Call::Run { hosts: targets(u)?, argv: strings(u)? } },
        4 => FromWorker::Call {
            id: u.arbitrary()?,
            call: Call::Copy { hosts: targets(u)?, source: s(u)?, dest: s(u)?, mode: u.arbitrary()? },
        },
        _ => FromWorker::Finished {
            outcome: if u.arbitrary()? { Ok(results(u)?) } else { Err(s(u)?) },
            cpu_ms: u.arbitrary()?,
        },
    })
}

fn to_worker(u: &mut Unstructured<'_>) -> Result<ToWorker> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => ToWorker::Load,
        1 => ToWorker::Run {
            init: WireInit {
                module_id: u.arbitrary()?,
                hosts: targets(u)?,
                params: (0..u.int_in_range(0..=3)?)
                    .map(|_| {
                        let value =
                            if u.arbitrary()? { WireValue::Integer(u.arbitrary()?) } else { WireValue::Text(s(u)?) };
                        Ok((s(u)?, value))
                    })
                    .collect::<Result<_>>()?,
                settings: (0..u.int_in_range(0..=3)?).map(|_| Ok((s(u)?, s(u)?))).collect::<Result<_>>()?,
            },
            backend: s(u)?,
        },
        2 => ToWorker::Answer { id: u.arbitrary()?, results: results(u)? },
        _ => ToWorker::Cancel,
    })
}
