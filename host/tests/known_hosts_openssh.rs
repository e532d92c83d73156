//! Our known_hosts matcher against OpenSSH's, over the `known_hosts` fuzz target's corpus (`fuzz/corpus/`).
//!
//! Each corpus file is a line of host tokens, then a known_hosts file (the fuzz target's input format). For every
//! token, `ssh-keygen -F TOKEN -f FILE` says which lines OpenSSH finds for it; from those lines alone we work out
//! the verdict for each key and compare it with `KnownHosts::check`. This runs here rather than in the fuzz
//! target because a process per execution would slow that target a thousandfold; the corpus holds the seeds and
//! whatever inputs fuzzing found worth keeping (`cargo xtask fuzz known_hosts` and then `cargo fuzz cmin`).

use std::path::Path;
use std::process::Command;

use omserver::fuzzing::{parse_public_key_base64, KnownHosts, PublicKey, Verdict};

/// The fuzz target's keys: two ed25519, one ECDSA P-256.
const KEYS: [&str; 3] = [
    "AAAAC3NzaC1lZDI1NTE5AAAAILy5t1LI99HgDqe+ILI3RII3SWp1koPBd+Ov0PF2PRiS",
    "AAAAC3NzaC1lZDI1NTE5AAAAINE66DoWeyYrzPYSJygOeEsVkItytrBtqUcAAX5zeLBC",
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBw1I3KggbUPRWlfPORtXbH3pIx2ki4/eAQ8c+OltSoM4TWPAB0E7dpWYBHOzRJHx+NX/OtBLM3N1jzx5AfY/rc=",
];

/// A line OpenSSH found: its number, whether it is `@revoked`, and its key when russh reads it.
struct Found {
    line: usize,
    revoked: bool,
    key: Option<PublicKey>,
}

#[test]
fn our_matches_are_openssh_matches_over_the_fuzz_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/known_hosts");
    let mut entries: Vec<_> = std::fs::read_dir(&corpus).expect("the known_hosts corpus").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for entry in entries {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let (queries, file) = text.split_once('\n').unwrap_or((&text, ""));
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, file).unwrap();
        let ours = KnownHosts::parse(file);
        let lines: Vec<&str> = file.lines().collect();
        for token in queries.split(' ').filter(|t| !t.is_empty()).take(8) {
            let (address, port) = split_token(token);
            let found = openssh_finds(&path, token, &lines);
            let mut keys: Vec<PublicKey> = KEYS.iter().map(|k| parse_public_key_base64(k).unwrap()).collect();
            keys.extend(found.iter().filter_map(|f| f.key.clone()));
            for key in &keys {
                let expected = verdict_from(&found, key);
                assert_eq!(
                    ours.check(address, port, key),
                    expected,
                    "{}: token {token:?}, key {}; OpenSSH found lines {:?}",
                    entry.path().display(),
                    key.algorithm(),
                    found.iter().map(|f| f.line).collect::<Vec<_>>()
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 0, "no corpus in {}", corpus.display());
}

/// `[name]:port` or a bare name on port 22, as the fuzz target reads a token.
fn split_token(token: &str) -> (&str, u16) {
    if let Some(rest) = token.strip_prefix('[') {
        if let Some((name, port)) = rest.split_once("]:") {
            if let Ok(port) = port.parse() {
                return (name, port);
            }
        }
    }
    (token, 22)
}

/// The lines `ssh-keygen -F` reports (`# Host TOKEN found: line N [REVOKED|CA]`), certificate authorities left
/// out as our reader leaves them out.
fn openssh_finds(path: &Path, token: &str, lines: &[&str]) -> Vec<Found> {
    let output = Command::new("ssh-keygen")
        .args(["-F", token, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (OpenSSH) must be installed for this test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# Host ")?.split_once(" found: line ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let line: usize = words.next()?.parse().ok()?;
            let mark = words.next();
            if mark == Some("CA") {
                return None;
            }
            let key = lines.get(line - 1).and_then(|text| {
                let mut fields = text.split_whitespace();
                if text.trim_start().starts_with('@') {
                    fields.next();
                }
                parse_public_key_base64(fields.nth(2)?).ok()
            });
            Some(Found { line, revoked: mark == Some("REVOKED"), key })
        })
        .collect()
}

/// The verdict our rules give from the lines OpenSSH matched: a revoked line with this key wins, then any line
/// with this key, then lines with another key of its type.
fn verdict_from(found: &[Found], key: &PublicKey) -> Verdict {
    let readable = || found.iter().filter_map(|f| f.key.as_ref().map(|k| (f, k)));
    if let Some((f, _)) = readable().find(|(f, k)| f.revoked && k.key_data() == key.key_data()) {
        return Verdict::Revoked { line: f.line };
    }
    if readable().any(|(f, k)| !f.revoked && k.key_data() == key.key_data()) {
        return Verdict::Known;
    }
    let changed: Vec<usize> = readable()
        .filter(|(f, k)| !f.revoked && k.key_data() != key.key_data() && k.algorithm() == key.algorithm())
        .map(|(f, _)| f.line)
        .collect();
    if changed.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Changed { lines: changed }
    }
}
