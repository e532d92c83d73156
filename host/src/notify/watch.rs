//! Facts that no other room records as rows: a module file rejected, a backend turning unhealthy, the audit chain
//! failing verification. Watched here periodically; each change is recorded in the outbox once (a restart may
//! tell again what is still wrong: at least once).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::Notifications;
use crate::{audit::AuditService, backends::Backends, jobs::JobService, plugins::Registry};

/// How often plugins.d's rejections are looked at (the registry keeps them in memory: cheap).
const MODULES_EVERY: Duration = Duration::from_secs(2);

pub struct Watched {
    pub registry: Arc<Registry>,
    pub jobs: Arc<JobService>,
    pub audit: Arc<AuditService>,
}

pub async fn run(notify: Arc<Notifications>, watched: Watched, shutdown: CancellationToken) {
    let config = notify.config().clone();
    let mut rejected: HashSet<(String, String)> = HashSet::new();
    let mut unhealthy: HashMap<&'static str, bool> = HashMap::new();
    let mut last_finding: Option<String> = None;
    let every = |secs: u64| Duration::from_secs(secs.max(1));
    let mut modules = tokio::time::interval(MODULES_EVERY);
    let mut backends = tokio::time::interval(every(config.check_every_secs));
    let mut verify = tokio::time::interval(every(config.verify_every_secs));
    // The chain is verified first one period after start, not at once: a start should not read every row.
    verify.reset();
    for ticker in [&mut modules, &mut backends, &mut verify] {
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = modules.tick() => check_modules(&notify, &watched.registry, &mut rejected).await,
            _ = backends.tick() => check_backends(&notify, watched.jobs.backends(), &mut unhealthy).await,
            _ = verify.tick(), if config.verify_every_secs > 0 => {
                check_chain(&notify, &watched.audit, &mut last_finding).await;
            }
        }
    }
}

async fn record(notify: &Notifications, kind: &str, detail: serde_json::Value) {
    match notify.store().record_notify_event(kind, None, Some(&detail.to_string())).await {
        Ok(()) => notify.wake(),
        Err(err) => tracing::warn!(kind, error = %err, "cannot record a notification fact"),
    }
}

async fn check_modules(notify: &Notifications, registry: &Registry, known: &mut HashSet<(String, String)>) {
    let now: HashSet<(String, String)> = registry
        .list()
        .into_iter()
        .filter(|m| m.status == "rejected")
        .map(|m| (m.file, m.error.unwrap_or_default()))
        .collect();
    for (file, reason) in now.difference(known) {
        record(notify, "module.rejected", serde_json::json!({ "file": file, "reason": reason })).await;
    }
    *known = now;
}

async fn check_backends(notify: &Notifications, backends: &Backends, state: &mut HashMap<&'static str, bool>) {
    for health in backends.health().await {
        let was_ok = state.insert(health.backend, health.ok).unwrap_or(true);
        if was_ok && !health.ok {
            tracing::warn!(backend = health.backend, problem = %health.detail, "backend became unhealthy");
            record(
                notify,
                "backend.unhealthy",
                serde_json::json!({ "backend": health.backend, "detail": health.detail }),
            )
            .await;
        }
    }
}

async fn check_chain(notify: &Notifications, audit: &AuditService, last: &mut Option<String>) {
    let report = match audit.verify().await {
        Ok(report) => report,
        Err(err) => {
            tracing::warn!(error = %err, "periodic audit verification could not run");
            return;
        }
    };
    let Some(first) = report.findings.first() else {
        *last = None;
        return;
    };
    let text = format!("host {} at {}: {}", first.host_id, first.chain_seq, first.problem);
    // The same broken link found again is not news.
    if last.as_deref() == Some(text.as_str()) {
        return;
    }
    tracing::error!(findings = report.findings.len(), first = %text, "audit chain verification found problems");
    let detail = serde_json::json!({ "findings": report.findings.len(), "hosts": report.hosts, "first": text });
    record(notify, "audit.verify", detail).await;
    *last = Some(text);
}
