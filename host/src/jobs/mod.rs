//! Jobs: validate a request, resolve its targets, run the module off the async runtime with a timeout and
//! cancellation, and persist the outcome.
//!
//! **Architecture invariant:** module code runs only in worker processes, at most `max_concurrent_jobs` at once.
//! A module that ignores cancellation is killed [`GRACE`](crate::worker::GRACE) after the cancel or timeout, which frees its slot.

pub mod claim;
mod events;
mod history;
mod params;
pub mod remote;
mod rollout;
mod run;
mod start;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use abi_stable::std_types::RVec;
use omserver_plugin_api::{HostStatus, Param, Setting};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use events::{EventCursor, JobEvent};
pub use history::{FilterError, HistoryFilter, MAX_LIMIT as MAX_HISTORY, STATUSES};
pub use params::ParamError;
pub use rollout::{Amount, Rollout, RolloutError};

use crate::{
    access::Scope,
    approvals::ApprovalView,
    backends::{Backend, BackendError, Backends, Entry, Host, Progress, Settled},
    plugins::{LoadedModule, Registry},
    store::{host_key, BatchRow, HostRow, JobQuery, JobRow, ResultRow, Store, StoreError},
    worker::Workers,
};

/// A request to run a module.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RerunHosts {
    /// Every host of the original job.
    All,
    /// Those that were not ok: failed, unreachable, lost, cancelled, skipped, or without a result.
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
    /// Hosts the caller's grants do not let it run this on ([`crate::access`]).
    #[error("your grants do not cover running this on: {}", .0.join(", "))]
    OutsideGrants(Vec<String>),
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
    /// When an approval policy held it: who asked, until when, and the decision (absent in history lists).
    pub approval: Option<ApprovalView>,
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
    /// This server's `node_name`: its jobs say they run here.
    pub node: String,
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
    /// Other servers' jobs signalled ([`remote`]), for the job pages this server serves.
    signals: remote::Signals,
    /// Set while this server takes queued jobs from the database ([`claim`]): a job it accepts is then queued
    /// for whichever server takes it, instead of started here.
    claiming: std::sync::atomic::AtomicBool,
    /// Wakes the taking of queued jobs: one was queued, or a slot came free.
    wake_claims: tokio::sync::Notify,
}

struct LiveJob {
    cancel: CancellationToken,
    progress: Arc<Progress>,
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
    /// A schedule started it (an approval policy may exempt those runs).
    pub scheduled: bool,
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
        let (signals, _) = tokio::sync::broadcast::channel(1024);
        JobService {
            store,
            registry,
            workers,
            backends,
            settings,
            slots,
            live,
            tracker: TaskTracker::new(),
            signals,
            claiming: Default::default(),
            wake_claims: Default::default(),
        }
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Validates and records a job, starts it, and returns its id at once. Every host must be within `scope`.
    pub async fn submit(self: &Arc<Self>, request: JobRequest, actor: &str, scope: &Scope) -> Result<i64, JobError> {
        Ok(self.start(request, actor, scope, JobOrigin::default()).await?.0)
    }

    /// Like [`submit`](Self::submit), for a job that comes from a saved job (or names another origin).
    pub async fn submit_from(
        self: &Arc<Self>,
        request: JobRequest,
        actor: &str,
        scope: &Scope,
        origin: JobOrigin,
    ) -> Result<i64, JobError> {
        Ok(self.start(request, actor, scope, origin).await?.0)
    }

    /// Like [`submit`](Self::submit), unscoped (the command line), then waits until the job has finished.
    /// When an approval policy holds it, returns at once: it runs once approved.
    pub async fn submit_and_wait(self: &Arc<Self>, request: JobRequest, actor: &str) -> Result<i64, JobError> {
        let (id, running) = self.start(request, actor, &Scope::All, JobOrigin::default()).await?;
        if let Some(running) = running {
            let _ = running.await;
        }
        Ok(id)
    }

    /// Runs a finished job again, with the same module id, parameters, backend and rollout, on all its hosts or
    /// on those that were not ok. The module version loaded now runs, and the parameters are checked against its
    /// schema again.
    pub async fn rerun(
        self: &Arc<Self>,
        id: i64,
        which: RerunHosts,
        actor: &str,
        scope: &Scope,
    ) -> Result<i64, JobError> {
        let origin = self.view_in(id, scope).await?;
        if self.lock_live().contains_key(&id) {
            return Err(JobError::NotFinished(id));
        }
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
        let origin = JobOrigin { rerun_of: Some(id), ..JobOrigin::default() };
        Ok(self.start(request, actor, scope, origin).await?.0)
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

    /// Cancels job `id` for a caller within `scope`: it must see the job (else `NotFound`) and be able to run
    /// it on every host (else `OutsideGrants`). False when the job has finished.
    pub async fn cancel_in(&self, id: i64, scope: &Scope) -> Result<bool, JobError> {
        if !scope.is_all() {
            let job = self.store.job(id).await?.ok_or(JobError::NotFound(id))?;
            let hosts: Vec<String> = serde_json::from_str(&job.hosts).unwrap_or_default();
            let inventory = self.store.find_hosts(&hosts).await?;
            if !scope.sees_all(&inventory, &hosts) {
                return Err(JobError::NotFound(id));
            }
            let module = u32::try_from(job.module_id).unwrap_or(u32::MAX);
            let outside = scope.outside(&inventory, &hosts, module, job.template_id);
            if !outside.is_empty() {
                return Err(JobError::OutsideGrants(outside));
            }
        }
        if self.cancel(id) {
            return Ok(true);
        }
        // Where servers share the database: queued for any server and taken by none yet, it ends here; running
        // (or taken) on another server, that one is asked to cancel it.
        if self.store.shared_by_servers() && self.end_untaken(id, "cancelled", "cancelled").await? {
            return Ok(true);
        }
        Ok(self.store.request_cancel(id).await?)
    }

    /// Job `id` as a caller within `scope` sees it: a job on a host it does not see does not exist for it.
    pub async fn view_in(&self, id: i64, scope: &Scope) -> Result<JobView, JobError> {
        let view = self.view(id).await?;
        if !scope.is_all() && !scope.sees_all(&self.store.find_hosts(&view.hosts).await?, &view.hosts) {
            return Err(JobError::NotFound(id));
        }
        Ok(view)
    }

    pub async fn view(&self, id: i64) -> Result<JobView, JobError> {
        let job = self.store.job(id).await?.ok_or(JobError::NotFound(id))?;
        let mut results = self.store.job_results(id).await?;
        // Finished batches are stored; the running one shows each host's latest report so far: from this server's
        // memory, or from the copy the server running it keeps in the database.
        let live = self.lock_live().get(&id).map(|live| live.progress.since(0).into_iter().map(result_row).collect());
        let reported: Vec<ResultRow> = match live {
            Some(rows) => rows,
            None if job.status == "running" && self.store.shared_by_servers() => self.store.job_progress(id, 0).await?,
            None => Vec::new(),
        };
        let stored = results.len();
        for row in reported {
            match results.iter().position(|r| r.host == row.host) {
                Some(i) if i >= stored => results[i] = row,
                Some(_) => {}
                None => results.push(row),
            }
        }
        let batches = self.store.job_batches(id).await?.into_iter().map(batch_view).collect();
        let reruns = self.store.reruns_of(id).await?;
        let approval = self.store.approval(id).await?;
        let mut view = view_of(job, results);
        view.batches = batches;
        view.reruns = reruns;
        view.approval = approval.map(ApprovalView::from);
        Ok(view)
    }

    /// The job's events: every host result reported so far, then each new one as it arrives, then `End` with the
    /// final view. A finished job gives its stored results, then `End`. A job `scope` does not see is not found.
    pub async fn events(self: &Arc<Self>, id: i64, scope: &Scope) -> Result<EventCursor, JobError> {
        if !scope.is_all() {
            let job = self.store.job(id).await?.ok_or(JobError::NotFound(id))?;
            let hosts: Vec<String> = serde_json::from_str(&job.hosts).unwrap_or_default();
            if !scope.sees_all(&self.store.find_hosts(&hosts).await?, &hosts) {
                return Err(JobError::NotFound(id));
            }
        }
        // Subscribed before anything is read: a signal sent meanwhile is not missed.
        let signals = self.signals.subscribe();
        let live = self.lock_live().get(&id).map(|job| job.progress.clone());
        let mut cursor =
            EventCursor { id, service: self.clone(), queue: VecDeque::new(), live: None, remote: None, ended: false };
        match live {
            Some(progress) => cursor.live = Some((progress.watch(), progress, 0)),
            None => {
                let view = self.view(id).await?;
                if self.store.shared_by_servers() && matches!(view.status.as_str(), "queued" | "running") {
                    // Another server runs it: its progress comes through the database.
                    cursor.remote = Some((signals, 0));
                } else {
                    cursor.queue.extend(view.results.into_iter().map(JobEvent::Host));
                }
            }
        }
        Ok(cursor)
    }

    /// The jobs a history query selects, newest first, without their results; for a scoped caller, only jobs
    /// whose every host it sees (read page after page until the page is full or the history ends).
    pub async fn history(&self, query: &JobQuery, scope: &Scope) -> Result<Vec<JobView>, JobError> {
        if scope.is_all() {
            return Ok(self.store.query_jobs(query).await?.into_iter().map(|job| view_of(job, Vec::new())).collect());
        }
        let inventory = self.store.inventory_snapshot().await?;
        // Whole pages: a caller who sees few of the jobs would otherwise cost a query per hundred.
        let mut page = JobQuery { limit: history::MAX_LIMIT, ..query.clone() };
        let mut seen = Vec::new();
        loop {
            let rows = self.store.query_jobs(&page).await?;
            let full = rows.len() as i64 == page.limit;
            page.before = rows.last().map(|job| job.id);
            for job in rows {
                let view = view_of(job, Vec::new());
                if scope.sees_all(&inventory, &view.hosts) {
                    seen.push(view);
                    if seen.len() as i64 == query.limit {
                        return Ok(seen);
                    }
                }
            }
            if !full {
                return Ok(seen);
            }
        }
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
    /// Also the inventory rows found (with their tags), for the grants check.
    async fn resolve_targets(&self, requested: &[String]) -> Result<(Vec<Host>, Vec<HostRow>), JobError> {
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
        Ok((hosts, rows))
    }
}

fn json_list(names: &[&str]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned())
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
        approval: None,
    }
}

fn batch_view(batch: BatchRow) -> BatchView {
    BatchView {
        hosts: serde_json::from_str(&batch.hosts).unwrap_or_default(),
        started_at: batch.started_at,
        finished_at: batch.finished_at,
    }
}
