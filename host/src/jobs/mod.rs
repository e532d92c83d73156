//! Jobs: validate a request, resolve its targets, run the module off the async runtime with a timeout and
//! cancellation, and persist the outcome.
//!
//! **Architecture invariant:** module code runs only in worker processes, at most `max_concurrent_jobs` at once.
//! A module that ignores cancellation is killed [`GRACE`] after the cancel or timeout, which frees its slot.

mod history;
mod params;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use abi_stable::std_types::RVec;
use omserver_plugin_api::{HostResult, HostStatus, InitRequest, Setting, Target};
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use history::{FilterError, HistoryFilter, MAX_LIMIT as MAX_HISTORY, STATUSES};
pub use params::ParamError;

use crate::{
    backends::{Backend, BackendError, Backends, Host, JobHandle, Progress},
    plugins::{LoadedModule, Registry},
    store::{host_key, HostRow, JobQuery, JobRow, NewJob, ResultRow, Store, StoreError},
    worker::{RunError, Workers, GRACE},
};

/// A request to run a module.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub module: u32,
    /// Inventory hosts by name or internal IP.
    pub hosts: Vec<String>,
    /// Parameter name → value, checked against the module's schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// An available backend by name; the server's `auto_platform` when absent.
    #[serde(default)]
    pub backend: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("module Mid_{0} does not exist; add it to the plugins directory")]
    UnknownModule(u32),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("module {module} does not support the {backend} backend")]
    UnsupportedBackend { module: u32, backend: String },
    #[error(transparent)]
    InvalidParam(#[from] ParamError),
    #[error("no hosts given")]
    NoHosts,
    #[error("unknown hosts (not in the inventory): {}", .0.join(", "))]
    UnknownHosts(Vec<String>),
    #[error("job {0} not found")]
    NotFound(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job with its results, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: i64,
    pub module: i64,
    pub module_version: String,
    pub backend: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub hosts: Vec<String>,
    pub status: String,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub results: Vec<ResultRow>,
}

/// Tunables taken from the configuration.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub files_dir: PathBuf,
    pub module_settings: HashMap<u32, Vec<(String, String)>>,
}

pub struct JobService {
    store: Store,
    registry: Arc<Registry>,
    workers: Arc<Workers>,
    backends: Arc<Backends>,
    settings: JobSettings,
    slots: Arc<Semaphore>,
    /// Every job not yet finished, by id: how to cancel it and what its hosts reported so far.
    live: Mutex<HashMap<i64, LiveJob>>,
    tracker: TaskTracker,
}

struct LiveJob {
    cancel: CancellationToken,
    progress: Arc<Progress>,
}

/// What `/api/jobs/{id}/events` sends: each host result as it arrives, then the job's final view.
#[derive(Debug)]
pub enum JobEvent {
    Host(ResultRow),
    End(Box<JobView>),
}

/// Reads one job's events in order, waiting for new ones while the job runs. Nothing is skipped: it reads the
/// job's progress by index rather than from a channel that could lag.
pub struct EventCursor {
    id: i64,
    service: Arc<JobService>,
    queue: VecDeque<JobEvent>,
    live: Option<(watch::Receiver<usize>, Arc<Progress>, usize)>,
    ended: bool,
}

impl EventCursor {
    /// The next event; `None` after `End`.
    pub async fn next(&mut self) -> Option<JobEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match &mut self.live {
                Some((changes, progress, seen)) => {
                    // Closed is read before the results, so a result pushed just before closing is still read.
                    let closed = progress.is_closed();
                    let fresh = progress.since(*seen);
                    *seen += fresh.len();
                    self.queue.extend(fresh.into_iter().map(|r| JobEvent::Host(result_row(r))));
                    // A closed channel cannot happen while we hold the progress; treat it as the end anyway.
                    let ended = closed || (self.queue.is_empty() && changes.changed().await.is_err());
                    if ended {
                        self.live = None;
                    }
                }
                None => {
                    self.ended = true;
                    match self.service.view(self.id).await {
                        Ok(view) => self.queue.push_back(JobEvent::End(Box::new(view))),
                        Err(err) => tracing::warn!(job_id = self.id, error = %err, "job events: no final view"),
                    }
                }
            }
        }
    }
}

/// A validated job, ready to run: the pinned module, the backend, what `initialise` gets, the resolved hosts.
struct Prepared {
    module: Arc<LoadedModule>,
    backend: Arc<Backend>,
    init: InitRequest,
    hosts: Vec<Host>,
}

/// Why a run ended early.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Cancelled,
    TimedOut,
}

impl JobService {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        workers: Arc<Workers>,
        backends: Arc<Backends>,
        settings: JobSettings,
    ) -> JobService {
        let slots = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        let live = Mutex::default();
        JobService { store, registry, workers, backends, settings, slots, live, tracker: TaskTracker::new() }
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Validates and records a job, starts it, and returns its id at once.
    pub async fn submit(self: &Arc<Self>, request: JobRequest, actor: &str) -> Result<i64, JobError> {
        Ok(self.start(request, actor).await?.0)
    }

    /// Like [`submit`](Self::submit), then waits until the job has finished.
    pub async fn submit_and_wait(self: &Arc<Self>, request: JobRequest, actor: &str) -> Result<i64, JobError> {
        let (id, running) = self.start(request, actor).await?;
        let _ = running.await;
        Ok(id)
    }

    async fn start(
        self: &Arc<Self>,
        request: JobRequest,
        actor: &str,
    ) -> Result<(i64, tokio::task::JoinHandle<()>), JobError> {
        let module = self.registry.get(request.module).ok_or(JobError::UnknownModule(request.module))?;
        let backend = self.backends.get(request.backend.as_deref())?;
        let backend_name = backend.name();
        if !module.meta.backends.is_empty() && !module.meta.backends.iter().any(|b| b == backend_name) {
            return Err(JobError::UnsupportedBackend { module: request.module, backend: backend_name.to_owned() });
        }
        let params = params::validate(&module.meta, &request.params)?;
        let hosts = self.resolve_targets(&request.hosts).await?;
        let targets: Vec<Target> =
            hosts.iter().map(|h| Target { name: h.name.as_str().into(), address: h.address.as_str().into() }).collect();

        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let params_json = params::to_json(&params).to_string();
        let hosts_json = serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned());
        let id = self
            .store
            .insert_job(&NewJob {
                module_id: module.meta.id,
                module_version: &module.meta.version,
                backend: backend_name,
                params: &params_json,
                hosts: &hosts_json,
                created_by: actor,
            })
            .await?;
        tracing::info!(job_id = id, module = module.meta.id, version = %module.meta.version, backend = backend_name, hosts = targets.len(), actor, "job queued");
        metrics::counter!("omserver_jobs_submitted_total").increment(1);

        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        self.lock_live().insert(id, LiveJob { cancel: cancel.clone(), progress: progress.clone() });
        let init = InitRequest {
            module_id: module.meta.id,
            hosts: targets.clone().into(),
            params: params.into(),
            settings: self.settings_for(module.meta.id),
        };
        let service = self.clone();
        let running = self.tracker.spawn(async move {
            service.execute(id, Prepared { module, backend, init, hosts }, cancel, progress.clone()).await;
            // After the outcome is stored: a watcher that sees the close reads the final view.
            progress.close();
            service.lock_live().remove(&id);
        });
        Ok((id, running))
    }

    /// Cancels a queued or running job. False when it is not live (finished, or unknown).
    pub fn cancel(&self, id: i64) -> bool {
        match self.lock_live().get(&id) {
            Some(job) => {
                job.cancel.cancel();
                true
            }
            None => false,
        }
    }

    pub async fn view(&self, id: i64) -> Result<JobView, JobError> {
        let job = self.store.job(id).await?.ok_or(JobError::NotFound(id))?;
        let mut results = self.store.job_results(id).await?;
        if results.is_empty() && job.status == "running" {
            // Not stored yet: show what the backend has reported so far.
            if let Some(live) = self.lock_live().get(&id) {
                results = live.progress.since(0).into_iter().map(result_row).collect();
            }
        }
        Ok(view_of(job, results))
    }

    /// The job's events: every host result reported so far, then each new one as it arrives, then `End` with the
    /// final view. A finished job gives its stored results, then `End`.
    pub async fn events(self: &Arc<Self>, id: i64) -> Result<EventCursor, JobError> {
        let live = self.lock_live().get(&id).map(|job| job.progress.clone());
        let mut cursor = EventCursor { id, service: self.clone(), queue: VecDeque::new(), live: None, ended: false };
        match live {
            Some(progress) => cursor.live = Some((progress.watch(), progress, 0)),
            None => cursor.queue.extend(self.view(id).await?.results.into_iter().map(JobEvent::Host)),
        }
        Ok(cursor)
    }

    /// The jobs a history query selects, newest first, without their results.
    pub async fn history(&self, query: &JobQuery) -> Result<Vec<JobView>, JobError> {
        Ok(self.store.query_jobs(query).await?.into_iter().map(|job| view_of(job, Vec::new())).collect())
    }

    /// Cancels every live job and waits (up to `wait`) for them to record their outcome.
    pub async fn shutdown(&self, wait: Duration) {
        self.tracker.close();
        for job in self.lock_live().values() {
            job.cancel.cancel();
        }
        if tokio::time::timeout(wait, self.tracker.wait()).await.is_err() {
            tracing::warn!("jobs still running at shutdown; they will be failed as interrupted at next start");
        }
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<i64, LiveJob>> {
        // The map holds no invariant a panic could break half-way: recover it.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings_for(&self, module_id: u32) -> RVec<Setting> {
        self.settings
            .module_settings
            .get(&module_id)
            .map(|pairs| {
                pairs.iter().map(|(k, v)| Setting { key: k.as_str().into(), value: v.as_str().into() }).collect()
            })
            .unwrap_or_default()
    }

    /// Every requested name or IP must be a host in the inventory. Order follows the request; repeats collapse.
    async fn resolve_targets(&self, requested: &[String]) -> Result<Vec<Host>, JobError> {
        if requested.is_empty() {
            return Err(JobError::NoHosts);
        }
        let rows = self.store.find_hosts(requested).await?;
        let find = |key: &str| -> Option<&HostRow> {
            let normal = host_key(key);
            rows.iter().find(|h| [key, normal.as_str()].iter().any(|k| h.name == *k || h.ip == *k))
        };
        let unknown: Vec<String> = requested.iter().filter(|k| find(k).is_none()).cloned().collect();
        if !unknown.is_empty() {
            return Err(JobError::UnknownHosts(unknown));
        }
        let mut hosts: Vec<Host> = Vec::new();
        for key in requested {
            if let Some(row) = find(key) {
                if !hosts.iter().any(|h| h.name == row.name) {
                    hosts.push(Host {
                        name: row.name.clone(),
                        address: row.ip.clone(),
                        port: row.port.and_then(|p| u16::try_from(p).ok()),
                        user: row.user.clone(),
                    });
                }
            }
        }
        Ok(hosts)
    }

    async fn execute(&self, id: i64, job: Prepared, cancel: CancellationToken, progress: Arc<Progress>) {
        let Prepared { module, backend, init, hosts } = job;
        let targets: Vec<Target> = init.hosts.to_vec();
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            _ = cancel.cancelled() => None,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(permit) = permit else {
            let stop = if cancel.is_cancelled() { Stop::Cancelled } else { Stop::TimedOut };
            return self.record(id, &targets, Err(self.stop_message(stop)), Some(stop)).await;
        };
        if let Err(err) = self.store.mark_job_running(id).await {
            tracing::error!(job_id = id, error = %err, "cannot mark job running");
        }

        let handle = JobHandle::new(backend, cancel.clone(), self.settings.files_dir.clone(), hosts, progress);
        let run = self.workers.run(&module, &init, &handle, &cancel);
        tokio::pin!(run);
        // The run itself passes a cancel on to the module and kills its worker GRACE later; here only the reason
        // for stopping is decided.
        let mut stop = None;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = cancel.cancelled(), if stop.is_none() => stop = Some(Stop::Cancelled),
                _ = tokio::time::sleep_until(deadline), if stop.is_none() => {
                    tracing::warn!(job_id = id, "job timed out; stopping its module");
                    stop = Some(Stop::TimedOut);
                    cancel.cancel();
                }
            }
        };
        // The worker has returned or been killed: the slot is free for the next job.
        drop(permit);
        // A module that returned because its backend calls were cancelled ended by the cancel, even when its
        // answer arrived before this task saw the cancel.
        let stop = stop.or_else(|| cancel.is_cancelled().then_some(Stop::Cancelled));
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(RunError::Overdue) => Err(format!(
                "{}; the module did not stop within {} s and was killed",
                self.stop_message(stop.unwrap_or(Stop::Cancelled)),
                GRACE.as_secs()
            )),
            Err(RunError::Fault(fault)) => Err(fault.to_string()),
        };
        self.record(id, &targets, outcome, stop).await;
    }

    fn stop_message(&self, stop: Stop) -> String {
        match stop {
            Stop::Cancelled => "cancelled".to_owned(),
            Stop::TimedOut => format!("timed out after {}s", self.settings.timeout.as_secs()),
        }
    }

    /// Stores the outcome: one row per target, whatever the module returned.
    async fn record(&self, id: i64, targets: &[Target], outcome: Result<Vec<HostResult>, String>, stop: Option<Stop>) {
        let (mut results, mut error) = match outcome {
            Ok(results) => (results, None),
            Err(message) => (Vec::new(), Some(message)),
        };
        let rows = rows_for_targets(targets, &mut results, error.as_deref());
        let all_ok = !rows.is_empty() && rows.iter().all(|r| r.status == "ok");
        let status = match stop {
            Some(Stop::Cancelled) => "cancelled",
            Some(Stop::TimedOut) => {
                error = Some(self.stop_message(Stop::TimedOut));
                "failed"
            }
            None if all_ok && error.is_none() => "succeeded",
            None => "failed",
        };
        if error.is_none() && status == "failed" {
            error = Some(failure_summary(&rows));
        }
        metrics::counter!("omserver_jobs_total", "status" => status).increment(1);
        tracing::info!(job_id = id, status, error = error.as_deref().unwrap_or(""), "job finished");
        if let Err(err) = self.store.finish_job(id, status, error.as_deref(), &rows).await {
            tracing::error!(job_id = id, error = %err, "cannot store job outcome");
        }
    }
}

/// One row per target, in target order: the module's result for it, or a failure saying why there is none.
fn rows_for_targets(targets: &[Target], results: &mut Vec<HostResult>, error: Option<&str>) -> Vec<ResultRow> {
    targets
        .iter()
        .map(|target| {
            let result = match results.iter().position(|r| r.host == target.name) {
                Some(i) => results.swap_remove(i),
                None => {
                    HostResult::failed(&target.name, error.unwrap_or("the module reported no result for this host"))
                }
            };
            result_row(result)
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

fn result_row(result: HostResult) -> ResultRow {
    ResultRow {
        host: result.host.into_string(),
        status: match result.status {
            HostStatus::Ok => "ok",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
        }
        .to_owned(),
        rc: result.rc.into_option().map(i64::from),
        stdout: result.stdout.into_string(),
        stderr: result.stderr.into_string(),
        duration_ms: i64::try_from(result.duration_ms).unwrap_or(i64::MAX),
    }
}

fn view_of(job: JobRow, results: Vec<ResultRow>) -> JobView {
    JobView {
        id: job.id,
        module: job.module_id,
        module_version: job.module_version,
        backend: job.backend,
        params: serde_json::from_str(&job.params).unwrap_or(serde_json::Value::Null),
        hosts: serde_json::from_str(&job.hosts).unwrap_or_default(),
        status: job.status,
        error: job.error,
        created_by: job.created_by,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        results,
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
