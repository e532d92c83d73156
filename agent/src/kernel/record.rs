//! One audit record's text: `audit(<secs>.<ms>:<serial>): key=value …`, and its values.
//!
//! The kernel prints a value it cannot trust (a path, an argument, `comm`) in double quotes when it is plain
//! printable ASCII without a quote or space, and otherwise as upper-case hex of its bytes. No I/O here.

/// Record types used (`<linux/audit.h>`).
pub const SYSCALL: u16 = 1300;
/// A path the syscall looked up (for exec: the file tried).
pub const PATH: u16 = 1302;
/// The working directory.
pub const CWD: u16 = 1307;
/// execve's arguments (one or more records).
pub const EXECVE: u16 = 1309;
/// End of a multi-record event.
pub const EOE: u16 = 1320;
/// The process's command line after the syscall (hex, NUL-separated, cut at 128 bytes).
pub const PROCTITLE: u16 = 1327;

/// The header of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Unix seconds.
    pub secs: u64,
    /// Milliseconds.
    pub millis: u32,
    /// The event's serial: every record of one event shares it.
    pub serial: u64,
}

/// Splits `audit(1764767100.123:456): rest` into its stamp and the rest.
pub fn parse_stamp(text: &str) -> Option<(Stamp, &str)> {
    let rest = text.strip_prefix("audit(")?;
    let close = rest.find("):")?;
    let (time, serial) = rest[..close].split_once(':')?;
    let (secs, millis) = time.split_once('.')?;
    let stamp = Stamp { secs: secs.parse().ok()?, millis: millis.parse().ok()?, serial: serial.parse().ok()? };
    Some((stamp, rest[close + 2..].trim_start()))
}

/// The `key=value` pairs of a record body, values raw (quotes kept). A value in single quotes (user-space
/// messages' `msg='…'`) is taken whole.
pub fn fields(body: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = body.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let end = match after.chars().next() {
            Some(q @ ('"' | '\'')) => after[1..].find(q).map_or(after.len(), |i| i + 2),
            _ => after.find(' ').unwrap_or(after.len()),
        };
        out.push((key, &after[..end]));
        rest = after[end..].trim_start();
    }
    out
}

/// The first value of `key`.
pub fn get<'a>(fields: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// An untrusted string's bytes: the quoted text, or the hex decoded. `(null)` and anything else is `None`.
pub fn decode(value: &str) -> Option<Vec<u8>> {
    if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return Some(inner.as_bytes().to_vec());
    }
    if value.is_empty() || !value.len().is_multiple_of(2) || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..value.len()).step_by(2).map(|i| u8::from_str_radix(&value[i..i + 2], 16).ok()).collect()
}

/// A decimal field.
pub fn number<T: std::str::FromStr>(fields: &[(&str, &str)], key: &str) -> Option<T> {
    get(fields, key)?.parse().ok()
}

/// The arguments of an event's EXECVE records, joined in order: `argc=N a0=… a1_len=L a1[0]=… a1[1]=…`.
/// An argument the kernel left out (it can drop the tail of a huge argv) ends the list.
pub fn execve_args(bodies: &[String]) -> Vec<Vec<u8>> {
    let all: Vec<(&str, &str)> = bodies.iter().flat_map(|b| fields(b)).collect();
    let argc: usize = number(&all, "argc").unwrap_or(0);
    let mut args = Vec::with_capacity(argc.min(4096));
    for i in 0..argc {
        let whole = format!("a{i}");
        if let Some(value) = get(&all, &whole) {
            match decode(value) {
                Some(arg) => args.push(arg),
                None => break,
            }
            continue;
        }
        // Split: a{i}[0], a{i}[1], … each decoded on its own.
        let prefix = format!("a{i}[");
        let mut arg = Vec::new();
        let mut found = false;
        for (_, value) in all.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            arg.extend(decode(value).unwrap_or_default());
            found = true;
        }
        if !found {
            break;
        }
        args.push(arg);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_fields() {
        let text = "audit(1764767100.123:456): arch=c000003e syscall=59 success=yes exit=0 comm=\"ls\" \
                    exe=2F746D702F6120622F6C73 key=\"omaudit-exec\" subj=unconfined msg='op=x a=b'";
        let (stamp, body) = parse_stamp(text).unwrap();
        assert_eq!(stamp, Stamp { secs: 1_764_767_100, millis: 123, serial: 456 });
        let f = fields(body);
        assert_eq!(get(&f, "arch"), Some("c000003e"));
        assert_eq!(number::<u32>(&f, "syscall"), Some(59));
        assert_eq!(decode(get(&f, "comm").unwrap()).unwrap(), b"ls");
        assert_eq!(decode(get(&f, "exe").unwrap()).unwrap(), b"/tmp/a b/ls");
        assert_eq!(get(&f, "msg"), Some("'op=x a=b'"));
        assert_eq!(decode("(null)"), None);
        assert!(parse_stamp("audit(1.2): x").is_none());
    }

    #[test]
    fn execve_arguments_quoted_hex_and_split() {
        // "a b" and "q\"" are hex; a1 is split over two records.
        let records = vec![
            "argc=4 a0=\"printf\" a1_len=6 a1[0]=616263".to_owned(),
            "a1[1]=\"def\" a2=6120620A71FF a3=\"\"".to_owned(),
        ];
        let args = execve_args(&records);
        assert_eq!(args, vec![b"printf".to_vec(), b"abcdef".to_vec(), b"a b\nq\xff".to_vec(), Vec::new()]);
        // argc larger than what arrived: the list ends where the records do.
        assert_eq!(execve_args(&["argc=3 a0=\"x\"".to_owned()]), vec![b"x".to_vec()]);
    }
}
