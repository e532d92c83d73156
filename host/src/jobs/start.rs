//! Recording and starting a job: the checks a request passes ([`JobService::prepare`]), the row it is stored as
//! (`queued`, or `pending_approval` when an approval policy holds it), and the task that runs it; and the start of a
//! job approved while it waited ([`JobService::launch`]), or its end without running ([`JobService::end_unrun`]).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{json_list, params, rollout, run::Prepared, Checked, JobError, JobOrigin, JobRequest, JobService, LiveJob};
use crate::{
    access::Scope,
    approvals,
    backends::Progress,
    store::{now_ms, HostRow, NewJob},
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
                node: &self.settings.node,
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
        Ok((id, Some(self.spawn(id, prepared))))
    }

    /// Starts job `id`, approved while it waited: its module, parameters and hosts are checked again as they are
    /// now (the module loaded now runs). A job that no longer passes ends `failed` with why.
    pub async fn launch(self: &Arc<Self>, id: i64) -> Result<(), JobError> {
        let job = self.store.job(id).await?.ok_or(JobError::NotFound(id))?;
        let request = JobRequest {
            module: u32::try_from(job.module_id).map_err(|_| JobError::UnknownModule(u32::MAX))?,
            hosts: serde_json::from_str(&job.hosts).unwrap_or_default(),
            params: serde_json::from_str(&job.params).unwrap_or_default(),
            backend: Some(job.backend.clone()),
            rollout: job.rollout.as_deref().and_then(|r| serde_json::from_str(r).ok()),
        };
        // A saved job's run keeps the timeout of the definition it was asked with.
        let timeout = job
            .definition
            .as_deref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|d| d["timeout_secs"].as_u64())
            .map(Duration::from_secs);
        // The requester's grants were checked when it asked, the approver's when it approved.
        match self.prepare(&request, &Scope::All, job.template_id, timeout).await {
            Ok((prepared, _)) => {
                tracing::info!(job_id = id, module = request.module, "approved job queued");
                self.spawn(id, prepared);
                Ok(())
            }
            Err(err) => {
                let reason = format!("approved, but it cannot run now: {err}");
                self.end_unrun(id, "failed", &reason).await?;
                Err(err)
            }
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
    pub(super) fn spawn(self: &Arc<Self>, id: i64, prepared: Prepared) -> tokio::task::JoinHandle<()> {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        self.lock_live().insert(id, LiveJob { cancel: cancel.clone(), progress: progress.clone() });
        if self.store.shared_by_servers() {
            self.tracker.spawn(super::remote::copy_progress(self.clone(), id, progress.clone()));
        }
        let service = self.clone();
        self.tracker.spawn(async move {
            service.execute(id, prepared, cancel, progress.clone()).await;
            // After the outcome is stored: a watcher that sees the close reads the final view.
            progress.close();
            service.lock_live().remove(&id);
        })
    }
}
