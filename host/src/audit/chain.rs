//! The per-host hash chain: each row carries the MAC of its own fields and of the row before it, under a key
//! derived from the server's secret. Deleting, inserting or editing a row in the database breaks the chain at
//! that point, and forging a consistent chain needs the key, which the database does not hold.
//! `audit_chain` keeps each host's head, so deleting the newest rows shows too.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{AuditRow, Store, StoreError};

/// The `prev_hash` of a host's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The identity that makes a resend a duplicate, from the row's own fields. Agent events: the host, stream and
/// sequence number they were sent with. Legacy events have none, so the history line itself: an idle prompt
/// re-sends the same line. Not stored: the writer and `verify` compute it (it is part of the MAC).
pub fn dedup_key(r: &AuditRow) -> String {
    let mut h = Sha256::new();
    let mut text = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    match (r.source.as_str(), &r.stream, r.seq) {
        // An exec from the same agent stream is keyed like a history line: (stream, seq) is unique per agent.
        ("agent" | "execve", Some(stream), Some(seq)) => {
            text("agent");
            text(stream);
            h.update(seq.to_le_bytes());
        }
        _ => {
            text("legacy");
            text(&r.history_user);
            text(&r.history_datetime);
            text(&r.history_command);
            h.update(r.history_id.to_le_bytes());
        }
    }
    h.update(r.host_id.to_le_bytes());
    lower_hex(&h.finalize())
}

/// The chain key, keyed once: sealing a row clones the keyed state instead of hashing the key again.
#[derive(Clone)]
pub struct ChainKey(Hmac<Sha256>);

impl ChainKey {
    pub fn new(key: &[u8]) -> ChainKey {
        ChainKey(<Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key")))
    }
}

impl ChainKey {
    /// The MAC of a record that is not a row (an archive file's end, how far a host was archived): a purpose,
    /// then each part length-prefixed, so that no two records of different purposes or parts encode alike.
    pub fn mark(&self, purpose: &str, parts: &[&[u8]]) -> String {
        let mut m = self.0.clone();
        for part in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
            m.update(&(part.len() as u64).to_le_bytes());
            m.update(part);
        }
        lower_hex(&m.finalize().into_bytes())
    }
}

/// Lower-case hex, as `hex::encode` writes it, without its per-character iterator (measured: 4 % of the writer).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The MAC of a row: the previous row's hash, the row's dedup key, and every field but `id` and `row_hash`, in a
/// fixed order, each length-prefixed (and optional ones marked present or absent) so that no two rows encode
/// alike. Used to seal a new row and to check a stored one. Fed field by field: this runs once per stored event
/// on the writer's hot path.
pub fn seal(key: &ChainKey, r: &AuditRow, prev_hash: &str, dedup_key: &str) -> String {
    let mut m = key.0.clone();
    let mut text = |s: &str| {
        m.update(&(s.len() as u64).to_le_bytes());
        m.update(s.as_bytes());
    };
    text(prev_hash);
    text(&r.history_ip);
    text(&r.history_user);
    text(&r.history_datetime);
    text(&r.history_command);
    text(&r.source);
    text(dedup_key);
    for optional in [&r.login_user, &r.tty, &r.stream] {
        match optional {
            Some(s) => {
                text("+");
                text(s);
            }
            None => text("-"),
        }
    }
    let seq = r.seq.map_or([0u8; 9], |s| {
        let mut b = [1u8; 9];
        b[1..].copy_from_slice(&s.to_le_bytes());
        b
    });
    m.update(&seq);
    for number in [r.host_id, r.chain_seq, r.history_id, r.received_at] {
        m.update(&number.to_le_bytes());
    }
    // Fields added with migration 0012, covered only when one is present: rows written before it (all absent)
    // keep their MACs, and emptying or filling any of them on a newer row changes the MAC.
    let numbers = [r.session, r.exit_code, r.pid, r.ppid, r.euid, r.auid];
    if r.argv.is_some() || r.cwd.is_some() || r.exe.is_some() || numbers.iter().any(Option::is_some) {
        let mut text = |s: &str| {
            m.update(&(s.len() as u64).to_le_bytes());
            m.update(s.as_bytes());
        };
        text("0012");
        for optional in [&r.argv, &r.cwd, &r.exe] {
            match optional {
                Some(s) => {
                    text("+");
                    text(s);
                }
                None => text("-"),
            }
        }
        for number in numbers {
            let mut b = [0u8; 9];
            if let Some(n) = number {
                b[0] = 1;
                b[1..].copy_from_slice(&n.to_le_bytes());
            }
            m.update(&b);
        }
    }
    lower_hex(&m.finalize().into_bytes())
}

/// One thing `audit verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub host_id: i64,
    /// The chain position where the problem shows.
    pub chain_seq: i64,
    pub problem: String,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub hosts: usize,
    pub rows: u64,
    pub findings: Vec<Finding>,
    /// Each audited host's chain, by host id: what an admin scans for the one that is not intact.
    pub chains: Vec<HostChain>,
    /// The activity log's chain, when it was checked too ([`crate::activity::verify`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<crate::activity::ActivityReport>,
}

/// One host's chain in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HostChain {
    pub host_id: i64,
    pub host: String,
    /// Rows checked.
    pub rows: u64,
    /// How many of the report's findings are on this host; 0: intact.
    pub problems: usize,
}

/// Walks every host's chain from its first row (or from where its archive ends: the kept rows must continue the
/// archived ones) to its head.
pub async fn verify(store: &Store, key: &[u8]) -> Result<Report, StoreError> {
    const PAGE: i64 = 5000;
    let key = &ChainKey::new(key);
    let mut report = Report::default();
    let names: std::collections::HashMap<i64, String> =
        store.list_hosts().await?.into_iter().map(|host| (host.id, host.name)).collect();
    let archived: std::collections::HashMap<i64, _> =
        store.archived_up_to().await?.into_iter().map(|line| (line.host_id, line)).collect();
    for host_id in store.audited_hosts().await? {
        report.hosts += 1;
        let (rows_before, findings_before) = (report.rows, report.findings.len());
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_owned();
        if let Some(line) = archived.get(&host_id) {
            if !super::archive::line_is_genuine(key, line) {
                report.findings.push(Finding {
                    host_id,
                    chain_seq: line.last_seq,
                    problem: "the archive line (how far this host was archived) was changed: rows deleted and \
                              called archived?"
                        .into(),
                });
            }
            expected_seq = line.last_seq + 1;
            prev.clone_from(&line.last_hash);
        }
        let mut last = expected_seq - 1;
        loop {
            let rows = store.audit_chain_rows(host_id, last, PAGE).await?;
            for row in &rows {
                report.rows += 1;
                let mut find =
                    |problem: String| report.findings.push(Finding { host_id, chain_seq: row.chain_seq, problem });
                if row.chain_seq != expected_seq {
                    let missing = row.chain_seq - expected_seq;
                    // This row's MAC covers the hash of a row that is gone, so it cannot be checked: the gap is
                    // the finding.
                    find(format!(
                        "{missing} row(s) missing before this one (deleted): chain positions {expected_seq}..{}",
                        row.chain_seq - 1
                    ));
                } else if seal(key, row, &prev, &dedup_key(row)) != row.row_hash {
                    find(format!("row id {} was edited or forged: its contents do not match its MAC", row.id));
                }
                expected_seq = row.chain_seq + 1;
                prev = row.row_hash.clone();
                last = row.chain_seq;
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        match store.audit_head(host_id).await? {
            Some((head_seq, head_hash)) if head_seq == last && head_hash == prev => {}
            Some((head_seq, _)) if head_seq > last => report.findings.push(Finding {
                host_id,
                chain_seq: last + 1,
                problem: format!("the newest {} row(s) were deleted: the chain head is at {head_seq}", head_seq - last),
            }),
            Some((head_seq, _)) => report.findings.push(Finding {
                host_id,
                chain_seq: head_seq,
                problem: format!("the chain head ({head_seq}) does not match the last row ({last})"),
            }),
            None => report.findings.push(Finding {
                host_id,
                chain_seq: last,
                problem: "rows exist but the chain head is missing".into(),
            }),
        }
        report.chains.push(HostChain {
            host_id,
            // Hosts with audit rows cannot be deleted; the fallback only covers rows written around that check.
            host: names.get(&host_id).cloned().unwrap_or_else(|| format!("#{host_id}")),
            rows: report.rows - rows_before,
            problems: report.findings.len() - findings_before,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stream: &str, seq: i64) -> AuditRow {
        AuditRow {
            id: 0,
            host_id: 1,
            history_ip: "127.0.0.1".into(),
            history_id: 5,
            history_user: "root".into(),
            login_user: None,
            tty: None,
            history_datetime: "2014-06-07 22:05:56".into(),
            received_at: 0,
            history_command: "ls".into(),
            source: "agent".into(),
            stream: Some(stream.into()),
            seq: Some(seq),
            chain_seq: 1,
            row_hash: String::new(),
            session: None,
            argv: None,
            cwd: None,
            exe: None,
            exit_code: None,
            pid: None,
            ppid: None,
            euid: None,
            auid: None,
        }
    }

    #[test]
    fn resends_share_a_key_and_distinct_events_do_not() {
        assert_eq!(dedup_key(&row("a", 1)), dedup_key(&AuditRow { received_at: 9, chain_seq: 7, ..row("a", 1) }));
        assert_ne!(dedup_key(&row("a", 1)), dedup_key(&row("a", 2)));
        assert_ne!(dedup_key(&row("a", 1)), dedup_key(&row("b", 1)));
        let legacy = AuditRow { source: "legacy".into(), stream: None, seq: None, ..row("a", 1) };
        assert_eq!(dedup_key(&legacy), dedup_key(&AuditRow { tty: Some("x".into()), ..legacy.clone() }));
        assert_ne!(dedup_key(&legacy), dedup_key(&AuditRow { history_command: "ls ".into(), ..legacy.clone() }));
    }

    #[test]
    fn the_mac_covers_the_link_and_every_field() {
        let key = &ChainKey::new(b"k");
        let r = row("a", 1);
        let mac = seal(key, &r, GENESIS, &dedup_key(&r));
        assert_ne!(mac, seal(key, &r, &"1".repeat(64), &dedup_key(&r)));
        assert_ne!(mac, seal(key, &AuditRow { history_command: "ls -l".into(), ..r.clone() }, GENESIS, &dedup_key(&r)));
        assert_ne!(mac, seal(key, &AuditRow { tty: Some(String::new()), ..r.clone() }, GENESIS, &dedup_key(&r)));
        assert_ne!(mac, seal(&ChainKey::new(b"other"), &r, GENESIS, &dedup_key(&r)));
        // The exec fields: present or absent, each one counts.
        let exec = AuditRow {
            source: "execve".into(),
            session: Some(3),
            argv: Some(r#"["ls"]"#.into()),
            cwd: Some("/".into()),
            exe: Some("/usr/bin/ls".into()),
            exit_code: Some(0),
            ..r.clone()
        };
        let exec_mac = seal(key, &exec, GENESIS, &dedup_key(&exec));
        for changed in [
            AuditRow { argv: Some(r#"["ls","-l"]"#.into()), ..exec.clone() },
            AuditRow { argv: None, ..exec.clone() },
            AuditRow { cwd: Some("/tmp".into()), ..exec.clone() },
            AuditRow { exe: None, ..exec.clone() },
            AuditRow { session: Some(4), ..exec.clone() },
            AuditRow { exit_code: Some(-2), ..exec.clone() },
            AuditRow { ppid: Some(1), ..exec.clone() },
            AuditRow { auid: Some(0), ..exec.clone() },
        ] {
            assert_ne!(exec_mac, seal(key, &changed, GENESIS, &dedup_key(&exec)));
        }
        // An exec and a history line of the same stream position are the same event for de-duplication.
        assert_eq!(dedup_key(&exec), dedup_key(&r));
        assert_eq!(lower_hex(&[0x00, 0x9f, 0xa0, 0xff]), hex::encode([0x00, 0x9f, 0xa0, 0xff]));
    }
}
