//! The single audit writer: takes validated events from every request, deduplicates and chains them, and
//! commits them in groups. One transaction (one fsync) covers every request that arrived while the previous one
//! was committing, which is what makes "OK only after commit" fast.
//!
//! **Invariant:** this task is the only writer of `server_history` and `audit_chain` in the process (one server
//! process per database): it keeps each host's chain head in memory.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{chain, event::Incoming};
use crate::store::{now_ms, AuditRow, NewAuditRow, NewGap, Store};

/// At most this many events go into one transaction.
const MAX_BATCH: usize = 10_000;

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored(i64),
    Duplicate,
}

pub struct Submission {
    pub events: Vec<Incoming>,
    pub gaps: Vec<NewGap>,
    pub reply: oneshot::Sender<Result<Vec<Outcome>, String>>,
}

pub fn spawn(
    store: Store,
    key: Vec<u8>,
    mut rx: mpsc::Receiver<Submission>,
    live: broadcast::Sender<Arc<AuditRow>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut heads: HashMap<i64, (i64, String)> = HashMap::new();
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let mut events = batch[0].events.len();
            while events < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => {
                        events += next.events.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let started = std::time::Instant::now();
            match write(&store, &key, &mut heads, &batch).await {
                Ok((outcomes, rows)) => {
                    metrics::counter!("omserver_audit_events_stored_total").increment(rows.len() as u64);
                    metrics::histogram!("omserver_audit_commit_seconds").record(started.elapsed().as_secs_f64());
                    for row in rows {
                        // No subscriber is fine: the row is stored either way.
                        let _ = live.send(Arc::new(row));
                    }
                    for (submission, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = submission.reply.send(Ok(outcome));
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, events, "audit batch not stored");
                    metrics::counter!("omserver_audit_batches_failed_total").increment(1);
                    // The heads may have moved in memory only: forget them, they are read again from the database.
                    heads.clear();
                    for submission in batch {
                        let _ = submission.reply.send(Err("the audit store is unavailable; send again".into()));
                    }
                }
            }
        }
    })
}

/// Writes one group; returns each submission's outcomes and the stored rows (for the live stream).
async fn write(
    store: &Store,
    key: &[u8],
    heads: &mut HashMap<i64, (i64, String)>,
    batch: &[Submission],
) -> Result<(Vec<Vec<Outcome>>, Vec<AuditRow>), crate::store::StoreError> {
    let keys: Vec<String> = batch.iter().flat_map(|s| s.events.iter().map(Incoming::dedup_key)).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut seen: HashSet<String> = store.existing_dedup_keys(&key_refs).await?.into_iter().collect();

    let mut working: HashMap<i64, (i64, String)> = HashMap::new();
    let mut rows = Vec::new();
    let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(batch.len());
    let received_at = now_ms();
    let mut keys = keys.into_iter();
    for submission in batch {
        let mut these = Vec::with_capacity(submission.events.len());
        for event in &submission.events {
            let dedup_key = keys.next().unwrap_or_default();
            if !seen.insert(dedup_key.clone()) {
                these.push(Outcome::Duplicate);
                continue;
            }
            let head = match working.get(&event.host_id).or_else(|| heads.get(&event.host_id)) {
                Some(head) => head.clone(),
                None => store.audit_head(event.host_id).await?.unwrap_or((0, chain::GENESIS.to_owned())),
            };
            let mut row = NewAuditRow {
                host_id: event.host_id,
                history_ip: event.ip.clone(),
                history_id: event.history_id,
                history_user: event.user.clone(),
                login_user: event.login_user.clone(),
                tty: event.tty.clone(),
                history_datetime: event.datetime.clone(),
                received_at,
                history_command: event.command.clone(),
                source: event.source.as_str(),
                stream: event.stream.clone(),
                seq: event.seq,
                dedup_key,
                chain_seq: head.0 + 1,
                prev_hash: head.1,
                row_hash: String::new(),
            };
            row.row_hash = chain::seal(key, &row);
            working.insert(event.host_id, (row.chain_seq, row.row_hash.clone()));
            these.push(Outcome::Stored(0));
            rows.push(row);
        }
        outcomes.push(these);
    }
    let gaps: Vec<NewGap> = batch.iter().flat_map(|s| s.gaps.iter().cloned()).collect();
    let new_heads: Vec<(i64, i64, String)> = working.iter().map(|(h, (s, x))| (*h, *s, x.clone())).collect();
    if rows.is_empty() && gaps.is_empty() {
        return Ok((outcomes, Vec::new()));
    }
    let ids = store.write_audit_batch(&rows, &gaps, &new_heads).await?;
    heads.extend(working);

    // Ids come back in insertion order; hand them to the Stored outcomes in the same order.
    let mut id_iter = ids.iter().copied();
    for outcome in outcomes.iter_mut().flatten() {
        if let Outcome::Stored(id) = outcome {
            *id = id_iter.next().unwrap_or_default();
        }
    }
    let stored = rows
        .into_iter()
        .zip(ids)
        .map(|(r, id)| AuditRow {
            id,
            host_id: r.host_id,
            history_ip: r.history_ip,
            history_id: r.history_id,
            history_user: r.history_user,
            login_user: r.login_user,
            tty: r.tty,
            history_datetime: r.history_datetime,
            received_at: r.received_at,
            history_command: r.history_command,
            source: r.source.to_owned(),
            stream: r.stream,
            seq: r.seq,
            dedup_key: r.dedup_key,
            chain_seq: r.chain_seq,
            prev_hash: r.prev_hash,
            row_hash: r.row_hash,
        })
        .collect();
    Ok((outcomes, stored))
}
