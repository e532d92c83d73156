//! Recording and starting a job: the checks a request passes ([`JobService::prepare`]), the row it is stored as
//! (`queued`, or `pending_approval` when an approval policy holds it), and the task that runs it; and the start of a
//! job approved while it waited ([`JobService::launch`]), or its end without running ([`JobService::end_unrun`]).

use std::{sync::Arc, time::Duration};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{json_list, params, rollout, run::Prepared, Checked, JobError, JobOrigin, JobRequest, JobService, LiveJob};
use crate::{
    access::Scope,
    approvals,
    backends::Progress,
    store::{now_ms, ClaimedJob, HostRow, JobRow, NewJob},
};

impl JobService {
    /// Checks the request, records the job and starts it, unless an approval policy holds it: then it is stored
    /// `pending_approval` and starts when approved ([`launch`](Self::launch)). The handle is the running job's.
    pub(super) async fn start(
        self: &Arc<Self>,
        request: JobRequest,
        actor: &str,
        scope: &Scope,
        origin: JobOrigin,
    ) -> Result<(i64, Option<tokio::task::JoinHandle<()>>), JobError> {
        let template = origin.template.as_ref().map(|(id, _)| *id);
        let (prepared, rows) = self.prepare(&request, scope, template, origin.timeout).await?;
        let policies = self.store.approval_policies().await?;
        let policy = approvals::policy_for(&policies, &rows, prepared.module.meta.id, template, origin.scheduled);

        let names: Vec<&str> = prepared.hosts.iter().map(|h| h.name.as_str()).collect();
        let params_json = params::to_json(&prepared.params).to_string();
        let hosts_json = json_list(&names);
        let rollout_json = request.rollout.as_ref().and_then(|r| serde_json::to_string(r).ok());
        let module = &prepared.module.meta;
        // Where servers share the database, a job this server can start now is its own from the start: no other
        // server is woken for it. One it cannot waits for whichever server has a free slot and this very module.
        let for_any_server = self.queues_for_any_server();
        let slot = (for_any_server && policy.is_none()).then(|| self.slots.clone().try_acquire_owned().ok()).flatten();
        let queued_for_any = for_any_server && slot.is_none();
        let id = self
            .store
            .insert_job(&NewJob {
                module_id: module.id,
                module_version: &module.version,
                backend: prepared.backend.name(),
                params: &params_json,
                hosts: &hosts_json,
                created_by: actor,
                rollout: rollout_json.as_deref(),
                rerun_of: origin.rerun_of,
                template_id: template,
                definition: origin.template.as_ref().map(|(_, definition)| definition.as_str()),
                pending_approval: policy.is_some(),
                node: (!queued_for_any).then_some(self.settings.node.as_str()),
                module_sha256: &prepared.module.sha256,
            })
            .await?;
        metrics::counter!("omserver_jobs_submitted_total").increment(1);
        if let Some(policy) = policy {
            let expires_at = now_ms().saturating_add(policy.expire_secs.saturating_mul(1_000));
            if let Err(err) = self.store.insert_approval(id, policy, actor, expires_at).await {
                // A job that waits for a decision no one can find would wait for ever: end it now.
                let reason = format!("its approval could not be recorded: {err}");
                self.end_unrun(id, "failed", &reason).await?;
                return Err(err.into());
            }
            tracing::info!(job_id = id, module = module.id, policy = %policy.name, actor, "job waits for approval");
            return Ok((id, None));
        }
        tracing::info!(job_id = id, module = module.id, version = %module.version, backend = prepared.backend.name(),
            hosts = prepared.hosts.len(), batch = prepared.plan.batch, rerun_of = origin.rerun_of, actor, "job queued");
        if queued_for_any {
            self.announce_queued(id).await;
            return Ok((id, None));
        }
        Ok((id, Some(self.spawn(id, prepared, slot))))
    }

    /// Starts job `id`, approved while it waited: its module, parameters and hosts are checked again as they are
    /// now (the module loaded now runs). A job that no longer passes ends `failed` with why.
    pub async fn launch(self: &Arc<Self>, id: i64) -> Result<(), JobError> {
        let job = self.store.job(id).await?.ok_or(JobError::NotFound(id))?;
        if self.queues_for_any_server() {
            // Queued for whichever server takes it, which checks it then.
            tracing::info!(job_id = id, "approved job queued for any server");
            self.announce_queued(id).await;
            return Ok(());
        }
        let (request, timeout) = request_of(&job)?;
        // The requester's grants were checked when it asked, the approver's when it approved.
        match self.prepare(&request, &Scope::All, job.template_id, timeout).await {
            Ok((prepared, _)) => {
                tracing::info!(job_id = id, module = request.module, "approved job queued");
                self.spawn(id, prepared, None);
                Ok(())
            }
            Err(err) => {
                let reason = format!("approved, but it cannot run now: {err}");
                self.end_unrun(id, "failed", &reason).await?;
                Err(err)
            }
        }
    }

    /// Starts a queued job this server took ([`super::claim`]) in `slot`: checked again as it is now (the module
    /// loaded here runs). One that cannot run ends `failed` with why; one cancelled meanwhile ends `cancelled`;
    /// one whose module changed here since it was taken goes back to the queue.
    pub(super) async fn start_claimed(self: &Arc<Self>, claimed: ClaimedJob, slot: OwnedSemaphorePermit) {
        let id = claimed.id;
        let node = &self.settings.node;
        let job = match self.store.job(id).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(job_id = id, error = %err, "cannot read a job taken from the queue; giving it back");
                return self.give_back(id).await;
            }
        };
        if claimed.cancel_asked {
            // As a job cancelled while it waited for a slot: its hosts never started.
            let skipped = super::claim::skipped(&job.hosts, "cancelled");
            if let Err(err) = self.store.finish_job(id, "cancelled", Some("cancelled"), &skipped).await {
                tracing::warn!(job_id = id, error = %err, "cannot end a job cancelled before it started");
            }
            return;
        }
        let checked = match request_of(&job) {
            Ok((request, timeout)) => self.prepare(&request, &Scope::All, job.template_id, timeout).await,
            Err(err) => Err(err),
        };
        match checked {
            Ok((prepared, _)) if prepared.module.sha256 != claimed.module_sha256 => {
                tracing::info!(job_id = id, "the module changed here since the job was taken; giving it back");
                self.give_back(id).await;
            }
            Ok((prepared, _)) => {
                tracing::info!(job_id = id, module = prepared.module.meta.id, node, "took a queued job");
                self.spawn(id, prepared, Some(slot));
            }
            Err(err) => {
                let reason = format!("server {node} took it, but it cannot run: {err}");
                if let Err(err) = self.end_unrun(id, "failed", &reason).await {
                    tracing::warn!(job_id = id, error = %err, "cannot end a job taken from the queue");
                }
            }
        }
    }

    /// Puts a job this server took back in the queue, for another server (or this one, later).
    async fn give_back(&self, id: i64) {
        if let Err(err) = self.store.release_claim(id, &self.settings.node).await {
            // A restart gives it back (`Store::fail_unfinished_jobs`).
            tracing::warn!(job_id = id, error = %err, "cannot give a job back to the queue");
        }
    }

    /// Ends job `id` without running it (rejected, expired, withdrawn, or unable to start): no host has a result.
    pub async fn end_unrun(&self, id: i64, status: &str, reason: &str) -> Result<(), JobError> {
        self.store.finish_job(id, status, Some(reason), &[]).await?;
        tracing::info!(job_id = id, status, reason, "job ended without running");
        Ok(())
    }

    /// Everything a job is checked for before it is recorded: module, backend, parameters, hosts (within
    /// `scope`), rollout. Also the hosts' inventory rows.
    pub(super) async fn prepare(
        &self,
        request: &JobRequest,
        scope: &Scope,
        template: Option<i64>,
        timeout: Option<Duration>,
    ) -> Result<(Prepared, Vec<HostRow>), JobError> {
        let Checked { module, backend, params } =
            self.checked(request.module, &request.params, request.backend.as_deref())?;
        let (hosts, rows) = self.resolve_targets(&request.hosts).await?;
        if !scope.is_all() {
            let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
            let outside = scope.outside(&rows, &names, module.meta.id, template);
            if !outside.is_empty() {
                return Err(JobError::OutsideGrants(outside));
            }
        }
        let plan = match &request.rollout {
            Some(rollout) => rollout.plan(hosts.len())?,
            None => rollout::Plan::all_at_once(hosts.len()),
        };
        let settings = self.settings_for(module.meta.id);
        let timeout = timeout.unwrap_or(self.settings.timeout);
        let prepared = Prepared { module, backend, params: params.into(), settings, hosts, plan, timeout };
        Ok((prepared, rows))
    }

    /// Runs a recorded job in the background; it is live (cancellable, watched) until it has ended.
    pub(super) fn spawn(
        self: &Arc<Self>,
        id: i64,
        prepared: Prepared,
        slot: Option<OwnedSemaphorePermit>,
    ) -> tokio::task::JoinHandle<()> {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        self.lock_live().insert(id, LiveJob { cancel: cancel.clone(), progress: progress.clone() });
        if self.store.shared_by_servers() {
            self.tracker.spawn(super::remote::copy_progress(self.clone(), id, progress.clone()));
        }
        let service = self.clone();
        self.tracker.spawn(async move {
            service.execute(id, prepared, slot, cancel, progress.clone()).await;
            // After the outcome is stored: a watcher that sees the close reads the final view.
            progress.close();
            service.lock_live().remove(&id);
        })
    }
}

/// The request a stored job was made from, and the timeout of the saved job's definition it ran with.
fn request_of(job: &JobRow) -> Result<(JobRequest, Option<Duration>), JobError> {
    let request = JobRequest {
        module: u32::try_from(job.module_id).map_err(|_| JobError::UnknownModule(u32::MAX))?,
        hosts: serde_json::from_str(&job.hosts).unwrap_or_default(),
        params: serde_json::from_str(&job.params).unwrap_or_default(),
        backend: Some(job.backend.clone()),
        rollout: job.rollout.as_deref().and_then(|r| serde_json::from_str(r).ok()),
    };
    let timeout = job
        .definition
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|d| d["timeout_secs"].as_u64())
        .map(Duration::from_secs);
    Ok((request, timeout))
}
