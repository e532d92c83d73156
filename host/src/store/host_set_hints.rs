//! What the audit search plan has learned of a set of hosts, remembered for a while instead of probed on every
//! query: a scoped caller's every query names the same hundreds of hosts. Hints choose a plan, never an answer:
//! a wrong or stale one makes a query slower, not different ([`SetNewest`] is checked by the query itself).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How long a hint is taken to still hold.
const HINT_FOR: Duration = Duration::from_secs(60);
/// At most this many sets are remembered (then the memory starts again).
const HINT_SETS: usize = 1_000;
/// How long where a set's newest row lies is used: the rows above it are read on every query meanwhile.
const NEWEST_FOR: Duration = Duration::from_secs(1);

/// Where a set's newest row lay when looked up: no row of the set has an id in `(newest, top]` as long as no
/// archived rows were put back since (`restores`, the database's count of restores). The one hint that narrows
/// what a query reads, so the query checks `restores` itself (`audit_search.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetNewest {
    /// The id of the set's newest row (0: it had none).
    pub newest: i64,
    /// The table's newest id then.
    pub top: i64,
    pub restores: i64,
}

/// What is known of one set of hosts, and since when.
#[derive(Debug, Clone, Default)]
struct Learned {
    /// It holds the plan's `NARROW_ROWS` rows or more.
    broad: Option<Instant>,
    /// Whether its newest row lay far below the table's newest (other hosts busy, these quiet).
    deep: Option<(bool, Instant)>,
    /// With the set's ids: a key shared with another set (a hash collision) must not narrow this one's reads.
    newest: Option<(SetNewest, Arc<[i64]>, Instant)>,
}

/// Hints by a hash of the set's ids (a collision costs speed, not rows).
#[derive(Debug, Clone, Default)]
pub(super) struct HostSetHints(Arc<Mutex<HashMap<u64, Learned>>>);

fn fresh(at: Instant) -> bool {
    at.elapsed() < HINT_FOR
}

impl HostSetHints {
    /// The same for the same hosts in any order. Not SipHash: a scoped caller's every query keys its hundreds of
    /// hosts, and a collision only costs speed (what narrows rows is checked against the ids).
    pub(super) fn key(ids: &[i64]) -> u64 {
        if !ids.is_sorted() {
            let mut sorted = ids.to_vec();
            sorted.sort_unstable();
            return Self::key(&sorted);
        }
        // FxHash's step (rustc's), then a final mix so that nearby sets differ in their high bits too.
        let step = |h: u64, v: u64| (h.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
        let h = ids.iter().fold(step(0, ids.len() as u64), |h, id| step(h, *id as u64));
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Learned>> {
        // A map of hints: a panic cannot leave it wrong, only stale.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learn(&self, key: u64, change: impl FnOnce(&mut Learned)) {
        let mut sets = self.lock();
        if sets.len() >= HINT_SETS && !sets.contains_key(&key) {
            sets.clear();
        }
        change(sets.entry(key).or_default());
    }

    pub(super) fn is_broad(&self, key: u64) -> bool {
        self.lock().get(&key).and_then(|l| l.broad).is_some_and(fresh)
    }

    pub(super) fn keep_broad(&self, key: u64) {
        self.learn(key, |l| l.broad = Some(Instant::now()));
    }

    /// Whether the set's newest rows were found deep (`Some(true)`) or near the top (`Some(false)`) lately;
    /// `None` when that is not known (then the plan reads from the top and measures).
    pub(super) fn is_deep(&self, key: u64) -> Option<bool> {
        self.lock().get(&key).and_then(|l| l.deep).filter(|(_, at)| fresh(*at)).map(|(deep, _)| deep)
    }

    pub(super) fn keep_deep(&self, key: u64, deep: bool) {
        self.learn(key, |l| l.deep = Some((deep, Instant::now())));
    }

    pub(super) fn newest(&self, key: u64, hosts: &[i64]) -> Option<SetNewest> {
        let sets = self.lock();
        let (newest, held, at) = sets.get(&key)?.newest.as_ref()?;
        (at.elapsed() < NEWEST_FOR && held[..] == *hosts).then_some(*newest)
    }

    pub(super) fn keep_newest(&self, key: u64, hosts: &[i64], newest: SetNewest) {
        self.learn(key, |l| l.newest = Some((newest, hosts.into(), Instant::now())));
    }
}
