//! Work that one server of the database does at a time: the notifier (facts turned into deliveries, the audit log
//! followed for alerts, deliveries sent, the periodic checks) and audit retention. Two servers doing it would send
//! each notification twice and count each alert twice. The server that holds the database's lock on the work's
//! name does it (`Store::lock_work`); the others ask again every few seconds, so when the leader stops (cleanly or
//! not: PostgreSQL lets go of a dead session's lock) another one takes the work over within seconds. On SQLite
//! and MariaDB there is one server, and it always leads.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a server that does not lead asks for the lock, and a leader checks that it still holds it.
const ASK_EVERY: Duration = Duration::from_secs(5);

/// Runs `work` (started by `start` with a token that stops it) while this server holds the lock on `name`, until
/// `shutdown`. A leader that loses the lock (its connection to the database ended) stops the work and asks again.
pub async fn lead<F, Fut>(store: Store, name: &'static str, shutdown: CancellationToken, start: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let mut lock = loop {
            match store.lock_work(name).await {
                Ok(Some(lock)) => break lock,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(work = name, error = %err, "cannot ask for the lock of work done by one server")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(ASK_EVERY) => {}
            }
        };
        tracing::info!(work = name, "this server does it now");
        let stop = shutdown.child_token();
        let mut task = tokio::spawn(start(stop.clone()));
        let ended_itself = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = &mut task => break true,
                _ = tokio::time::sleep(ASK_EVERY) => {}
            }
            if !lock.holds().await {
                tracing::warn!(work = name, "lost the lock (the database connection ended): stopping the work");
                break false;
            }
        };
        stop.cancel();
        if !ended_itself {
            let _ = task.await;
        }
        drop(lock);
        if shutdown.is_cancelled() {
            return;
        }
        if ended_itself {
            // It stopped by itself (it logged why): let another server try, and try again later.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(ASK_EVERY) => {}
            }
        }
    }
}
