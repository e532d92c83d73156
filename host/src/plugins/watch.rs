//! Watches plugins.d and reconciles the registry when it changes.

use std::{sync::Arc, time::Duration};

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::activity::{Activity, Actor};

/// Events closer together than this are handled in one pass (a copy or build writes many times).
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How soon to look again at a file that was still changing.
const RETRY_UNSETTLED: Duration = Duration::from_millis(200);
/// A full pass now and then, in case the kernel dropped events (inotify queue overflow).
const SAFETY_NET: Duration = Duration::from_secs(30);

/// Starts watching `registry.dir()`; each file loaded, replaced, rejected or removed goes to `activity`. The returned task ends when `shutdown` is cancelled.
pub fn spawn(
    registry: Arc<Registry>,
    activity: Activity,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, notify::Error> {
    // Capacity 1: one pending wake-up is enough, because a pass reads the whole directory.
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        if let Err(errors) = &result {
            for error in errors {
                tracing::warn!(error = %error, "plugins directory watch error");
            }
        }
        let _ = wake.try_send(());
    })?;
    debouncer.watch(registry.dir(), RecursiveMode::NonRecursive)?;

    Ok(tokio::spawn(async move {
        // Owned by the task so that watching stops when it ends.
        let _debouncer = debouncer;
        // The first pass runs at once: a file that arrived between the start-up scan and the watch being set up
        // raised no event.
        let mut first = true;
        let mut unsettled = false;
        loop {
            let pause = if unsettled { RETRY_UNSETTLED } else { SAFETY_NET };
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = woken.recv() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            let outcome = registry.reconcile().await;
            for change in outcome.changes {
                activity.record(&Actor::internal("server"), change).await;
            }
            unsettled = outcome.unsettled;
        }
    }))
}
