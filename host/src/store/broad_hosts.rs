//! Sets of hosts known to hold many audit rows: what SQLite's search plan counts through the host index on every
//! query of a scoped caller (the same hundreds of hosts each time), remembered for a while instead.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long a set of hosts found to hold many rows (the plan's `NARROW_ROWS`) is taken to still hold them.
const BROAD_FOR: Duration = Duration::from_secs(60);
/// At most this many sets are remembered (then the memory starts again).
const BROAD_SETS: usize = 1_000;

/// Sets of hosts known to hold many rows, by a hash of their ids (the audit search plan's probe).
#[derive(Debug, Clone, Default)]
pub(super) struct BroadHosts(Arc<Mutex<HashMap<u64, Instant>>>);

impl BroadHosts {
    /// The same for the same hosts in any order.
    pub(super) fn key(ids: &[i64]) -> u64 {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        sorted.hash(&mut hasher);
        hasher.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        // A map of hints: a panic cannot leave it wrong, only stale.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn holds(&self, key: u64) -> bool {
        self.lock().get(&key).is_some_and(|at| at.elapsed() < BROAD_FOR)
    }

    pub(super) fn keep(&self, key: u64) {
        let mut sets = self.lock();
        if sets.len() >= BROAD_SETS {
            sets.clear();
        }
        sets.insert(key, Instant::now());
    }
}
