//! Running a job: its batches in order, each one module run raced against cancel and timeout; settling each host
//! (`ok`, `failed`, `unreachable`, `cancelled`, `skipped`; `lost` is stored for the hosts of a job whose server
//! stopped, see `Store::fail_unfinished_jobs`) and storing the outcome.

use std::{sync::Arc, time::Duration};

use abi_stable::std_types::RVec;
use omserver_plugin_api::{HostResult, InitRequest, Param, Setting, Target};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{json_list, result_row, rollout, JobService};
use crate::{
    backends::{Backend, Entry, Host, JobHandle, Progress, Settled},
    plugins::LoadedModule,
    store::{ResultRow, StoreError},
    worker::{RunError, GRACE},
};

/// A validated job, ready to run: the pinned module, the backend, the checked parameters and settings that each
/// batch's `initialise` gets, the resolved hosts and how they roll out.
pub(super) struct Prepared {
    pub(super) module: Arc<LoadedModule>,
    pub(super) backend: Arc<Backend>,
    pub(super) params: RVec<Param>,
    pub(super) settings: RVec<Setting>,
    pub(super) hosts: Vec<Host>,
    pub(super) plan: rollout::Plan,
    pub(super) timeout: Duration,
}

/// What one batch ended with: a row per host of the batch, the module's or worker's error, and whether a cancel
/// or the timeout stopped it.
struct BatchOutcome {
    rows: Vec<ResultRow>,
    error: Option<String>,
    stop: Option<Stop>,
}

/// Why a run ended early.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Cancelled,
    /// After the job's timeout, in seconds.
    TimedOut(u64),
}

impl Stop {
    /// What the job's error and its stopped hosts say.
    fn message(self) -> String {
        match self {
            Stop::Cancelled => "cancelled".to_owned(),
            Stop::TimedOut(secs) => format!("timed out after {secs}s"),
        }
    }
}

impl JobService {
    /// Runs the job's batches in order, one module run each, until they are done, the job is cancelled or times
    /// out, or the rollout's failure threshold is passed; then stores the outcome. Hosts that never started are
    /// `skipped`.
    /// `slot`: the slot the job was given when it was taken (from the queue, [`super::claim`], or by a server with
    /// one free when it was accepted); otherwise it waits for one.
    pub(super) async fn execute(
        &self,
        id: i64,
        job: Prepared,
        slot: Option<OwnedSemaphorePermit>,
        cancel: CancellationToken,
        progress: Arc<Progress>,
    ) {
        let deadline = tokio::time::Instant::now() + job.timeout;
        let timed_out = Stop::TimedOut(job.timeout.as_secs());
        let permit = match slot {
            Some(slot) => Some(slot),
            None => tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.ok(),
                _ = cancel.cancelled() => None,
                _ = tokio::time::sleep_until(deadline) => None,
            },
        };
        let Some(permit) = permit else {
            let stop = if cancel.is_cancelled() { Stop::Cancelled } else { timed_out };
            let message = stop.message();
            return self
                .finish(id, &job.hosts, &progress, Vec::new(), Some(message.clone()), Some(stop), message)
                .await;
        };
        match self.store.mark_job_running(id, &self.settings.node).await {
            Ok(()) => {}
            // Ended while it waited (a cancel asked before any server took it): it runs nothing.
            Err(StoreError::Conflict(why)) => {
                tracing::info!(job_id = id, why, "job ended before it started; not running it");
                drop(permit);
                self.slot_freed();
                return;
            }
            Err(err) => tracing::error!(job_id = id, error = %err, "cannot mark job running"),
        }

        let total = job.hosts.len();
        let mut rows: Vec<ResultRow> = Vec::with_capacity(total);
        let mut error = None;
        let mut stop = None;
        let mut threshold = None;
        for (batch_no, range) in job.plan.batches(total).into_iter().enumerate() {
            if batch_no > 0 && !job.plan.pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(job.plan.pause) => {}
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep_until(deadline) => cancel_for_timeout(id, &cancel, &mut stop, timed_out),
                }
            }
            if cancel.is_cancelled() {
                stop.get_or_insert(Stop::Cancelled);
                break;
            }
            let batch = self.run_batch(id, batch_no, &job, range, &cancel, deadline, &progress).await;
            match self.store.finish_batch(id, batch_no, &batch.rows).await {
                Ok(()) => {}
                // Another server ended it for this one, taken for gone: run no further batch.
                Err(StoreError::Conflict(why)) => {
                    tracing::error!(job_id = id, batch_no, why, "job ended elsewhere; stopping it");
                    stop.get_or_insert(Stop::Cancelled);
                    break;
                }
                Err(err) => tracing::error!(job_id = id, batch_no, error = %err, "cannot store a batch's results"),
            }
            rows.extend(batch.rows);
            error = error.or(batch.error);
            if batch.stop.is_some() {
                stop = stop.or(batch.stop);
                break;
            }
            let not_ok = rows.iter().filter(|r| r.status != "ok").count();
            if let Some(reason) = job.plan.stop_reason(not_ok, total).filter(|_| rows.len() < total) {
                tracing::warn!(job_id = id, batch_no, not_ok, "rollout stopped: failure threshold passed");
                threshold = Some(reason);
                break;
            }
        }
        // The worker has returned or been killed: the slot is free for the next job, also a queued one.
        drop(permit);
        self.slot_freed();
        let not_started = match (&threshold, stop) {
            (Some(reason), _) => reason.clone(),
            (None, Some(stop)) => stop.message(),
            (None, None) => "the job ended before this host's batch".to_owned(),
        };
        let error = threshold.or(error);
        self.finish(id, &job.hosts, &progress, rows, error, stop, not_started).await;
    }

    /// One batch: an `initialise` + `run` of the module on the batch's hosts, raced against cancel and timeout.
    #[allow(clippy::too_many_arguments)]
    async fn run_batch(
        &self,
        id: i64,
        batch_no: usize,
        job: &Prepared,
        range: std::ops::Range<usize>,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
        progress: &Arc<Progress>,
    ) -> BatchOutcome {
        let hosts = &job.hosts[range];
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        if let Err(err) = self.store.start_batch(id, batch_no, &json_list(&names)).await {
            tracing::error!(job_id = id, batch_no, error = %err, "cannot record a batch's start");
        }
        tracing::info!(job_id = id, batch_no, hosts = hosts.len(), "batch started");
        let targets: Vec<Target> =
            hosts.iter().map(|h| Target { name: h.name.as_str().into(), address: h.address.as_str().into() }).collect();
        let init = InitRequest {
            module_id: job.module.meta.id,
            hosts: targets.clone().into(),
            params: job.params.clone(),
            settings: job.settings.clone(),
        };
        let from = progress.count();
        let handle = JobHandle::new(
            job.backend.clone(),
            cancel.clone(),
            self.settings.files_dir.clone(),
            hosts.to_vec(),
            progress.clone(),
        );
        let run = self.workers.run(&job.module, &init, &handle, cancel);
        tokio::pin!(run);
        // The run itself passes a cancel on to the module and kills its worker GRACE later; here only the reason
        // for stopping is decided.
        let mut stop = None;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = cancel.cancelled(), if stop.is_none() => stop = Some(Stop::Cancelled),
                _ = tokio::time::sleep_until(deadline), if stop.is_none() => {
                    cancel_for_timeout(id, cancel, &mut stop, Stop::TimedOut(job.timeout.as_secs()))
                }
            }
        };
        // A module that returned because its backend calls were cancelled ended by the cancel, even when its
        // answer arrived before this task saw the cancel.
        let stop = stop.or_else(|| cancel.is_cancelled().then_some(Stop::Cancelled));
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(RunError::Overdue) => Err(format!(
                "{}; the module did not stop within {} s and was killed",
                stop.unwrap_or(Stop::Cancelled).message(),
                GRACE.as_secs()
            )),
            Err(RunError::Fault(fault)) => Err(fault.to_string()),
        };
        let (results, error) = match outcome {
            Ok(results) => (results, None),
            Err(message) => (Vec::new(), Some(message)),
        };
        let stop_message = stop.map(Stop::message);
        let settled = settle(&targets, results, error.as_deref(), stop_message.as_deref(), &progress.since(from));
        let mut rows = Vec::with_capacity(settled.len());
        for (entry, unseen) in settled {
            if unseen {
                progress.push(entry.result.clone(), entry.settled);
            }
            rows.push(result_row(entry));
        }
        BatchOutcome { rows, error, stop }
    }

    /// Stores the outcome: the rows of the batches that ran (already stored with their batch) decide the status,
    /// and every host after them is stored as skipped, saying why.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        id: i64,
        hosts: &[Host],
        progress: &Progress,
        ran: Vec<ResultRow>,
        mut error: Option<String>,
        stop: Option<Stop>,
        not_started: String,
    ) {
        let mut skipped = Vec::new();
        for host in &hosts[ran.len().min(hosts.len())..] {
            let entry = Entry {
                result: HostResult::failed(&host.name, &format!("not started: {not_started}")),
                settled: Settled::Skipped,
            };
            progress.push(entry.result.clone(), entry.settled);
            skipped.push(result_row(entry));
        }
        let all_ok = !ran.is_empty() && skipped.is_empty() && ran.iter().all(|r| r.status == "ok");
        let status = match stop {
            Some(Stop::Cancelled) => {
                error = error.or_else(|| Some(Stop::Cancelled.message()));
                "cancelled"
            }
            Some(timed_out @ Stop::TimedOut(_)) => {
                error = Some(timed_out.message());
                "failed"
            }
            None if all_ok && error.is_none() => "succeeded",
            None => "failed",
        };
        if error.is_none() && status == "failed" {
            error = Some(failure_summary(&ran));
        }
        metrics::counter!("omserver_jobs_total", "status" => status).increment(1);
        tracing::info!(job_id = id, status, error = error.as_deref().unwrap_or(""), "job finished");
        if let Err(err) = self.store.finish_job(id, status, error.as_deref(), &skipped).await {
            tracing::error!(job_id = id, error = %err, "cannot store job outcome");
        }
    }
}

/// The timeout has come: stop the module (the cancel reaches its worker) and say why.
fn cancel_for_timeout(id: i64, cancel: &CancellationToken, stop: &mut Option<Stop>, timed_out: Stop) {
    tracing::warn!(job_id = id, "job timed out; stopping its module");
    stop.get_or_insert(timed_out);
    cancel.cancel();
}

/// One entry per target of a batch, in target order, and whether the progress has not shown it yet.
///
/// - A host whose last report in this batch is a cancel is `cancelled`, with the stop's reason; one whose call
///   came after the cancel is `skipped`.
/// - A host the backend reported: after a stop, that report as it was (the module was told "cancelled" for every
///   host of the call it was in, including those that had finished); otherwise the module's result, which may
///   add to what the backend said, falling back to the report.
/// - A host nothing reported: after a stop, `skipped` (it never started); otherwise the module's result, or a
///   failure saying why there is none.
fn settle(
    targets: &[Target],
    mut results: Vec<HostResult>,
    error: Option<&str>,
    stop: Option<&str>,
    reported: &[Entry],
) -> Vec<(Entry, bool)> {
    targets
        .iter()
        .map(|target| {
            let from_module = results.iter().position(|r| r.host == target.name).map(|i| results.swap_remove(i));
            let last = reported.iter().rev().find(|e| e.result.host == target.name);
            match (last, stop) {
                (Some(entry), Some(reason)) if entry.settled == Settled::Cancelled => {
                    let mut result = entry.result.clone();
                    result.stderr = reason.into();
                    (Entry { result, settled: Settled::Cancelled }, false)
                }
                (Some(entry), Some(reason)) if entry.settled == Settled::Skipped => {
                    let result = HostResult::failed(&target.name, &format!("not started: {reason}"));
                    (Entry { result, settled: Settled::Skipped }, true)
                }
                (Some(entry), Some(_)) => (entry.clone(), false),
                (Some(entry), None) => {
                    let result = from_module.unwrap_or_else(|| entry.result.clone());
                    let unseen = result != entry.result;
                    (Entry { result, settled: Settled::Reported }, unseen)
                }
                (None, Some(reason)) => {
                    let result = HostResult::failed(&target.name, &format!("not started: {reason}"));
                    (Entry { result, settled: Settled::Skipped }, true)
                }
                (None, None) => {
                    let result = from_module.unwrap_or_else(|| {
                        HostResult::failed(&target.name, error.unwrap_or("the module reported no result for this host"))
                    });
                    (Entry { result, settled: Settled::Reported }, true)
                }
            }
        })
        .collect()
}

/// The job's error when hosts failed: how many, and when every one failed the same way (salt-api down, a bad key
/// for all), that reason, so the job's own error says what happened.
fn failure_summary(rows: &[ResultRow]) -> String {
    let bad: Vec<&ResultRow> = rows.iter().filter(|r| r.status != "ok").collect();
    let counted = format!("{} of {} hosts did not succeed", bad.len(), rows.len());
    match bad.first() {
        Some(first)
            if bad.len() > 1
                && !first.stderr.is_empty()
                && bad.iter().all(|r| r.status == first.status && r.stderr == first.stderr) =>
        {
            let reason = first.stderr.lines().next().unwrap_or_default();
            format!("{counted}; all {}: {reason}", first.status)
        }
        _ => counted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, status: &str, stderr: &str) -> ResultRow {
        ResultRow {
            host: host.into(),
            status: status.into(),
            rc: None,
            stdout: String::new(),
            stderr: stderr.into(),
            duration_ms: 0,
        }
    }

    #[test]
    fn a_reason_shared_by_every_failed_host_becomes_the_jobs_error() {
        let down = "salt-api at http://127.0.0.1:8000 refused the connection";
        let all = [row("m1", "unreachable", down), row("m2", "unreachable", down)];
        assert_eq!(failure_summary(&all), format!("2 of 2 hosts did not succeed; all unreachable: {down}"));
        let mixed = [row("m1", "unreachable", down), row("m2", "failed", "exit 1"), row("m3", "ok", "")];
        assert_eq!(failure_summary(&mixed), "2 of 3 hosts did not succeed");
        assert_eq!(failure_summary(&[row("m1", "failed", "exit 1")]), "1 of 1 hosts did not succeed");
    }
}
