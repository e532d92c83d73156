//! The single audit writer: takes validated events from every request, deduplicates and chains them, and
//! commits them in groups. One transaction (one fsync) covers every request that arrived while the previous one
//! was committing, which is what makes "OK only after commit" fast.
//!
//! Duplicates are found without a global unique index (whose random keys made every insert dirty a random page):
//! agent events by a range scan of the (host, stream, seq) index, legacy events against the host's newest
//! [`RECENT`] rows, because what the original agent re-sends is the line it just sent.
//!
//! **Invariant:** this task is the only writer of `server_history` and `audit_chain` in the process (one server
//! process per database): it keeps each host's chain head and newest dedup keys in memory.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{chain, event::Incoming};
use crate::store::{now_ms, AuditRow, NewGap, Store};

/// At most this many events go into one transaction.
const MAX_BATCH: usize = 10_000;
/// How many of a host's newest rows a legacy event is compared with. An idle prompt re-sends the line it just
/// sent; other shells on the same host may have sent a few lines in between.
const RECENT: usize = 64;

/// What the writer remembers per host between batches.
#[derive(Debug, Clone)]
struct HostState {
    /// (chain position, hash) of the newest row.
    head: (i64, String),
    /// Dedup keys of the newest rows, oldest first, at most [`RECENT`].
    recent: VecDeque<String>,
}

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
        let mut hosts: HashMap<i64, HostState> = HashMap::new();
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
            match write(&store, &key, &mut hosts, &mut batch).await {
                Ok((outcomes, rows)) => {
                    metrics::counter!("omserver_audit_events_stored_total").increment(rows.len() as u64);
                    metrics::histogram!("omserver_audit_commit_seconds").record(started.elapsed().as_secs_f64());
                    if live.receiver_count() > 0 {
                        for row in rows {
                            let _ = live.send(Arc::new(row));
                        }
                    }
                    for (submission, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = submission.reply.send(Ok(outcome));
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, events, "audit batch not stored");
                    metrics::counter!("omserver_audit_batches_failed_total").increment(1);
                    // Nothing was committed; forget what is remembered anyway, it is read again from the database.
                    hosts.clear();
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
    hosts: &mut HashMap<i64, HostState>,
    batch: &mut [Submission],
) -> Result<(Vec<Vec<Outcome>>, Vec<AuditRow>), crate::store::StoreError> {
    // The events are moved into rows; the submissions keep only their reply channels and gaps.
    let incoming: Vec<Vec<Incoming>> = batch.iter_mut().map(|s| std::mem::take(&mut s.events)).collect();
    let stored_seqs = stored_agent_seqs(store, &incoming).await?;
    // This batch's view of each host; becomes `hosts` only once committed.
    let mut working: HashMap<i64, HostState> = HashMap::new();
    let mut batch_seqs: HashSet<(i64, String, i64)> = HashSet::new();
    let mut rows = Vec::new();
    let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(batch.len());
    let received_at = now_ms();
    for events in incoming {
        let mut these = Vec::with_capacity(events.len());
        for event in events {
            let state = match working.entry(event.host_id) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(slot) => slot.insert(match hosts.get(&event.host_id) {
                    Some(state) => state.clone(),
                    None => load_host(store, event.host_id).await?,
                }),
            };
            let dedup_key = event.dedup_key();
            let duplicate = match (&event.stream, event.seq) {
                (Some(stream), Some(seq)) => {
                    let id = (event.host_id, stream.clone(), seq);
                    stored_seqs.contains(&id) || !batch_seqs.insert(id)
                }
                _ => state.recent.contains(&dedup_key),
            };
            if duplicate {
                these.push(Outcome::Duplicate);
                continue;
            }
            let mut row = AuditRow {
                id: 0,
                host_id: event.host_id,
                history_ip: event.ip,
                history_id: event.history_id,
                history_user: event.user,
                login_user: event.login_user,
                tty: event.tty,
                history_datetime: event.datetime,
                received_at,
                history_command: event.command,
                source: event.source.as_str().to_owned(),
                stream: event.stream,
                seq: event.seq,
                dedup_key,
                chain_seq: state.head.0 + 1,
                prev_hash: state.head.1.clone(),
                row_hash: String::new(),
            };
            row.row_hash = chain::seal(key, &row);
            state.head = (row.chain_seq, row.row_hash.clone());
            if state.recent.len() == RECENT {
                state.recent.pop_front();
            }
            state.recent.push_back(row.dedup_key.clone());
            these.push(Outcome::Stored(0));
            rows.push(row);
        }
        outcomes.push(these);
    }
    let gaps: Vec<NewGap> = batch.iter().flat_map(|s| s.gaps.iter().cloned()).collect();
    let new_heads: Vec<(i64, i64, String)> =
        working.iter().map(|(h, state)| (*h, state.head.0, state.head.1.clone())).collect();
    if rows.is_empty() && gaps.is_empty() {
        return Ok((outcomes, Vec::new()));
    }
    let ids = store.write_audit_batch(&rows, &gaps, &new_heads).await?;
    hosts.extend(working);

    // Ids come back in insertion order; hand them to the Stored outcomes in the same order.
    let mut id_iter = ids.iter().copied();
    for outcome in outcomes.iter_mut().flatten() {
        if let Outcome::Stored(id) = outcome {
            *id = id_iter.next().unwrap_or_default();
        }
    }
    for (row, id) in rows.iter_mut().zip(ids) {
        row.id = id;
    }
    Ok((outcomes, rows))
}

/// The (host, stream, seq) of agent events in the batch that are stored already: one range scan per stream.
async fn stored_agent_seqs(
    store: &Store,
    incoming: &[Vec<Incoming>],
) -> Result<HashSet<(i64, String, i64)>, crate::store::StoreError> {
    let mut ranges: HashMap<(i64, &str), (i64, i64)> = HashMap::new();
    for event in incoming.iter().flatten() {
        if let (Some(stream), Some(seq)) = (&event.stream, event.seq) {
            let range = ranges.entry((event.host_id, stream.as_str())).or_insert((seq, seq));
            *range = (range.0.min(seq), range.1.max(seq));
        }
    }
    let mut stored = HashSet::new();
    for ((host_id, stream), (from, to)) in ranges {
        for seq in store.existing_seqs(host_id, stream, from, to).await? {
            stored.insert((host_id, stream.to_owned(), seq));
        }
    }
    Ok(stored)
}

/// A host's chain head and newest dedup keys, from the database.
async fn load_host(store: &Store, host_id: i64) -> Result<HostState, crate::store::StoreError> {
    let head = store.audit_head(host_id).await?.unwrap_or((0, chain::GENESIS.to_owned()));
    let mut recent: VecDeque<String> = store.recent_dedup_keys(host_id, RECENT as i64).await?.into();
    recent.make_contiguous().reverse();
    Ok(HostState { head, recent })
}
