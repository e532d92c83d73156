//! The `known_hosts_file`: OpenSSH's format, read and appended by us.
//!
//! Understood: plain patterns (`host`, `[host]:port`, comma lists, `*`/`?` wildcards, `!` negation), hashed
//! entries (`|1|base64 salt|base64 HMAC-SHA1(host)`), every key type russh parses, comments, and the `@revoked`
//! marker. `@cert-authority` lines are skipped (host certificates are not accepted). A line that cannot be parsed
//! is skipped with a warning rather than making every host unknown.
//!
//! Our own parser rather than russh's helper: that one splits on single spaces (tabs or double spaces break it),
//! fails the whole file on one bad line and does not know markers.

use std::{
    fs::OpenOptions,
    io::{Read, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
    path::Path,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use russh::keys::{HashAlg, PublicKey};

/// How a host's presented key compares with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An entry for this host holds exactly this key.
    Known,
    /// No entry for this host holds a key of this type.
    Unknown,
    /// An entry for this host holds a *different* key of the same type (line numbers from 1).
    Changed { lines: Vec<usize> },
    /// The key is marked `@revoked` for this host.
    Revoked { line: usize },
}

#[derive(Debug)]
struct Entry {
    line: usize,
    revoked: bool,
    patterns: Vec<Pattern>,
    key: PublicKey,
}

#[derive(Debug)]
enum Pattern {
    Plain { glob: String, negated: bool },
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// A parsed known-hosts file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// How OpenSSH names a host in the file: `address` on port 22, `[address]:port` otherwise.
pub fn host_token(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_owned()
    } else {
        format!("[{address}]:{port}")
    }
}

/// The line that records `key` for this host (plain, not hashed: an operator can read what was trusted).
pub fn line_for(address: &str, port: u16, key: &PublicKey) -> String {
    let key_text = key.to_openssh().unwrap_or_default();
    // `to_openssh` includes the key's comment, if any; known_hosts wants "type base64".
    let mut words = key_text.split_whitespace();
    let (kind, data) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    format!("{} {kind} {data}", host_token(address, port))
}

/// `SHA256:…`, as `ssh-keygen -l` and OpenSSH's own messages print it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl KnownHosts {
    pub fn parse(text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(Some((revoked, patterns, key))) => {
                    entries.push(Entry { line: i + 1, revoked, patterns, key });
                }
                Ok(None) => {}
                Err(problem) => tracing::warn!(line = i + 1, problem, "skipping a known_hosts line"),
            }
        }
        KnownHosts { entries }
    }

    /// Reads the file; a missing file is an empty one (every host unknown).
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHosts::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::default()),
            Err(e) => Err(e),
        }
    }

    /// Entries read (lines that are not comments, blank or unreadable).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn check(&self, address: &str, port: u16, key: &PublicKey) -> Verdict {
        let token = host_token(address, port);
        let mut changed = Vec::new();
        let mut known = false;
        for entry in self.entries.iter().filter(|e| matches(&e.patterns, &token)) {
            let same_key = entry.key.key_data() == key.key_data();
            if entry.revoked {
                if same_key {
                    return Verdict::Revoked { line: entry.line };
                }
            } else if same_key {
                known = true;
            } else if entry.key.algorithm() == key.algorithm() {
                changed.push(entry.line);
            }
        }
        match (known, changed.is_empty()) {
            (true, _) => Verdict::Known,
            (false, true) => Verdict::Unknown,
            (false, false) => Verdict::Changed { lines: changed },
        }
    }
}

type ParsedLine = (bool, Vec<Pattern>, PublicKey);

fn parse_line(line: &str) -> Result<Option<ParsedLine>, String> {
    let mut words = line.split_whitespace();
    let mut first = words.next().ok_or("empty line")?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            "cert-authority" => return Ok(None),
            other => return Err(format!("unknown marker @{other}")),
        }
        first = words.next().ok_or("no host patterns after the marker")?;
    }
    let _kind = words.next().ok_or("no key type")?;
    let data = words.next().ok_or("no key data")?;
    let key = russh::keys::parse_public_key_base64(data).map_err(|e| format!("unreadable key: {e}"))?;
    let patterns = first.split(',').map(parse_pattern).collect::<Result<Vec<_>, _>>()?;
    Ok(Some((revoked, patterns, key)))
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    if let Some(hashed) = text.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|').ok_or("a hashed entry needs |1|salt|hash")?;
        let decode = |part: &str| STANDARD.decode(part).map_err(|e| format!("bad base64 in a hashed entry: {e}"));
        return Ok(Pattern::Hashed { salt: decode(salt)?, hash: decode(hash)? });
    }
    match text.strip_prefix('!') {
        Some(rest) => Ok(Pattern::Plain { glob: rest.to_owned(), negated: true }),
        None => Ok(Pattern::Plain { glob: text.to_owned(), negated: false }),
    }
}

/// OpenSSH's rule: a negated pattern that matches excludes the line; otherwise any positive match counts.
fn matches(patterns: &[Pattern], token: &str) -> bool {
    let mut hit = false;
    for pattern in patterns {
        match pattern {
            Pattern::Plain { glob, negated } if glob_match(glob.as_bytes(), token.as_bytes()) => {
                if *negated {
                    return false;
                }
                hit = true;
            }
            Pattern::Plain { .. } => {}
            Pattern::Hashed { salt, hash } => {
                // `new_from_slice` accepts a key of any length for HMAC, so this never fails in practice.
                if let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) {
                    mac.update(token.as_bytes());
                    hit |= mac.verify_slice(hash).is_ok();
                }
            }
        }
    }
    hit
}

/// `*` any run, `?` one character, the rest literal (case-insensitive, as host names are).
fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    match (glob.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => glob_match(rest, text) || (!text.is_empty() && glob_match(glob, &text[1..])),
        (Some((b'?', rest)), Some((_, more))) => glob_match(rest, more),
        (Some((g, rest)), Some((t, more))) if g.eq_ignore_ascii_case(t) => glob_match(rest, more),
        _ => false,
    }
}

/// Appends `line` to the file (created with mode 0644 if missing) unless the very same line is there already.
///
/// Serialised twice: a process-wide mutex for the hosts of one call (accept-new connects many in parallel) and an
/// exclusive `flock` for other processes (an `omserver hosts trust` while the server runs). Blocking: call it from
/// a blocking thread.
pub fn append(path: &Path, line: &str) -> std::io::Result<()> {
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _in_process = IN_PROCESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let opened = OpenOptions::new().read(true).append(true).create(true).open(path)?;
    let _lock = Flock::exclusive(&opened)?;
    // `&File` reads and writes too; the lock keeps its own shared borrow.
    let mut file = &opened;
    let mut existing = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut existing)?;
    if existing.lines().any(|l| l.trim() == line.trim()) {
        return Ok(());
    }
    let separator = if existing.is_empty() || existing.ends_with('\n') { "" } else { "\n" };
    file.write_all(format!("{separator}{}\n", line.trim()).as_bytes())?;
    file.sync_data()
}

/// An exclusive advisory lock on an open file, released when dropped.
struct Flock<'a>(&'a std::fs::File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a std::fs::File) -> std::io::Result<Flock<'a>> {
        // SAFETY: flock takes a file descriptor that stays open for the lifetime of `file`, borrowed by the guard.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Flock(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking a descriptor we locked.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two real ed25519 public keys (generated with ssh-keygen for these tests).
    const ED_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILy5t1LI99HgDqe+ILI3RII3SWp1koPBd+Ov0PF2PRiS";
    const ED_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE66DoWeyYrzPYSJygOeEsVkItytrBtqUcAAX5zeLBC";

    fn key(text: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(text.split(' ').nth(1).unwrap()).unwrap()
    }

    /// `|1|salt|hash` for `token`, computed the way OpenSSH does.
    fn hashed(token: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(token.as_bytes());
        format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn plain_entries_by_port_and_pattern() {
        let file = format!("# comment\n[127.0.0.2]:2222 {ED_A}\n127.0.0.3\t{ED_A}\n10.*,!10.0.0.9 {ED_A}\n");
        let hosts = KnownHosts::parse(&file);
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts.check("127.0.0.2", 2222, &key(ED_A)), Verdict::Known);
        assert_eq!(hosts.check("127.0.0.2", 22, &key(ED_A)), Verdict::Unknown, "the port is part of the name");
        assert_eq!(hosts.check("127.0.0.3", 22, &key(ED_A)), Verdict::Known, "a tab separates fields too");
        assert_eq!(hosts.check("10.1.2.3", 22, &key(ED_A)), Verdict::Known);
        assert_eq!(hosts.check("10.0.0.9", 22, &key(ED_A)), Verdict::Unknown, "negated");
    }

    #[test]
    fn a_different_key_of_the_same_type_is_a_change() {
        let file = format!("[127.0.0.2]:2222 {ED_A}\n");
        let hosts = KnownHosts::parse(&file);
        assert_eq!(hosts.check("127.0.0.2", 2222, &key(ED_B)), Verdict::Changed { lines: vec![1] });
        let both = KnownHosts::parse(&format!("{file}[127.0.0.2]:2222 {ED_B}\n"));
        assert_eq!(both.check("127.0.0.2", 2222, &key(ED_B)), Verdict::Known, "one matching entry is enough");
    }

    #[test]
    fn hashed_entries_match_only_their_host() {
        let file = format!("{} {ED_A}\n", hashed("[127.0.0.5]:2222", b"0123456789abcdefghij"));
        let hosts = KnownHosts::parse(&file);
        assert_eq!(hosts.check("127.0.0.5", 2222, &key(ED_A)), Verdict::Known);
        assert_eq!(hosts.check("127.0.0.6", 2222, &key(ED_A)), Verdict::Unknown);
        assert_eq!(hosts.check("127.0.0.5", 2222, &key(ED_B)), Verdict::Changed { lines: vec![1] });
    }

    #[test]
    fn revoked_keys_and_bad_lines() {
        let file = format!("garbage line here\n@cert-authority * {ED_B}\n@revoked * {ED_A}\n* {ED_A}\n");
        let hosts = KnownHosts::parse(&file);
        assert_eq!(hosts.len(), 2, "the garbage and CA lines are skipped");
        assert_eq!(hosts.check("x", 22, &key(ED_A)), Verdict::Revoked { line: 3 });
    }

    #[test]
    fn a_recorded_line_is_read_back_and_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let line = line_for("127.0.0.9", 2222, &key(ED_A));
        assert_eq!(line, format!("[127.0.0.9]:2222 {ED_A}"));
        append(&path, &line).unwrap();
        append(&path, &line).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(KnownHosts::load(&path).unwrap().check("127.0.0.9", 2222, &key(ED_A)), Verdict::Known);
        assert!(fingerprint(&key(ED_A)).starts_with("SHA256:"));
    }

    #[test]
    fn parallel_appends_do_not_garble_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "no-newline-at-end").unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || append(&path, &line_for(&format!("127.0.1.{i}"), 2222, &key(ED_A))))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let hosts = KnownHosts::load(&path).unwrap();
        assert_eq!(hosts.len(), 16, "{}", std::fs::read_to_string(&path).unwrap());
    }
}
