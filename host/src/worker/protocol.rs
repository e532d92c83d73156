//! The protocol between the server and a module worker: versioned, framed, bounded.
//!
//! Frames: a 4-byte big-endian length, then that many bytes. A frame is one JSON message, except the frame that
//! follows `Load`, which is the library itself. The worker speaks first (`Hello` with its protocol version), so a
//! server whose binary was replaced on disk by an upgrade notices at once that it no longer understands its
//! workers. The mirror types below exist so that `plugin-api` stays free of serde: they are plain data, converted
//! to and from the contract's `#[repr(C)]` types at either end.
//!
//! One conversation, worker (W) and server (S):
//!
//! ```text
//! W: Hello {protocol}            S: Load + library frame
//! W: Loaded {metadata} | LoadFailed {reason}
//! S: Run {init, backend}         (repeated for every job the warm worker serves)
//! W: Call {id, Run|Copy}  ...    S: Answer {id, results}  (any number, possibly overlapping)
//! S: Cancel                      (at most once per run)
//! W: Finished {outcome, cpu_ms}
//! ```
//!
//! Closing the socket is the only "exit": a worker whose server went away exits at once.

use std::io::{Read, Write};

use abi_stable::std_types::{ROption, RString, RVec};
use omserver_plugin_api::{
    HostResult, HostStatus, InitRequest, Metadata, Param, ParamKind, ParamSpec, ParamValue, Setting, Target,
};
use serde::{Deserialize, Serialize};

/// Bumped on any change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts. Results carry each host's capped output, so a big job's answer is large;
/// a frame is read as its bytes arrive, so a lying length costs nothing until the bytes are really sent.
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("a frame ended after {got} of {want} bytes")]
    Truncated { got: usize, want: usize },
    #[error("undecodable message: {0}")]
    Decode(#[from] serde_json::Error),
}

/// What the worker sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromWorker {
    Hello { protocol: u32 },
    Loaded { metadata: WireMetadata },
    LoadFailed { reason: String },
    Call { id: u64, call: Call },
    Finished { outcome: Result<Vec<WireResult>, String>, cpu_ms: u64 },
}

/// What the server sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToWorker {
    /// The library's bytes follow in the next frame.
    Load,
    /// `backend` is what the module's `ctx.backend_name()` answers.
    Run {
        init: WireInit,
        backend: String,
    },
    Answer {
        id: u64,
        results: Vec<WireResult>,
    },
    Cancel,
}

/// A module's call on its `Context`. `is_cancelled` is not a call: the server pushes `Cancel` and the worker
/// answers the module from a flag.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    Run { hosts: Vec<WireTarget>, argv: Vec<String> },
    Copy { hosts: Vec<WireTarget>, source: String, dest: String, mode: u32 },
}

// ---- framing ----

/// Encodes a message as one frame.
pub fn frame<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(message)?;
    Ok(raw_frame(&body))
}

/// Wraps bytes (the library) as one frame.
pub fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProtocolError> {
    Ok(serde_json::from_slice(body)?)
}

fn checked_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok(len)
}

/// Reads one frame, blocking (the worker's side).
pub fn read_frame(from: &mut impl Read) -> Result<Vec<u8>, ProtocolError> {
    let mut header = [0u8; 4];
    match from.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ProtocolError::Closed),
        Err(e) => return Err(e.into()),
    }
    let want = checked_len(header)?;
    let mut body = Vec::new();
    from.take(want as u64).read_to_end(&mut body)?;
    if body.len() != want {
        return Err(ProtocolError::Truncated { got: body.len(), want });
    }
    Ok(body)
}

/// Reads one frame from the runtime (the server's side).
pub async fn read_frame_async(from: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<Vec<u8>, ProtocolError> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    match from.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ProtocolError::Closed),
        Err(e) => return Err(e.into()),
    }
    let want = checked_len(header)?;
    let mut body = Vec::new();
    (&mut *from).take(want as u64).read_to_end(&mut body).await?;
    if body.len() != want {
        return Err(ProtocolError::Truncated { got: body.len(), want });
    }
    Ok(body)
}

/// Writes one message, blocking (the worker's side).
pub fn write_message<T: Serialize>(to: &mut impl Write, message: &T) -> Result<(), ProtocolError> {
    to.write_all(&frame(message)?)?;
    Ok(to.flush()?)
}

// ---- the contract's types as plain data ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireTarget {
    pub name: String,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireResult {
    pub host: String,
    pub status: WireStatus,
    pub rc: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum WireStatus {
    Ok,
    Failed,
    Unreachable,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireInit {
    pub module_id: u32,
    pub hosts: Vec<WireTarget>,
    pub params: Vec<(String, WireValue)>,
    pub settings: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum WireValue {
    Integer(i64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireMetadata {
    pub id: u32,
    pub name: String,
    pub description: String,
    pub version: String,
    pub backends: Vec<String>,
    pub params: Vec<WireParam>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireParam {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub kind: WireKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WireKind {
    Integer { min: i64, max: i64, default: Option<i64> },
    Choice { choices: Vec<String>, default: Option<String> },
    Text { pattern: String, max_len: u32, default: Option<String> },
}

impl From<&Target> for WireTarget {
    fn from(t: &Target) -> Self {
        WireTarget { name: t.name.to_string(), address: t.address.to_string() }
    }
}

impl From<WireTarget> for Target {
    fn from(t: WireTarget) -> Self {
        Target { name: t.name.into(), address: t.address.into() }
    }
}

impl From<HostResult> for WireResult {
    fn from(r: HostResult) -> Self {
        WireResult {
            host: r.host.into_string(),
            status: match r.status {
                HostStatus::Ok => WireStatus::Ok,
                HostStatus::Failed => WireStatus::Failed,
                HostStatus::Unreachable => WireStatus::Unreachable,
            },
            rc: r.rc.into_option(),
            stdout: r.stdout.into_string(),
            stderr: r.stderr.into_string(),
            duration_ms: r.duration_ms,
        }
    }
}

impl From<WireResult> for HostResult {
    fn from(r: WireResult) -> Self {
        HostResult {
            host: r.host.into(),
            status: match r.status {
                WireStatus::Ok => HostStatus::Ok,
                WireStatus::Failed => HostStatus::Failed,
                WireStatus::Unreachable => HostStatus::Unreachable,
            },
            rc: r.rc.map_or(ROption::RNone, ROption::RSome),
            stdout: r.stdout.into(),
            stderr: r.stderr.into(),
            duration_ms: r.duration_ms,
        }
    }
}

impl From<&InitRequest> for WireInit {
    fn from(init: &InitRequest) -> Self {
        WireInit {
            module_id: init.module_id,
            hosts: init.hosts.iter().map(WireTarget::from).collect(),
            params: init
                .params
                .iter()
                .map(|p| {
                    let value = match &p.value {
                        ParamValue::Integer(v) => WireValue::Integer(*v),
                        ParamValue::Text(v) => WireValue::Text(v.to_string()),
                    };
                    (p.name.to_string(), value)
                })
                .collect(),
            settings: init.settings.iter().map(|s| (s.key.to_string(), s.value.to_string())).collect(),
        }
    }
}

impl From<WireInit> for InitRequest {
    fn from(init: WireInit) -> Self {
        InitRequest {
            module_id: init.module_id,
            hosts: init.hosts.into_iter().map(Target::from).collect(),
            params: init
                .params
                .into_iter()
                .map(|(name, value)| Param {
                    name: name.into(),
                    value: match value {
                        WireValue::Integer(v) => ParamValue::Integer(v),
                        WireValue::Text(v) => ParamValue::Text(v.into()),
                    },
                })
                .collect(),
            settings: init.settings.into_iter().map(|(k, v)| Setting { key: k.into(), value: v.into() }).collect(),
        }
    }
}

impl From<&Metadata> for WireMetadata {
    fn from(m: &Metadata) -> Self {
        WireMetadata {
            id: m.id,
            name: m.name.to_string(),
            description: m.description.to_string(),
            version: m.version.to_string(),
            backends: m.backends.iter().map(|b| b.to_string()).collect(),
            params: m
                .params
                .iter()
                .map(|p| WireParam {
                    name: p.name.to_string(),
                    description: p.description.to_string(),
                    required: p.required,
                    kind: match &p.kind {
                        ParamKind::Integer { min, max, default } => {
                            WireKind::Integer { min: *min, max: *max, default: default.into_option() }
                        }
                        ParamKind::Choice { choices, default } => WireKind::Choice {
                            choices: choices.iter().map(|c| c.to_string()).collect(),
                            default: default.as_ref().into_option().map(|d| d.to_string()),
                        },
                        ParamKind::Text { pattern, max_len, default } => WireKind::Text {
                            pattern: pattern.to_string(),
                            max_len: *max_len,
                            default: default.as_ref().into_option().map(|d| d.to_string()),
                        },
                    },
                })
                .collect(),
        }
    }
}

impl From<WireMetadata> for Metadata {
    fn from(m: WireMetadata) -> Self {
        let option = |o: Option<String>| o.map_or(ROption::RNone, |s| ROption::RSome(RString::from(s)));
        Metadata {
            id: m.id,
            name: m.name.into(),
            description: m.description.into(),
            version: m.version.into(),
            backends: m.backends.into_iter().map(RString::from).collect(),
            params: m
                .params
                .into_iter()
                .map(|p| ParamSpec {
                    name: p.name.into(),
                    description: p.description.into(),
                    required: p.required,
                    kind: match p.kind {
                        WireKind::Integer { min, max, default } => {
                            ParamKind::Integer { min, max, default: default.map_or(ROption::RNone, ROption::RSome) }
                        }
                        WireKind::Choice { choices, default } => ParamKind::Choice {
                            choices: choices.into_iter().map(RString::from).collect::<RVec<_>>(),
                            default: option(default),
                        },
                        WireKind::Text { pattern, max_len, default } => {
                            ParamKind::Text { pattern: pattern.into(), max_len, default: option(default) }
                        }
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_the_trip() {
        let meta = Metadata::new(1003, "Uptime", "1.0.0")
            .description("<b>text</b>")
            .backends(&["local", "ssh"])
            .param(ParamSpec::integer("lines", 1, 500).default_integer(50))
            .param(ParamSpec::choice("service", &["nginx", "mysql"]).default_text("nginx"))
            .param(ParamSpec::text("path", "/[a-z/]+", 256).optional());
        let back: Metadata = decode::<WireMetadata>(&frame(&WireMetadata::from(&meta)).unwrap()[4..]).unwrap().into();
        assert_eq!(back, meta);
    }

    #[test]
    fn frames_are_bounded_and_complete() {
        let mut ok = std::io::Cursor::new(raw_frame(b"hello"));
        assert_eq!(read_frame(&mut ok).unwrap(), b"hello");
        assert!(matches!(read_frame(&mut ok), Err(ProtocolError::Closed)));
        let mut short = std::io::Cursor::new(raw_frame(b"hello")[..6].to_vec());
        assert!(matches!(read_frame(&mut short), Err(ProtocolError::Truncated { got: 2, want: 5 })));
        let mut huge = std::io::Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(matches!(read_frame(&mut huge), Err(ProtocolError::TooLarge(_))));
    }

    #[test]
    fn unknown_messages_are_errors() {
        assert!(decode::<FromWorker>(br#"{"type":"finished","outcome":{"Ok":[]},"cpu_ms":1,"x":1}"#).is_err());
        assert!(decode::<FromWorker>(br#"{"type":"shell","cmd":"rm -rf /"}"#).is_err());
        let ok: FromWorker = decode(br#"{"type":"finished","outcome":{"Err":"no"},"cpu_ms":1}"#).unwrap();
        assert!(matches!(ok, FromWorker::Finished { outcome: Err(_), .. }));
    }
}
