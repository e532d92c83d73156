//! The single audit writer: a thread that takes validated events from every request, deduplicates and chains
//! them, and commits them in groups through an [`AuditSink`]. One transaction covers every request that arrived
//! while the previous one was committing, which is what makes "OK only after commit" fast. Where the commit is not
//! durable by itself (SQLite, see `store::audit_sqlite`), groups are answered by a second thread after an
//! `fdatasync` of the WAL that began after their commit, and one flush covers every group committed meanwhile.
//!
//! Duplicates are found without a global unique index (whose random keys made every insert dirty a random page):
//! agent events by a range scan of the (host, stream, seq) index, legacy events against the host's newest
//! [`RECENT`] rows, because what the original agent re-sends is the line it just sent.
//!
//! **Invariant:** this thread is the only writer of `server_history` and `audit_chain` in the process: it keeps
//! each host's chain head and newest dedup keys in memory. Where several servers share the database
//! (PostgreSQL), their writers take turns a group at a time under the database's audit write lock
//! ([`AuditSink::begin_group`]); each reads the heads of its group's hosts under it, and forgets the newest lines
//! it remembers of a host another server wrote to, so duplicates are found and chains continue across servers.
//! What reached a server while it waited for its turn joins its group.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{alerts::Alerts, chain, event::Incoming};
use crate::store::{AuditRow, AuditSink, NewGap, StoreError, WalSync};

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
    /// Dedup keys of the newest rows, oldest first, at most [`RECENT`]. `None` until a legacy event of the host
    /// needs them: agent events are told apart by their sequence numbers.
    recent: Option<VecDeque<String>>,
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored(i64),
    Duplicate,
}

/// Where a submission is answered: each event's outcome, or why nothing was stored.
pub type Reply = oneshot::Sender<Result<Vec<Outcome>, String>>;

/// An event on its way to the writer: its row (chain position and MAC still to come) and its dedup key, both
/// made on the request's thread so that the one writer has less to do per event.
pub struct Pending {
    row: AuditRow,
    dedup_key: String,
}

impl Pending {
    /// `received_at`: when the request arrived, in Unix ms.
    pub fn new(event: Incoming, received_at: i64) -> Pending {
        let row = AuditRow {
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
            chain_seq: 0,
            row_hash: String::new(),
            session: event.session,
            argv: event.exec.argv,
            cwd: event.exec.cwd,
            exe: event.exec.exe,
            exit_code: event.exec.exit_code,
            pid: event.exec.pid,
            ppid: event.exec.ppid,
            euid: event.exec.euid,
            auid: event.exec.auid,
        };
        Pending { dedup_key: chain::dedup_key(&row), row }
    }
}

pub struct Submission {
    pub events: Vec<Pending>,
    pub gaps: Vec<NewGap>,
    pub reply: Reply,
}

/// A committed group, to be answered once it is durable.
struct Committed {
    answers: Vec<(Reply, Vec<Outcome>)>,
    rows: Vec<AuditRow>,
}

/// Answers committed groups and publishes their rows. With a [`WalSync`] that happens on a thread of its own,
/// after a sync that began once the group was committed, so the writer commits the next group meanwhile.
enum Answerer {
    Now(Publish),
    AfterSync(std::sync::mpsc::Sender<Committed>),
}

impl Answerer {
    fn start(wal: Option<WalSync>, live: Publish) -> std::io::Result<Answerer> {
        let Some(wal) = wal else { return Ok(Answerer::Now(live)) };
        let (tx, rx) = std::sync::mpsc::channel::<Committed>();
        std::thread::Builder::new().name("audit-sync".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut groups = vec![first];
                groups.extend(rx.try_iter());
                let synced = wal.sync();
                if let Err(err) = &synced {
                    // The rows are committed but perhaps not on disk: say so, and let senders resend (agent events
                    // are idempotent; a re-sent legacy line is recognised as the newest).
                    tracing::error!(error = %err, groups = groups.len(), "audit WAL sync failed");
                    metrics::counter!("omserver_audit_batches_failed_total").increment(1);
                }
                for group in groups {
                    answer(group, synced.is_ok().then_some(&live));
                }
            }
        })?;
        Ok(Answerer::AfterSync(tx))
    }

    fn committed(&self, group: Committed) {
        match self {
            Answerer::Now(live) => answer(group, Some(live)),
            Answerer::AfterSync(syncer) => {
                if let Err(std::sync::mpsc::SendError(group)) = syncer.send(group) {
                    answer(group, None);
                }
            }
        }
    }
}

/// Where durable rows go: the live stream, and the alert rules that count them.
#[derive(Clone)]
pub struct Publish {
    /// `None` where the live stream is fed from the database instead ([`super::follow`]).
    pub live: Option<broadcast::Sender<Arc<AuditRow>>>,
    pub alerts: Arc<Alerts>,
}

/// Answers a group: stored, counted against the alert rules and published when `durable` is given, "send
/// again" otherwise.
fn answer(group: Committed, durable: Option<&Publish>) {
    for (reply, outcomes) in group.answers {
        let _ = reply.send(if durable.is_some() { Ok(outcomes) } else { Err(UNAVAILABLE.into()) });
    }
    let Some(publish) = durable else { return };
    publish.alerts.count(&group.rows);
    if let Some(live) = publish.live.as_ref().filter(|live| live.receiver_count() > 0) {
        for row in group.rows {
            let _ = live.send(Arc::new(row));
        }
    }
}

const UNAVAILABLE: &str = "the audit store is unavailable; send again";

/// Starts the writer on a thread of its own: the sink's calls block (SQLite is called directly), and a thread
/// keeps them off the runtime's workers. The thread ends when every sender of `rx` is gone.
pub fn spawn(
    mut sink: Box<dyn AuditSink>,
    key: Vec<u8>,
    mut rx: mpsc::Receiver<Submission>,
    live: Publish,
) -> Result<(), StoreError> {
    let thread = |source| StoreError::Io { what: "audit writer thread", source };
    let answerer = Answerer::start(sink.wal_sync()?, live).map_err(thread)?;
    let key = chain::ChainKey::new(&key);
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let mut hosts: HashMap<i64, HostState> = HashMap::new();
            // Read from the database by the first group (the pooled sink cannot block before this thread).
            let mut latest: Option<i64> = None;
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                gather(&mut rx, &mut batch);
                let started = std::time::Instant::now();
                let mut events = count(&batch);
                let written = sink.begin_group().and_then(|shared| {
                    if shared {
                        // What reached this server while it waited for its turn joins the group: the busier the
                        // servers, the larger (and fewer) the turns.
                        gather(&mut rx, &mut batch);
                        events = count(&batch);
                    }
                    write(sink.as_mut(), &key, &mut hosts, &mut latest, &mut batch, shared)
                });
                if written.is_err() {
                    sink.abort_group();
                }
                match written {
                    Ok((outcomes, rows)) => {
                        metrics::counter!("omserver_audit_events_stored_total").increment(rows.len() as u64);
                        metrics::histogram!("omserver_audit_commit_seconds").record(started.elapsed().as_secs_f64());
                        let answers = batch.into_iter().map(|s| s.reply).zip(outcomes).collect();
                        answerer.committed(Committed { answers, rows });
                    }
                    Err(err) => {
                        tracing::error!(error = %err, events, "audit batch not stored");
                        metrics::counter!("omserver_audit_batches_failed_total").increment(1);
                        // Nothing was committed; forget what is remembered anyway, it is read again from the
                        // database.
                        hosts.clear();
                        for submission in batch {
                            let _ = submission.reply.send(Err(UNAVAILABLE.into()));
                        }
                    }
                }
            }
        })
        .map_err(thread)?;
    Ok(())
}

/// How many events `batch` holds.
fn count(batch: &[Submission]) -> usize {
    batch.iter().map(|s| s.events.len()).sum()
}

/// Adds to `batch` what waits in `rx`, up to [`MAX_BATCH`] events in all.
fn gather(rx: &mut mpsc::Receiver<Submission>, batch: &mut Vec<Submission>) {
    let mut events = count(batch);
    while events < MAX_BATCH {
        let Ok(next) = rx.try_recv() else { return };
        events += next.events.len();
        batch.push(next);
    }
}

/// Writes one group; returns each submission's outcomes and the stored rows (for the live stream). `shared`: the
/// group was begun under the database's audit write lock ([`AuditSink::begin_group`]).
fn write(
    sink: &mut dyn AuditSink,
    key: &chain::ChainKey,
    hosts: &mut HashMap<i64, HostState>,
    latest: &mut Option<i64>,
    batch: &mut [Submission],
    shared: bool,
) -> Result<(Vec<Vec<Outcome>>, Vec<AuditRow>), StoreError> {
    // The events are moved into rows; the submissions keep only their reply channels and gaps.
    let incoming: Vec<Vec<Pending>> = batch.iter_mut().map(|s| std::mem::take(&mut s.events)).collect();
    let mut batch_hosts: Vec<i64> = incoming.iter().flatten().map(|e| e.row.host_id).collect();
    batch_hosts.sort_unstable();
    batch_hosts.dedup();
    if shared {
        // Another server may have written since: a host's head is the database's, its newest lines are read again
        // when a legacy event needs them, and no row is stamped earlier than one another server stored.
        let state = sink.group_state(&batch_hosts)?;
        for host in &batch_hosts {
            let head = state.heads.get(host).cloned().unwrap_or((0, chain::GENESIS.to_owned()));
            match hosts.get_mut(host) {
                Some(known) if known.head == head => {}
                Some(known) => *known = HostState { head, recent: None },
                None => {
                    hosts.insert(*host, HostState { head, recent: None });
                }
            }
        }
        *latest = Some(latest.unwrap_or(0).max(state.latest_received_at));
    }
    // The hosts whose newest lines this group's legacy events are compared with.
    let legacy: HashSet<i64> =
        incoming.iter().flatten().filter(|e| e.row.seq.is_none()).map(|e| e.row.host_id).collect();
    let duplicates = agent_duplicates(sink, &incoming)?;
    let latest = match latest {
        Some(latest) => latest,
        None => latest.insert(sink.latest_received_at()?),
    };
    // This batch's view of each host; becomes `hosts` only once committed.
    let mut working: HashMap<i64, HostState> = HashMap::new();
    let mut rows = Vec::new();
    let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(batch.len());
    for (events, duplicates) in incoming.into_iter().zip(duplicates) {
        let mut these = Vec::with_capacity(events.len());
        for (Pending { mut row, dedup_key }, duplicate) in events.into_iter().zip(duplicates) {
            let state = match working.entry(row.host_id) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(slot) => {
                    let mut state = match hosts.get(&row.host_id) {
                        Some(state) => state.clone(),
                        None => HostState { head: stored_head(sink, row.host_id)?, recent: None },
                    };
                    // Read before the group's first row of the host: its rows are not in the database yet.
                    if state.recent.is_none() && legacy.contains(&row.host_id) {
                        state.recent = Some(newest_lines(sink, row.host_id)?);
                    }
                    slot.insert(state)
                }
            };
            let sent_just_now = state.recent.as_ref().is_some_and(|recent| recent.contains(&dedup_key));
            if duplicate || (row.seq.is_none() && sent_just_now) {
                these.push(Outcome::Duplicate);
                continue;
            }
            // `received_at` never goes down in id order (a request that waited behind a later one, a clock set
            // back): a time range of received rows is then a range of ids (`store::audit_search`).
            row.received_at = row.received_at.max(*latest);
            *latest = row.received_at;
            row.chain_seq = state.head.0 + 1;
            row.row_hash = chain::seal(key, &row, &state.head.1, &dedup_key);
            state.head = (row.chain_seq, row.row_hash.clone());
            if let Some(recent) = state.recent.as_mut() {
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back(dedup_key);
            }
            these.push(Outcome::Stored(0));
            rows.push(row);
        }
        outcomes.push(these);
    }
    let gaps: Vec<NewGap> = batch.iter().flat_map(|s| s.gaps.iter().cloned()).collect();
    let new_heads: Vec<(i64, i64, String)> =
        working.iter().map(|(h, state)| (*h, state.head.0, state.head.1.clone())).collect();
    if rows.is_empty() && gaps.is_empty() {
        sink.abort_group();
        return Ok((outcomes, Vec::new()));
    }
    let ids = sink.write_audit_batch(&rows, &gaps, &new_heads)?;
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

/// An agent event's identity: (host, stream, seq).
fn agent_id(e: &Pending) -> Option<(i64, &str, i64)> {
    Some((e.row.host_id, e.row.stream.as_deref()?, e.row.seq?))
}

/// Which agent events of the group are duplicates: stored already (one range scan per stream) or sent earlier in
/// the same group. Legacy events are compared later, with their host's newest lines.
fn agent_duplicates(sink: &mut dyn AuditSink, incoming: &[Vec<Pending>]) -> Result<Vec<Vec<bool>>, StoreError> {
    let mut ranges: HashMap<(i64, &str), (i64, i64)> = HashMap::new();
    for (host_id, stream, seq) in incoming.iter().flatten().filter_map(agent_id) {
        let range = ranges.entry((host_id, stream)).or_insert((seq, seq));
        *range = (range.0.min(seq), range.1.max(seq));
    }
    let mut seen: HashSet<(i64, &str, i64)> = HashSet::new();
    for ((host_id, stream), (from, to)) in ranges {
        seen.extend(sink.existing_seqs(host_id, stream, from, to)?.into_iter().map(|seq| (host_id, stream, seq)));
    }
    Ok(incoming
        .iter()
        .map(|events| events.iter().map(|e| agent_id(e).is_some_and(|id| !seen.insert(id))).collect())
        .collect())
}

/// A host's chain head, from the database.
fn stored_head(sink: &mut dyn AuditSink, host_id: i64) -> Result<(i64, String), StoreError> {
    Ok(sink.audit_head(host_id)?.unwrap_or((0, chain::GENESIS.to_owned())))
}

/// The dedup keys of a host's newest rows, oldest first, from the database.
fn newest_lines(sink: &mut dyn AuditSink, host_id: i64) -> Result<VecDeque<String>, StoreError> {
    let newest_first = sink.recent_audit_rows(host_id, RECENT as i64)?;
    Ok(newest_first.iter().rev().map(chain::dedup_key).collect())
}
