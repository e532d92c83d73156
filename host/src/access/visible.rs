//! The hosts a scope sees, worked out once per inventory snapshot and set of grants rather than on every request:
//! every audit query and stream of a scoped caller asks, and 20 grants over 1 000 hosts took ~40 µs of a
//! ~400 µs listing (hashing each host's categories, then the ids).
//!
//! An answer is reused only for the same snapshot (the same `Arc`, held here, so its address cannot be taken by
//! another) and grants equal field by field: it is what [`Scope::visible_ids`] would say, never an estimate.

use std::sync::{Arc, Mutex};

use super::{Grant, Scope};
use crate::store::HostRow;

/// At most this many answers are kept (scoped callers active at once); past it, the oldest goes.
const KEPT: usize = 64;

struct Kept {
    inventory: Arc<[HostRow]>,
    grants: Arc<[Grant]>,
    ids: Arc<[i64]>,
}

#[derive(Default)]
pub(super) struct VisibleHosts(Mutex<Vec<Kept>>);

impl VisibleHosts {
    /// [`Scope::visible_ids`] of `inventory`, as a shared slice in ascending order.
    pub(super) fn of(&self, scope: &Scope, inventory: &Arc<[HostRow]>) -> Option<Arc<[i64]>> {
        let Scope::Granted(grants) = scope else { return None };
        let same = |k: &Kept| Arc::ptr_eq(&k.inventory, inventory) && k.grants[..] == grants[..];
        if let Some(kept) = self.lock().iter().find(|k| same(k)) {
            return Some(kept.ids.clone());
        }
        let ids: Arc<[i64]> = scope.visible_ids(inventory)?.into();
        let mut kept = self.lock();
        // Answers over an older snapshot are never asked for again.
        kept.retain(|k| Arc::ptr_eq(&k.inventory, inventory));
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push(Kept { inventory: inventory.clone(), grants: grants.clone(), ids: ids.clone() });
        Some(ids)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        // Answers, each whole or absent: a panic elsewhere cannot leave one wrong.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        access::{tests::host, GrantSpec},
        auth::Role,
    };

    fn on(function: &str) -> Scope {
        let spec = GrantSpec { functions: vec![function.to_owned()], ..Default::default() };
        Scope::Granted(vec![Grant { role: Role::Viewer, spec }].into())
    }

    #[test]
    fn an_answer_is_reused_only_for_the_same_snapshot_and_equal_grants() {
        let visible = VisibleHosts::default();
        let first: Arc<[HostRow]> =
            vec![host(3, "DB", "app", &[]), host(1, "DB", "app", &[]), host(2, "Web", "app", &[])].into();
        assert_eq!(visible.of(&on("DB"), &first).as_deref(), Some(&[1, 3][..]), "in ascending order");
        // Grants parsed again for the next request: equal, another allocation.
        assert_eq!(visible.of(&on("DB"), &first).as_deref(), Some(&[1, 3][..]));
        assert_eq!(visible.0.lock().unwrap().len(), 1, "equal grants: the one answer kept");
        assert_eq!(visible.of(&on("Web"), &first).as_deref(), Some(&[2][..]), "other grants, their own answer");
        // The same rows in a new snapshot (host 1 moved to Web): never the old answer.
        let second: Arc<[HostRow]> =
            vec![host(3, "DB", "app", &[]), host(1, "Web", "app", &[]), host(2, "Web", "app", &[])].into();
        assert_eq!(visible.of(&on("DB"), &second).as_deref(), Some(&[3][..]));
        assert_eq!(visible.0.lock().unwrap().len(), 1, "the older snapshot's answers are dropped");
        assert_eq!(visible.of(&Scope::All, &second), None);
    }
}
