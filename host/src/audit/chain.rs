//! The per-host hash chain: each row carries the MAC of its own fields and of the row before it, under a key
//! derived from the server's secret. Deleting, inserting or editing a row in the database breaks the chain at
//! that point, and forging a consistent chain needs the key, which the database does not hold.
//! `audit_chain` keeps each host's head, so deleting the newest rows shows too.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::store::{AuditRow, Store, StoreError};

/// The `prev_hash` of a host's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The MAC of a row: every field but `id` and `row_hash`, in a fixed order, each length-prefixed (and optional
/// ones marked present or absent) so that no two rows encode alike. Used to seal a new row and to check a stored
/// one. Fed field by field: this runs once per stored event on the writer's hot path.
pub fn seal(key: &[u8], r: &AuditRow) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    let mut text = |s: &str| {
        m.update(&(s.len() as u64).to_le_bytes());
        m.update(s.as_bytes());
    };
    text(&r.prev_hash);
    text(&r.history_ip);
    text(&r.history_user);
    text(&r.history_datetime);
    text(&r.history_command);
    text(&r.source);
    text(&r.dedup_key);
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
    hex::encode(m.finalize().into_bytes())
}

/// One thing `audit verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub host_id: i64,
    /// The chain position where the problem shows.
    pub chain_seq: i64,
    pub problem: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub hosts: usize,
    pub rows: u64,
    pub findings: Vec<Finding>,
}

/// Walks every host's chain from its first row to its head.
pub async fn verify(store: &Store, key: &[u8]) -> Result<Report, StoreError> {
    const PAGE: i64 = 5000;
    let mut report = Report::default();
    for host_id in store.audited_hosts().await? {
        report.hosts += 1;
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_owned();
        let mut last = 0;
        loop {
            let rows = store.audit_chain_rows(host_id, last, PAGE).await?;
            for row in &rows {
                report.rows += 1;
                let mut find =
                    |problem: String| report.findings.push(Finding { host_id, chain_seq: row.chain_seq, problem });
                if row.chain_seq != expected_seq {
                    let missing = row.chain_seq - expected_seq;
                    find(format!(
                        "{missing} row(s) missing before this one (deleted): chain positions {expected_seq}..{}",
                        row.chain_seq - 1
                    ));
                } else if row.prev_hash != prev {
                    find("link to the previous row is broken (a row before it was replaced or edited)".into());
                }
                if seal(key, row) != row.row_hash {
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
    }
    Ok(report)
}
