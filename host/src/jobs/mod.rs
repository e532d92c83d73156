//! Jobs: validate a request, resolve its targets, run the module off the async runtime with a timeout and
//! cancellation, and persist the outcome.
//!
//! **Architecture invariant:** module code runs only in worker processes, at most `max_concurrent_jobs` at once.
//! A module that ignores cancellation is killed [`GRACE`] after the cancel or timeout, which frees its slot.

mod history;
mod params;
mod rollout;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use abi_stable::std_types::RVec;
use omserver_plugin_api::{HostResult, HostStatus, InitRequest, Param, Setting, Target};
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use history::{FilterError, HistoryFilter, MAX_LIMIT as MAX_HISTORY, STATUSES};
pub use params::ParamError;
pub use rollout::{Amount, Rollout, RolloutError};

use crate::{
    backends::{Backend, BackendError, Backends, Entry, Host, JobHandle, Progress, Settled},
    plugins::{LoadedModule, Registry},
    store::{host_key, BatchRow, HostRow, JobQuery, JobRow, NewJob, ResultRow, Store, StoreError},
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
    /// Run the hosts in batches, stopping once too many are not ok. Absent: every host at once.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

/// Which hosts a re-run targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RerunHosts {
    /// Every host of the original job.
    All,
    /// Those that were not ok: failed, unreachable, cancelled, skipped, or without a result.
    NotOk,
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
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("job {0} not found")]
    NotFound(i64),
    #[error("job {0} has not finished; re-run it once it has")]
    NotFinished(i64),
    #[error("every host of job {0} was ok: there is nothing to re-run")]
    NothingToRerun(i64),
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
    /// How the hosts were rolled out, when in batches.
    pub rollout: Option<Rollout>,
    /// The job this one re-runs.
    pub rerun_of: Option<i64>,
    /// The saved job it was run from, and that saved job's definition as it ran.
    pub template_id: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub template_definition: Option<serde_json::Value>,
    /// The jobs that re-run this one, oldest first (empty in history lists).
    pub reruns: Vec<i64>,
    /// Each batch as it ran, in order (empty in history lists). A job without a rollout has one batch.
    pub batches: Vec<BatchView>,
    /// One row per host (empty in history lists): the batches' hosts in order, then the skipped ones.
    pub results: Vec<ResultRow>,
}

/// One batch of a job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchView {
    pub hosts: Vec<String>,
    pub started_at: i64,
    /// Absent while the batch runs.
    pub finished_at: Option<i64>,
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
                    self.queue.extend(fresh.into_iter().map(|e| JobEvent::Host(result_row(e))));
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

/// A validated job, ready to run: the pinned module, the backend, the checked parameters and settings that each
/// batch's `initialise` gets, the resolved hosts and how they roll out.
struct Prepared {
    module: Arc<LoadedModule>,
    backend: Arc<Backend>,
    params: RVec<Param>,
    settings: RVec<Setting>,
    hosts: Vec<Host>,
    plan: rollout::Plan,
    timeout: Duration,
}

/// A module pinned now, the backend it will run on, and its parameters checked against its schema.
struct Checked {
    module: Arc<LoadedModule>,
    backend: Arc<Backend>,
    params: Vec<Param>,
}

/// Where a job comes from, beyond the request: the job it re-runs, or the saved job it runs with that
/// definition (JSON, stored with the job so that a later edit never rewrites history) and its timeout.
#[derive(Debug, Default)]
pub struct JobOrigin {
    pub rerun_of: Option<i64>,
    pub template: Option<(i64, String)>,
    pub timeout: Option<Duration>,
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
        Ok(self.start(request, actor, JobOrigin::default()).await?.0)
    }

    /// Like [`submit`](Self::submit), for a job that comes from a saved job (or names another origin).
    pub async fn submit_from(
        self: &Arc<Self>,
        request: JobRequest,
        actor: &str,
        origin: JobOrigin,
    ) -> Result<i64, JobError> {
        Ok(self.start(request, actor, origin).await?.0)
    }

    /// Like [`submit`](Self::submit), then waits until the job has finished.
    pub async fn submit_and_wait(self: &Arc<Self>, request: JobRequest, actor: &str) -> Result<i64, JobError> {
        let (id, running) = self.start(request, actor, JobOrigin::default()).await?;
        let _ = running.await;
        Ok(id)
    }

    /// Runs a finished job again, with the same module id, parameters, backend and rollout, on all its hosts or
    /// on those that were not ok. The module version loaded now runs, and the parameters are checked against its
    /// schema again.
    pub async fn rerun(self: &Arc<Self>, id: i64, which: RerunHosts, actor: &str) -> Result<i64, JobError> {
        if self.lock_live().contains_key(&id) {
            return Err(JobError::NotFinished(id));
        }
        let origin = self.view(id).await?;
        let hosts: Vec<String> = match which {
            RerunHosts::All => origin.hosts.clone(),
            RerunHosts::NotOk => {
                let ok = |host: &String| origin.results.iter().any(|r| &r.host == host && r.status == "ok");
                origin.hosts.iter().filter(|h| !ok(h)).cloned().collect()
            }
        };
        if hosts.is_empty() {
            return Err(JobError::NothingToRerun(id));
        }
        let request = JobRequest {
            module: u32::try_from(origin.module).map_err(|_| JobError::UnknownModule(u32::MAX))?,
            hosts,
            params: match origin.params {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
            backend: Some(origin.backend),
            rollout: origin.rollout,
        };
        Ok(self.start(request, actor, JobOrigin { rerun_of: Some(id), ..JobOrigin::default() }).await?.0)
    }

    async fn start(
        self: &Arc<Self>,
        request: JobRequest,
        actor: &str,
        origin: JobOrigin,
    ) -> Result<(i64, tokio::task::JoinHandle<()>), JobError> {
        let Checked { module, backend, params } =
            self.checked(request.module, &request.params, request.backend.as_deref())?;
        let backend_name = backend.name();
        let hosts = self.resolve_targets(&request.hosts).await?;
        let plan = match &request.rollout {
            Some(rollout) => rollout.plan(hosts.len())?,
            None => rollout::Plan::all_at_once(hosts.len()),
        };

        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        let params_json = params::to_json(&params).to_string();
        let hosts_json = json_list(&names);
        let rollout_json = request.rollout.as_ref().and_then(|r| serde_json::to_string(r).ok());
        let id = self
            .store
            .insert_job(&NewJob {
                module_id: module.meta.id,
                module_version: &module.meta.version,
                backend: backend_name,
                params: &params_json,
                hosts: &hosts_json,
                created_by: actor,
                rollout: rollout_json.as_deref(),
                rerun_of: origin.rerun_of,
                template_id: origin.template.as_ref().map(|(id, _)| *id),
                definition: origin.template.as_ref().map(|(_, definition)| definition.as_str()),
            })
            .await?;
        tracing::info!(job_id = id, module = module.meta.id, version = %module.meta.version, backend = backend_name,
            hosts = hosts.len(), batch = plan.batch, rerun_of = origin.rerun_of, actor, "job queued");
        metrics::counter!("omserver_jobs_submitted_total").increment(1);

        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        self.lock_live().insert(id, LiveJob { cancel: cancel.clone(), progress: progress.clone() });
        let settings = self.settings_for(module.meta.id);
        let timeout = origin.timeout.unwrap_or(self.settings.timeout);
        let prepared = Prepared { module, backend, params: params.into(), settings, hosts, plan, timeout };
        let service = self.clone();
        let running = self.tracker.spawn(async move {
            service.execute(id, prepared, cancel, progress.clone()).await;
            // After the outcome is stored: a watcher that sees the close reads the final view.
            progress.close();
            service.lock_live().remove(&id);
        });
        Ok((id, running))
    }

    /// Checks a module, its parameters and a backend as a job would, without hosts: what a saved job is checked
    /// with when it is saved.
    pub fn check(
        &self,
        module: u32,
        params: &serde_json::Map<String, serde_json::Value>,
        backend: Option<&str>,
    ) -> Result<(), JobError> {
        self.checked(module, params, backend).map(|_| ())
    }

    /// The module pinned now, the backend, and the parameters checked against the module's schema.
    fn checked(
        &self,
        module_id: u32,
        params: &serde_json::Map<String, serde_json::Value>,
        backend: Option<&str>,
    ) -> Result<Checked, JobError> {
        let module = self.registry.get(module_id).ok_or(JobError::UnknownModule(module_id))?;
        let backend = self.backends.get(backend)?;
        let backend_name = backend.name();
        if !module.meta.backends.is_empty() && !module.meta.backends.iter().any(|b| b == backend_name) {
            return Err(JobError::UnsupportedBackend { module: module_id, backend: backend_name.to_owned() });
        }
        let params = params::validate(&module.meta, params)?;
        Ok(Checked { module, backend, params })
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
        if let Some(live) = self.lock_live().get(&id) {
            // Finished batches are stored; the running one shows each host's latest report so far.
            let stored = results.len();
            for row in live.progress.since(0).into_iter().map(result_row) {
                match results.iter().position(|r| r.host == row.host) {
                    Some(i) if i >= stored => results[i] = row,
                    Some(_) => {}
                    None => results.push(row),
                }
            }
        }
        let batches = self.store.job_batches(id).await?.into_iter().map(batch_view).collect();
        let reruns = self.store.reruns_of(id).await?;
        let mut view = view_of(job, results);
        view.batches = batches;
        view.reruns = reruns;
        Ok(view)
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

    /// Runs the job's batches in order, one module run each, until they are done, the job is cancelled or times
    /// out, or the rollout's failure threshold is passed; then stores the outcome. Hosts that never started are
    /// `skipped`.
    async fn execute(&self, id: i64, job: Prepared, cancel: CancellationToken, progress: Arc<Progress>) {
        let deadline = tokio::time::Instant::now() + job.timeout;
        let timed_out = Stop::TimedOut(job.timeout.as_secs());
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            _ = cancel.cancelled() => None,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(permit) = permit else {
            let stop = if cancel.is_cancelled() { Stop::Cancelled } else { timed_out };
            let message = stop.message();
            return self
                .finish(id, &job.hosts, &progress, Vec::new(), Some(message.clone()), Some(stop), message)
                .await;
        };
        if let Err(err) = self.store.mark_job_running(id).await {
            tracing::error!(job_id = id, error = %err, "cannot mark job running");
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
            if let Err(err) = self.store.finish_batch(id, batch_no, &batch.rows).await {
                tracing::error!(job_id = id, batch_no, error = %err, "cannot store a batch's results");
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
        // The worker has returned or been killed: the slot is free for the next job.
        drop(permit);
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

fn json_list(names: &[&str]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned())
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

fn result_row(entry: Entry) -> ResultRow {
    let Entry { result, settled } = entry;
    ResultRow {
        host: result.host.into_string(),
        status: match (settled, result.status) {
            (Settled::Cancelled, _) => "cancelled",
            (Settled::Skipped, _) => "skipped",
            (Settled::Reported, HostStatus::Ok) => "ok",
            (Settled::Reported, HostStatus::Failed) => "failed",
            (Settled::Reported, HostStatus::Unreachable) => "unreachable",
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
        rollout: job.rollout.as_deref().and_then(|r| serde_json::from_str(r).ok()),
        rerun_of: job.rerun_of,
        template_id: job.template_id,
        template_definition: job.definition.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        reruns: Vec::new(),
        batches: Vec::new(),
        results,
    }
}

fn batch_view(batch: BatchRow) -> BatchView {
    BatchView {
        hosts: serde_json::from_str(&batch.hosts).unwrap_or_default(),
        started_at: batch.started_at,
        finished_at: batch.finished_at,
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
