//! Four-eyes approval: policies name the jobs that wait for a second person before they run.
//!
//! A policy has a grant's selector ([`GrantSpec`]): a job falls under it when one of its hosts is in the part of
//! the inventory it names (any host, when it names none) and its module or saved job is listed (any, when it lists
//! neither). A job under a policy is stored `pending_approval` with an approval row ([`crate::store::ApprovalRow`])
//! and runs nothing until another person decides: an operator or admin whose grants let them run it on every one
//! of its hosts, never its requester. Approved, it is queued and runs with the module loaded then; rejected, it
//! ends `rejected` with the comment; unanswered for the policy's `expire_secs`, it ends `expired`
//! ([`Approvals::run`] sweeps each second). Its requester may withdraw it (a cancel). Each decision happens once:
//! the approval row is updated only while it is open, so two approvers, the sweep or another server cannot both
//! decide. A schedule's runs wait too unless the policy exempts them.
//!
//! Policies are matched in [`crate::jobs::JobService`] when a job is recorded ([`policy_for`]); decisions are
//! made here.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    access::{Access, AccessError, GrantForm, GrantSpec, Scope},
    auth::Principal,
    jobs::{JobError, JobService},
    store::{now_ms, ApprovalRow, HostRow, PolicyRow, Store, StoreError},
};

/// How long a job waits when the policy does not say: a day.
const DEFAULT_EXPIRE_SECS: u64 = 86_400;
/// At most 30 days.
const MAX_EXPIRE_SECS: u64 = 30 * 86_400;
const MAX_NAME: usize = 128;
const MAX_COMMENT: usize = 2_000;
/// How often open approvals are looked at for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A policy as a request creates it. At least one of the lists must name something.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyForm {
    /// 1 to 128 characters, no control characters, not only spaces (surrounding spaces are dropped).
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub name: String,
    /// Loaded modules' ids: their jobs wait.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub modules: Vec<u32>,
    /// Saved jobs' ids: their runs wait.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub templates: Vec<i64>,
    /// Function categories some host is in: jobs on any of their hosts wait.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub functions: Vec<String>,
    /// App categories some host is in.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub apps: Vec<String>,
    /// Tags some host has.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub tags: Vec<String>,
    /// Seconds a job waits before it expires (1 to 2592000, default 86400).
    #[schema(minimum = 1, maximum = 2592000)]
    pub expire_secs: Option<u64>,
    /// A schedule's runs do not wait (default: they wait like any other).
    #[serde(default)]
    pub exempt_schedules: bool,
}

/// A policy as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub id: i64,
    pub name: String,
    #[serde(flatten)]
    pub spec: GrantSpec,
    pub expire_secs: i64,
    pub exempt_schedules: bool,
    pub created_by: String,
    pub created_at: i64,
}

/// A job's approval as the API shows it (in the job's view).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApprovalView {
    /// The policy the job fell under, by name as it was then.
    pub policy: String,
    pub requested_by: String,
    pub requested_at: i64,
    /// When it expires if no one decides.
    pub expires_at: i64,
    /// `approved`, `rejected`, `expired` or `withdrawn`; absent while it waits.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    pub decided_at: Option<i64>,
}

impl From<ApprovalRow> for ApprovalView {
    fn from(row: ApprovalRow) -> ApprovalView {
        ApprovalView {
            policy: row.policy_name,
            requested_by: row.requested_by,
            requested_at: row.requested_at,
            expires_at: row.expires_at,
            decision: row.decision,
            decided_by: row.decided_by,
            comment: row.comment,
            decided_at: row.decided_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Selector(#[from] AccessError),
    /// Well formed, but not acceptable (no matcher, a name of only spaces).
    #[error("{field}: {reason}")]
    Unprocessable { field: &'static str, reason: String },
    #[error("approval policy {0} not found")]
    PolicyNotFound(i64),
    #[error("job {0} not found")]
    JobNotFound(i64),
    #[error("job {id} is not waiting for approval (it is {status})")]
    NotPending { id: i64, status: String },
    #[error("you asked for job {0}: another person must decide on it")]
    OwnJob(i64),
    #[error("your grants do not cover running this on: {}", .0.join(", "))]
    OutsideGrants(Vec<String>),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unprocessable(field: &'static str, reason: impl Into<String>) -> ApprovalError {
    ApprovalError::Unprocessable { field, reason: reason.into() }
}

/// The policy a job falls under (the first by name), if any: `hosts` are its hosts' inventory rows, `scheduled`
/// says a schedule started it.
pub fn policy_for<'a>(
    policies: &'a [PolicyRow],
    hosts: &[HostRow],
    module: u32,
    template: Option<i64>,
    scheduled: bool,
) -> Option<&'a PolicyRow> {
    policies.iter().find(|p| {
        if scheduled && p.exempt_schedules != 0 {
            return false;
        }
        // A stored selector that no longer parses holds every job rather than none: waiting is the safe side.
        let spec: GrantSpec = serde_json::from_str(&p.spec).unwrap_or_default();
        spec.lists(module, template) && hosts.iter().any(|h| spec.covers(h))
    })
}

/// Policies and decisions.
pub struct Approvals {
    store: Store,
    jobs: Arc<JobService>,
    access: Arc<Access>,
}

impl Approvals {
    pub fn new(store: Store, jobs: Arc<JobService>, access: Arc<Access>) -> Approvals {
        Approvals { store, jobs, access }
    }

    pub async fn policies(&self) -> Result<Vec<PolicyView>, ApprovalError> {
        Ok(self.store.approval_policies().await?.iter().map(view_of).collect())
    }

    /// Adds a policy: every entry must name something that exists (as a grant's), and one at least must be given.
    pub async fn add_policy(&self, form: PolicyForm, by: &str) -> Result<PolicyView, ApprovalError> {
        let name = crate::labels::check(&form.name, MAX_NAME)
            .ok_or_else(|| unprocessable("name", crate::labels::rule(MAX_NAME)))?
            .to_owned();
        let expire_secs = form.expire_secs.unwrap_or(DEFAULT_EXPIRE_SECS);
        if !(1..=MAX_EXPIRE_SECS).contains(&expire_secs) {
            return Err(unprocessable("expire_secs", format!("must be between 1 and {MAX_EXPIRE_SECS}")));
        }
        let selector = GrantForm {
            role: None,
            functions: form.functions,
            apps: form.apps,
            tags: form.tags,
            modules: form.modules,
            templates: form.templates,
        };
        let spec = self.access.checked(selector).await?;
        if spec.is_everything() {
            return Err(unprocessable(
                "modules",
                "a policy names at least one module, saved job, function or app category, or tag",
            ));
        }
        let json = serde_json::to_string(&spec).unwrap_or_else(|_| "{}".to_owned());
        let secs = i64::try_from(expire_secs).unwrap_or(i64::MAX);
        let row = self.store.insert_policy(&name, &json, secs, form.exempt_schedules, by).await?;
        tracing::info!(policy = %row.name, actor = by, "approval policy added");
        Ok(view_of(&row))
    }

    /// Deletes a policy and answers with what it was. Jobs waiting under it still wait for their decision.
    pub async fn delete_policy(&self, id: i64) -> Result<PolicyView, ApprovalError> {
        let policies = self.store.approval_policies().await?;
        let row = policies.iter().find(|p| p.id == id).ok_or(ApprovalError::PolicyNotFound(id))?;
        if !self.store.delete_policy(id).await? {
            return Err(ApprovalError::PolicyNotFound(id));
        }
        Ok(view_of(row))
    }

    /// Approves job `id`: it is queued and starts. Only someone else than its requester, who may run it.
    pub async fn approve(&self, id: i64, who: &Principal, comment: &str) -> Result<ApprovalView, ApprovalError> {
        let comment = checked_comment(comment)?;
        let open = self.open_for(id, who).await?;
        if !self.store.decide_approval(id, "approved", &who.name, comment).await? {
            return Err(self.not_pending(id).await);
        }
        tracing::info!(job_id = id, approver = %who.name, policy = %open.policy_name, "job approved");
        if let Err(err) = self.jobs.launch(id).await {
            // The decision stands; the job ended `failed` and says why it could not start.
            tracing::warn!(job_id = id, error = %err, "approved job could not start");
        }
        self.view(id).await
    }

    /// Rejects job `id`: it ends `rejected`, the comment its error.
    pub async fn reject(&self, id: i64, who: &Principal, comment: &str) -> Result<ApprovalView, ApprovalError> {
        let comment = checked_comment(comment)?;
        let open = self.open_for(id, who).await?;
        if !self.store.decide_approval(id, "rejected", &who.name, comment).await? {
            return Err(self.not_pending(id).await);
        }
        tracing::info!(job_id = id, approver = %who.name, policy = %open.policy_name, "job rejected");
        let reason = match comment {
            "" => format!("rejected by {}", who.name),
            _ => format!("rejected by {}: {comment}", who.name),
        };
        self.jobs.end_unrun(id, "rejected", &reason).await?;
        self.view(id).await
    }

    /// Withdraws job `id` (its cancel while it waits): it ends `cancelled`. False when it is not waiting.
    pub async fn withdraw(&self, id: i64, who: &Principal) -> Result<bool, ApprovalError> {
        if !self.store.decide_approval(id, "withdrawn", &who.name, "").await? {
            return Ok(false);
        }
        let reason = format!("withdrawn by {} before it was approved", who.name);
        self.jobs.end_unrun(id, "cancelled", &reason).await?;
        Ok(true)
    }

    /// Ends every job whose approval is past its time. How many it ended.
    pub async fn expire_due(&self) -> Result<usize, ApprovalError> {
        let mut ended = 0;
        for id in self.store.expired_approvals(now_ms()).await? {
            // Decided meanwhile (approved at the last moment, or by another server's sweep): not this one's.
            if !self.store.decide_approval(id, "expired", "server", "").await? {
                continue;
            }
            let waited = self.store.approval(id).await?.map(|a| (a.expires_at - a.requested_at) / 1_000);
            let reason = format!("no one approved it within {} s", waited.unwrap_or_default());
            self.jobs.end_unrun(id, "expired", &reason).await?;
            tracing::info!(job_id = id, "job approval expired");
            ended += 1;
        }
        Ok(ended)
    }

    /// Sweeps for expired approvals each second until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    if let Err(err) = self.expire_due().await {
                        tracing::warn!(error = %err, "expiring approvals failed; trying again");
                    }
                }
            }
        }
    }

    /// The open approval of job `id`, if `who` may decide on it: an operator at least (the route says so), not
    /// its requester, whose grants let it run the job on every host. A job it does not see is not found.
    async fn open_for(&self, id: i64, who: &Principal) -> Result<ApprovalRow, ApprovalError> {
        let job = self.jobs.view_in(id, &who.scope).await.map_err(|e| match e {
            JobError::NotFound(_) => ApprovalError::JobNotFound(id),
            other => other.into(),
        })?;
        let approval = self.store.approval(id).await?;
        let Some(open) = approval.filter(|a| a.decision.is_none()) else {
            return Err(ApprovalError::NotPending { id, status: job.status });
        };
        if open.requested_by == who.name {
            return Err(ApprovalError::OwnJob(id));
        }
        if let Scope::Granted(_) = &who.scope {
            let inventory = self.store.find_hosts(&job.hosts).await?;
            let module = u32::try_from(job.module).unwrap_or(u32::MAX);
            let outside = who.scope.outside(&inventory, &job.hosts, module, job.template_id);
            if !outside.is_empty() {
                return Err(ApprovalError::OutsideGrants(outside));
            }
        }
        Ok(open)
    }

    async fn not_pending(&self, id: i64) -> ApprovalError {
        match self.jobs.view(id).await {
            Ok(job) => ApprovalError::NotPending { id, status: job.status },
            Err(err) => err.into(),
        }
    }

    async fn view(&self, id: i64) -> Result<ApprovalView, ApprovalError> {
        Ok(self.store.approval(id).await?.ok_or(ApprovalError::JobNotFound(id))?.into())
    }
}

/// A decision's comment, trimmed: at most 2 000 characters, no control characters but line breaks and tabs.
fn checked_comment(comment: &str) -> Result<&str, ApprovalError> {
    let comment = comment.trim();
    if comment.chars().count() > MAX_COMMENT {
        return Err(unprocessable("comment", format!("at most {MAX_COMMENT} characters")));
    }
    if comment.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(unprocessable("comment", "no control characters but line breaks and tabs"));
    }
    Ok(comment)
}

fn view_of(row: &PolicyRow) -> PolicyView {
    PolicyView {
        id: row.id,
        name: row.name.clone(),
        spec: serde_json::from_str(&row.spec).unwrap_or_default(),
        expire_secs: row.expire_secs,
        exempt_schedules: row.exempt_schedules != 0,
        created_by: row.created_by.clone(),
        created_at: row.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: i64, function: &str, tags: &[&str]) -> HostRow {
        HostRow {
            id,
            name: format!("h{id}"),
            ip: format!("127.0.0.{id}"),
            wan_ip: None,
            op: None,
            function: Some(function.to_owned()),
            app: Some("app".to_owned()),
            port: None,
            user: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created_at: 0,
        }
    }

    fn policy(name: &str, spec: serde_json::Value, exempt: bool) -> PolicyRow {
        PolicyRow {
            id: 1,
            name: name.to_owned(),
            spec: spec.to_string(),
            expire_secs: 60,
            exempt_schedules: i64::from(exempt),
            created_by: "admin".into(),
            created_at: 0,
        }
    }

    #[test]
    fn a_job_falls_under_a_policy_when_a_host_and_its_module_or_saved_job_match() {
        let db = host(1, "Linux.DB", &[]);
        let web = host(2, "Linux.Web", &["prod"]);
        let policies =
            [policy("db restarts", serde_json::json!({ "functions": ["Linux.DB"], "modules": [1005] }), false)];
        let name = |hosts: &[HostRow], module, template, scheduled| {
            policy_for(&policies, hosts, module, template, scheduled).map(|p| p.name.clone())
        };
        let (web, db) = (std::slice::from_ref(&web), std::slice::from_ref(&db));
        let both = [web[0].clone(), db[0].clone()];
        assert_eq!(name(&both, 1005, None, false).as_deref(), Some("db restarts"));
        assert_eq!(name(web, 1005, None, false), None, "no host in the selector");
        assert_eq!(name(db, 1003, None, false), None, "another module");

        let tagged = [policy("prod", serde_json::json!({ "tags": ["prod"] }), true)];
        assert!(policy_for(&tagged, web, 1003, Some(4), false).is_some(), "any module on a prod host");
        assert!(policy_for(&tagged, web, 1003, Some(4), true).is_none(), "exempt: a schedule's runs do not wait");

        let saved = [policy("nightly", serde_json::json!({ "templates": [7] }), false)];
        assert!(policy_for(&saved, db, 1003, Some(7), true).is_some());
        assert!(policy_for(&saved, db, 1003, None, false).is_none(), "the same module, not from the saved job");
    }
}
