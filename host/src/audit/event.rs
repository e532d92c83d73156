//! What an audit event is on the way in, and the checks every event passes before it is stored: the legacy GET's
//! parameters and the agent's JSON both end as an [`Incoming`] or a one-line reason.

use std::net::IpAddr;

use serde::Deserialize;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The original agent's `GET /omaudit/omaudit_pull/`.
    Legacy,
    /// `omaudit-agent`'s `POST /api/audit/events`: a history line.
    Agent,
    /// `omaudit-agent watch`'s `POST /api/audit/events`: an exec the kernel audited.
    Execve,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Legacy => "legacy",
            Source::Agent => "agent",
            Source::Execve => "execve",
        }
    }
}

/// What an exec adds to an event (`source = "execve"`), checked.
#[derive(Debug, Clone, Default)]
pub struct ExecFields {
    /// The argument vector as compact JSON.
    pub argv: Option<String>,
    pub cwd: Option<String>,
    pub exe: Option<String>,
    pub exit_code: Option<i64>,
    pub pid: Option<i64>,
    pub ppid: Option<i64>,
    pub euid: Option<i64>,
    pub auid: Option<i64>,
}

/// A validated event for a known host.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub host_id: i64,
    pub ip: String,
    pub history_id: i64,
    pub user: String,
    pub login_user: Option<String>,
    pub tty: Option<String>,
    /// "YYYY-MM-DD HH:MM:SS", the host's local time.
    pub datetime: String,
    pub command: String,
    pub source: Source,
    pub stream: Option<String>,
    pub seq: Option<i64>,
    /// The kernel's audit session id, when the agent sent it.
    pub session: Option<i64>,
    pub exec: ExecFields,
}

/// The five parameters of the original agent's request, decoded but not yet checked.
#[derive(Debug, Default)]
pub struct LegacyParams {
    pub history_id: Option<String>,
    pub history_ip: Option<String>,
    pub history_user: Option<String>,
    pub history_datetime: Option<String>,
    pub history_command: Option<String>,
}

/// A reason an event or request is refused, said in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, reason: reason.into() }
}

/// Decodes a raw query string strictly: percent-escapes must decode to UTF-8 (`+` is a space, as the original's
/// `urllib.quote` left it). Unknown parameters are ignored, as Django did; a repeated one is an error.
pub fn parse_legacy_query(raw: &str) -> Result<LegacyParams, Invalid> {
    let mut params = LegacyParams::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "history_id" => &mut params.history_id,
            "history_ip" => &mut params.history_ip,
            "history_user" => &mut params.history_user,
            "history_datetime" => &mut params.history_datetime,
            "history_command" => &mut params.history_command,
            _ => continue,
        };
        let field = legacy_field(key);
        let bytes: Vec<u8> =
            percent_decode(&value.replace('+', " ")).ok_or_else(|| invalid(field, "bad percent-escape"))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid(field, "is not valid UTF-8"))?;
        if slot.replace(text).is_some() {
            return Err(invalid(field, "given twice"));
        }
    }
    Ok(params)
}

fn legacy_field(key: &str) -> &'static str {
    match key {
        "history_id" => "history_id",
        "history_ip" => "history_ip",
        "history_user" => "history_user",
        "history_datetime" => "history_datetime",
        _ => "history_command",
    }
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Field limits shared by both ingest paths.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_command_bytes: usize,
}

pub fn check_history_id(text: &str) -> Result<i64, Invalid> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > 18 || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("history_id", "must be a whole number"));
    }
    trimmed.parse().map_err(|_| invalid("history_id", "must be a whole number"))
}

/// A user name as bash prints it: 1–64 characters, no control characters or spaces.
pub fn check_user(field: &'static str, text: String) -> Result<String, Invalid> {
    if text.is_empty() || text.len() > 64 || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(field, "must be 1-64 characters without spaces or control characters"));
    }
    Ok(text)
}

/// "YYYY-MM-DD HH:MM:SS" with a real calendar date and time.
pub fn check_datetime(field: &'static str, text: String) -> Result<String, Invalid> {
    let bad = || invalid(field, format!("{text:?} is not a date and time like 2014-06-07 22:05:56"));
    let b = text.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = &text[r];
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return Err(bad());
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if y < 1970 || d == 0 || d > days || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    Ok(text)
}

pub fn check_command(field: &'static str, text: String, limits: Limits) -> Result<String, Invalid> {
    if text.trim().is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if text.len() > limits.max_command_bytes {
        return Err(invalid(
            field,
            format!("is {} bytes, more than the {} allowed", text.len(), limits.max_command_bytes),
        ));
    }
    if text.contains('\0') {
        // PostgreSQL cannot store NUL in text, and no shell command line contains one.
        return Err(invalid(field, "contains a NUL byte"));
    }
    Ok(text)
}

/// An address in canonical form (`::ffff:10.0.0.1` and `10.0.0.1` are one host).
pub fn canonical_ip(field: &'static str, text: &str) -> Result<String, Invalid> {
    let ip: IpAddr = text.trim().parse().map_err(|_| invalid(field, format!("{text:?} is not an IP address")))?;
    Ok(canonical(ip).to_string())
}

pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// One event as `omaudit-agent` sends it (see agent/README.md).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct AgentEvent {
    pub stream: String,
    pub seq: i64,
    pub history_id: i64,
    pub user: String,
    #[serde(default)]
    pub login_user: Option<String>,
    #[serde(default)]
    pub uid: Option<i64>,
    #[serde(default)]
    pub tty: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    pub time: String,
    pub command: String,
    /// `history` (the default) or `execve`.
    #[serde(default)]
    pub source: Option<String>,
    /// The kernel's audit session id.
    #[serde(default)]
    pub session: Option<i64>,
    /// execve: the argument vector; each argument a string, or `{"hex": "…"}` for bytes that are not UTF-8.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub argv: Option<serde_json::Value>,
    /// execve: the working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// execve: the executable.
    #[serde(default)]
    pub exe: Option<String>,
    /// execve: 0, or the negative errno of a failed exec.
    #[serde(default)]
    pub exit: Option<i64>,
    /// execve: process id, parent process id, effective uid, login uid.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub ppid: Option<u32>,
    #[serde(default)]
    pub euid: Option<u32>,
    #[serde(default)]
    pub auid: Option<u32>,
}

/// Events an agent lost (its spool overflowed), reported so the loss is never silent.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct AgentGap {
    #[schema(pattern = r"^[A-Za-z0-9-]{1,64}$")]
    pub stream: String,
    /// The first sequence number lost; `to_seq` the last (not before `from_seq`).
    #[schema(minimum = 1)]
    pub from_seq: i64,
    #[schema(minimum = 1)]
    pub to_seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBatch {
    #[serde(default)]
    pub events: Vec<AgentEvent>,
    #[serde(default)]
    pub gaps: Vec<AgentGap>,
}

pub fn check_stream(text: String) -> Result<String, Invalid> {
    valid_stream(&text).map(|()| text)
}

fn valid_stream(text: &str) -> Result<(), Invalid> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(invalid("stream", "must be 1-64 letters, digits or '-'"));
    }
    Ok(())
}

/// Checks an agent's event for `host_id` (from its token: the address it claims is not trusted).
/// Checks one agent event, taking its strings over rather than copying them (this runs for every event of every
/// batch). A refused event gives its stream back with the reason, for the answer.
pub fn check_agent_event(
    host_id: i64,
    host_ip: &str,
    mut e: AgentEvent,
    limits: Limits,
) -> Result<Incoming, (Invalid, String)> {
    let stream = std::mem::take(&mut e.stream);
    match valid_stream(&stream).and_then(|()| check_agent_fields(host_id, host_ip, e, limits)) {
        Ok(incoming) => Ok(Incoming { stream: Some(stream), ..incoming }),
        Err(why) => Err((why, stream)),
    }
}

/// Everything of an agent event but its stream.
fn check_agent_fields(host_id: i64, host_ip: &str, e: AgentEvent, limits: Limits) -> Result<Incoming, Invalid> {
    if e.seq < 1 {
        return Err(invalid("seq", "must be 1 or more"));
    }
    if e.history_id < 0 {
        return Err(invalid("history_id", "must be 0 or more"));
    }
    let optional = |field: &'static str, v: Option<String>| -> Result<Option<String>, Invalid> {
        match v {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) if s.len() <= 64 && !s.chars().any(char::is_control) => Ok(Some(s)),
            Some(_) => Err(invalid(field, "must be at most 64 characters without control characters")),
        }
    };
    let login_user = optional("login_user", e.login_user)?.map(|u| match e.uid {
        Some(uid) => format!("{u}({uid})"),
        None => u,
    });
    // Stored as `name(uid)` in a 64-character column: check the stored form, or the whole batch fails to insert.
    if login_user.as_ref().is_some_and(|u| u.len() > 64) {
        return Err(invalid("login_user", "with its uid must be at most 64 characters"));
    }
    let source = match e.source.as_deref() {
        None | Some("history") => Source::Agent,
        Some("execve") => Source::Execve,
        Some(_) => return Err(invalid("source", "must be history or execve")),
    };
    let session = match e.session {
        Some(s) if !(0..=i64::from(u32::MAX)).contains(&s) => return Err(invalid("session", "must be a 32-bit id")),
        s => s,
    };
    let exec = if source == Source::Execve {
        ExecFields {
            argv: Some(check_argv(e.argv, limits)?),
            cwd: check_path("cwd", e.cwd)?,
            exe: check_path("exe", e.exe)?,
            exit_code: e.exit,
            pid: e.pid.map(i64::from),
            ppid: e.ppid.map(i64::from),
            euid: e.euid.map(i64::from),
            auid: e.auid.map(i64::from),
        }
    } else {
        ExecFields::default()
    };
    Ok(Incoming {
        host_id,
        ip: host_ip.to_owned(),
        history_id: e.history_id,
        user: check_user("user", e.user)?,
        login_user,
        tty: optional("tty", e.tty)?,
        datetime: check_datetime("time", e.time)?,
        command: check_command("command", e.command, limits)?,
        source,
        stream: None,
        seq: Some(e.seq),
        session,
        exec,
    })
}

/// An exec's argument vector: a non-empty list of strings or `{"hex": "…"}` objects, kept as compact JSON. The
/// arguments stay a vector: nothing ever joins them into a command to run.
fn check_argv(argv: Option<serde_json::Value>, limits: Limits) -> Result<String, Invalid> {
    use serde_json::Value;
    let bad = |reason: &str| invalid("argv", reason);
    let Some(Value::Array(items)) = argv else { return Err(bad("must be a list of arguments")) };
    if items.is_empty() {
        return Err(bad("must hold at least one argument"));
    }
    for item in &items {
        let ok = match item {
            // PostgreSQL cannot store NUL in text, and no argument contains one.
            Value::String(s) => !s.contains('\0'),
            Value::Object(o) => {
                o.len() == 1
                    && o.get("hex").and_then(Value::as_str).is_some_and(|h| {
                        h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    })
            }
            _ => false,
        };
        if !ok {
            return Err(bad("each argument must be a string without NUL or {\"hex\": lowercase hex}"));
        }
    }
    let text = Value::Array(items).to_string();
    // Hex doubles the bytes; allow that on top of the command limit.
    if text.len() > 2 * limits.max_command_bytes + 1024 {
        return Err(bad(&format!("is {} bytes, more than allowed", text.len())));
    }
    Ok(text)
}

fn check_path(field: &'static str, path: Option<String>) -> Result<Option<String>, Invalid> {
    match path {
        None => Ok(None),
        Some(p) if p.len() <= 4096 && !p.contains('\0') => Ok(Some(p)),
        Some(_) => Err(invalid(field, "must be at most 4096 bytes without NUL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_command_bytes: 65536 };

    #[test]
    fn the_original_agents_query_decodes() {
        // What the Python agent sent: urllib.quote of the command, the datetime with %20.
        let raw = "history_id=173&history_ip=127.0.0.1&history_user=root&history_datetime=2014-06-07%2022:05:56\
                   &history_command=ls+-l+%2Ftmp%2F%2A+%7C+grep+%27a+b%27";
        let p = parse_legacy_query(raw).unwrap();
        assert_eq!(p.history_command.as_deref(), Some("ls -l /tmp/* | grep 'a b'"));
        assert_eq!(p.history_datetime.as_deref(), Some("2014-06-07 22:05:56"));
        assert_eq!(p.history_id.as_deref(), Some("173"));
    }

    #[test]
    fn bad_escapes_and_invalid_utf8_are_refused() {
        assert_eq!(parse_legacy_query("history_command=%ff%fe").unwrap_err().reason, "is not valid UTF-8");
        assert_eq!(parse_legacy_query("history_user=%zz").unwrap_err().reason, "bad percent-escape");
        assert_eq!(parse_legacy_query("history_id=1&history_id=2").unwrap_err().reason, "given twice");
    }

    #[test]
    fn datetimes_must_be_real() {
        assert!(check_datetime("d", "2014-06-07 22:05:56".into()).is_ok());
        assert!(check_datetime("d", "2024-02-29 00:00:00".into()).is_ok());
        for bad in
            ["2023-02-29 00:00:00", "2014-13-01 00:00:00", "2014-06-07T22:05:56", "2014-06-07 24:00:00", "", "1; id"]
        {
            assert!(check_datetime("d", bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_are_kept_whole_within_the_limit() {
        let html = "<script>alert(1)</script>'; DROP TABLE server_history; --";
        assert_eq!(check_command("c", html.into(), LIMITS).unwrap(), html);
        assert!(check_command("c", "x".repeat(65536), LIMITS).is_ok());
        assert!(check_command("c", "x".repeat(65537), LIMITS).unwrap_err().reason.contains("65537 bytes"));
        assert!(check_command("c", "  ".into(), LIMITS).is_err());
        assert!(check_command("c", "a\0b".into(), LIMITS).is_err());
    }

    #[test]
    fn addresses_are_canonical() {
        assert_eq!(canonical_ip("ip", "::ffff:127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(canonical_ip("ip", "2001:0db8::0001").unwrap(), "2001:db8::1");
        assert!(canonical_ip("ip", "127.0.0.1; id").is_err());
    }
}
