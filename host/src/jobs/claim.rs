//! Where servers share the database (PostgreSQL): the queued jobs this server takes. A job accepted by a server
//! with a free slot is that server's from the start (`JobService::start`); one accepted when every slot was busy
//! waits `queued` with no server of its own (and the content hash of the module it was accepted with); each
//! server, whenever it has a free slot, takes the oldest such job whose module it serves with that very hash
//! (`Store::claim_queued_job`, `FOR UPDATE SKIP LOCKED`), checks it again as it is now, and runs it. A queued job
//! outlives the server that accepted it: another takes it. `max_concurrent_jobs` stays per server.
//!
//! Woken when a job is queued (the `omserver_queued` signal, heard by [`super::remote::listen`]) and when a slot
//! comes free; also every [`POLL`], for a signal lost on a dropped connection.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use omserver_plugin_api::HostResult;

use super::{result_row, JobService};
use crate::{
    backends::{Entry, Settled},
    store::{ResultRow, StoreError},
};

/// How often queued jobs are looked for without being woken.
const POLL: Duration = Duration::from_secs(2);
/// How often jobs queued for too long are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// Takes queued jobs until `stop`. From its start on, a job this server accepts is queued for any server, also
/// while it stops (another server, or this one's next start, runs it).
pub async fn run(service: Arc<JobService>, stop: CancellationToken) {
    if !service.store.shared_by_servers() {
        return;
    }
    service.claiming.store(true, Ordering::SeqCst);
    let mut expired_at = tokio::time::Instant::now();
    loop {
        take(&service).await;
        if expired_at.elapsed() >= EXPIRE_EVERY {
            expired_at = tokio::time::Instant::now();
            expire(&service).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = service.wake_claims.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Takes queued jobs while a slot is free and one is there to take.
async fn take(service: &Arc<JobService>) {
    loop {
        // The slot is taken before the job: a job taken is never left waiting for one.
        let Ok(permit) = service.slots.clone().try_acquire_owned() else { return };
        let modules: Vec<String> = service.registry.serving().into_iter().map(|(_, sha256)| sha256).collect();
        if modules.is_empty() {
            return;
        }
        match service.store.claim_queued_job(&service.settings.node, &modules).await {
            Ok(Some(job)) => service.start_claimed(job, permit).await,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot take queued jobs");
                return;
            }
        }
    }
}

/// Ends the jobs that waited longer than the job timeout for a server to take them, as a job waiting for a slot
/// of its own server times out: every slot was busy, or no server serves its module with the same content.
async fn expire(service: &JobService) {
    let timeout = service.settings.timeout;
    let cutoff = crate::store::now_ms().saturating_sub(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
    let stale = match service.store.untaken_since(cutoff).await {
        Ok(stale) => stale,
        Err(err) => return tracing::warn!(error = %err, "cannot look for jobs queued too long"),
    };
    let why = format!(
        "timed out after {}s queued: no server with a free slot and this job's module (the same content) took it",
        timeout.as_secs()
    );
    for id in stale {
        match service.end_untaken(id, "failed", &why).await {
            Ok(true) => tracing::warn!(job_id = id, "queued job timed out: no server took it"),
            // Taken or ended meanwhile.
            Ok(false) => {}
            Err(err) => tracing::warn!(job_id = id, error = %err, "cannot end a job queued too long"),
        }
    }
}

/// A `skipped` row for each of a job's hosts (`hosts`: its JSON list), saying why they never started.
pub(super) fn skipped(hosts: &str, why: &str) -> Vec<ResultRow> {
    let hosts: Vec<String> = serde_json::from_str(hosts).unwrap_or_default();
    hosts
        .iter()
        .map(|host| {
            let result = HostResult::failed(host, &format!("not started: {why}"));
            result_row(Entry { result, settled: Settled::Skipped })
        })
        .collect()
}

impl JobService {
    /// Whether a job accepted now is queued for whichever server takes it.
    pub(super) fn queues_for_any_server(&self) -> bool {
        self.claiming.load(Ordering::SeqCst)
    }

    /// Tells the servers (this one included) that job `id` waits to be taken.
    pub(super) async fn announce_queued(&self, id: i64) {
        if let Err(err) = self.store.signal_queued(id).await {
            // Found anyway within POLL.
            tracing::warn!(job_id = id, error = %err, "cannot signal a queued job");
        }
        self.wake_claims.notify_one();
    }

    /// Ends job `id` as `status` if it is queued and no server took it: each of its hosts `skipped`, saying
    /// `why`, as a job that never got a slot of its own server. False when it was taken or had ended.
    pub(super) async fn end_untaken(&self, id: i64, status: &str, why: &str) -> Result<bool, StoreError> {
        let Some(job) = self.store.job(id).await? else { return Ok(false) };
        match self.store.end_untaken_job(id, status, why, &skipped(&job.hosts, why)).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Wakes the taking of queued jobs: a slot came free.
    pub(super) fn slot_freed(&self) {
        if self.queues_for_any_server() {
            self.wake_claims.notify_one();
        }
    }
}
