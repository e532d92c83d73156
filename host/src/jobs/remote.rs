//! Jobs that run on another server of the database (PostgreSQL): what makes a job page and a cancel work on
//! whichever server a load balancer picked. A job runs on the server that took it; that server copies its progress
//! into the database as it grows ([`copy_progress`]) and signals it; every server listens ([`listen`]), wakes the
//! job pages it serves for that job, and cancels its own jobs whose cancel was asked elsewhere. A signal lost on
//! a dropped connection is made good by reading again: pages read on a timer too, cancels are asked of the
//! database on every reconnect.

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{result_row, JobService};
use crate::{
    backends::Progress,
    cluster::signals::{Hearing, Signal},
    store::{CANCEL_CHANNEL, JOB_CHANNEL, QUEUED_CHANNEL},
};

/// How long a page of another server's job waits for a signal before it reads anyway.
pub(super) const REREAD: Duration = Duration::from_secs(2);

/// What job pages on this server are told: a job whose progress grew or that ended, or `None` for "signals may
/// have been lost: read again".
pub(super) type Signals = broadcast::Sender<Option<i64>>;

/// Copies a running job's progress into the database as it grows, until it closes; then drops the copy (the
/// job's results are stored by then). Where no other server can read it, there is nothing to do.
pub(super) async fn copy_progress(service: Arc<JobService>, id: i64, progress: Arc<Progress>) {
    let store = &service.store;
    let mut changes = progress.watch();
    let mut copied = 0;
    loop {
        // Once closed, the job's results are stored and pages read those: nothing more to copy.
        let closed = progress.is_closed();
        let fresh: Vec<_> = progress.since(copied).into_iter().map(result_row).collect();
        if !closed && !fresh.is_empty() {
            match store.record_progress(id, copied as i64, &fresh).await {
                Ok(()) => copied += fresh.len(),
                // Left for the next change: the job's own results do not depend on this copy.
                Err(err) => {
                    tracing::warn!(job_id = id, error = %err, "cannot copy the job's progress for other servers")
                }
            }
        }
        if closed || changes.changed().await.is_err() {
            break;
        }
    }
    if let Err(err) = store.drop_progress(id).await {
        tracing::warn!(job_id = id, error = %err, "cannot drop the job's copied progress");
    }
}

/// Listens for other servers' job signals until `shutdown`: wakes this server's pages of their jobs and its
/// taking of queued jobs ([`super::claim`]), and cancels this server's jobs whose cancel was asked on another.
pub async fn listen(service: Arc<JobService>, shutdown: CancellationToken) {
    let channels = &[JOB_CHANNEL, CANCEL_CHANNEL, QUEUED_CHANNEL];
    let mut hearing = Hearing::new(service.store.clone(), channels, "job signals", shutdown);
    while let Some(signal) = hearing.next().await {
        match signal {
            Signal::On { channel, payload } => match (channel.as_str(), payload.parse::<i64>()) {
                (JOB_CHANNEL, Ok(id)) => {
                    let _ = service.signals.send(Some(id));
                }
                (QUEUED_CHANNEL, Ok(_)) => service.wake_claims.notify_one(),
                (CANCEL_CHANNEL, Ok(id)) => {
                    if service.cancel(id) {
                        tracing::info!(job_id = id, "job cancelled, as asked on another server");
                    }
                }
                _ => tracing::debug!(%channel, %payload, "a job signal not understood"),
            },
            // Whatever was signalled while nobody listened.
            Signal::Missed => {
                let _ = service.signals.send(None);
                service.wake_claims.notify_one();
                cancel_asked(&service).await;
            }
        }
    }
}

/// Cancels this server's jobs whose cancel was asked elsewhere (the signal may have been missed).
async fn cancel_asked(service: &JobService) {
    match service.store.cancels_asked(&service.settings.node).await {
        Ok(ids) => {
            for id in ids {
                if service.cancel(id) {
                    tracing::info!(job_id = id, "job cancelled, as asked on another server");
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the cancels asked on other servers"),
    }
}
