//! known_hosts (`host/src/backends/ssh/known_hosts.rs`).
//!
//! Input: a first line of host tokens to look up (`name` or `[name]:port`, separated by spaces), then the file.
//! The same format is what `host/tests/known_hosts_openssh.rs` feeds to `ssh-keygen -F` over this target's
//! corpus: that comparison with OpenSSH runs there, once per corpus file, because a process per execution would
//! make this target a thousand times slower.
//!
//! Properties here: any file parses (bad lines skipped) and any lookup answers, never a panic; the line we write
//! for a host (`line_for`) is read back as that host's key whatever else the file holds, unless that key is
//! `@revoked` for the host; a hashed entry `|1|salt|HMAC-SHA1(token)` matches its token.

#![no_main]

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use omserver::fuzzing::{host_token, line_for, parse_public_key_base64, KnownHosts, PublicKey, Verdict};

/// Real keys (made with ssh-keygen): two ed25519, one ECDSA P-256.
const KEYS: [&str; 3] = [
    "AAAAC3NzaC1lZDI1NTE5AAAAILy5t1LI99HgDqe+ILI3RII3SWp1koPBd+Ov0PF2PRiS",
    "AAAAC3NzaC1lZDI1NTE5AAAAINE66DoWeyYrzPYSJygOeEsVkItytrBtqUcAAX5zeLBC",
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBw1I3KggbUPRWlfPORtXbH3pIx2ki4/eAQ8c+OltSoM4TWPAB0E7dpWYBHOzRJHx+NX/OtBLM3N1jzx5AfY/rc=",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (queries, file) = text.split_once('\n').unwrap_or((text, ""));
    let keys: Vec<PublicKey> = KEYS.iter().map(|k| parse_public_key_base64(k).expect("a real key")).collect();
    let hosts = KnownHosts::parse(file);
    for token in queries.split(' ').filter(|t| !t.is_empty()).take(8) {
        let (address, port) = split_token(token);
        for key in &keys {
            let before = hosts.check(address, port, key);
            // Only names a host can have: a written line cannot carry spaces, and `#`/`@`/`|` start other things.
            if address.is_empty() || address.contains(|c: char| c.is_whitespace() || c == ',' || c == '#') {
                continue;
            }
            if address.starts_with(['@', '|', '!']) {
                continue;
            }
            let written = format!("{file}\n{}\n", line_for(address, port, key));
            let after = KnownHosts::parse(&written).check(address, port, key);
            match (&before, &after) {
                (Verdict::Revoked { .. }, Verdict::Revoked { .. }) => {}
                (Verdict::Revoked { .. }, other) => panic!("a revoked key became {other:?}"),
                (_, Verdict::Known) => {}
                (_, other) => panic!("{token}: the line we wrote reads back as {other:?}"),
            }
            let hashed =
                format!("{}\n{} {}\n", file, hashed(&host_token(address, port), token.as_bytes()), key_line(key));
            match KnownHosts::parse(&hashed).check(address, port, key) {
                Verdict::Known | Verdict::Revoked { .. } => {}
                other => panic!("{token}: a hashed entry reads back as {other:?}"),
            }
        }
    }
});

/// `[name]:port` or a bare name on port 22, as the tests' lookups are written.
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

fn key_line(key: &PublicKey) -> String {
    let text = key.to_openssh().unwrap_or_default();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn hashed(token: &str, salt: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(token.as_bytes());
    format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()))
}
