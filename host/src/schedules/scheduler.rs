//! The scheduler: one task that sleeps until the next slot of any enabled schedule and fires it. It only
//! creates jobs, through the saved job's run; everything else about a job is the job service's.
//!
//! A fire is claimed by inserting its (schedule, slot) row before the job is created
//! ([`Store::claim_fire`]): a slot that is claimed already is never fired again, whether this server fired it
//! before a restart or another server on the same database did. Slots that passed while nobody was running
//! are recorded as `missed` when the scheduler next plans; the newest of them runs instead if it is within the
//! schedule's catch-up window.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{cron::Cron, cron_of, Overlap};
use crate::{
    access,
    activity::{Activity, Actor, Change},
    store::{now_ms, ScheduleRow, Store, StoreError},
    templates::Templates,
};

/// A slot is fired, not missed, while it is at most this late (a busy runtime, a slow database).
const ON_TIME_MS: i64 = 5_000;
/// Planned again at least this often, for changes made behind this process (another server, the CLI) and a
/// wall clock that jumped.
const REPLAN: Duration = Duration::from_secs(30);
/// At most this many missed slots are recorded per schedule and planning (a per-second schedule down for a day
/// would otherwise write 86 400 rows); the newest ones are kept.
const MAX_MISSED: usize = 1_000;
/// How often a queued fire looks whether the previous run has ended.
const QUEUE_POLL: Duration = Duration::from_millis(250);

pub struct Scheduler {
    store: Store,
    templates: Arc<Templates>,
    activity: Activity,
    changed: Arc<Notify>,
    /// Schedules with a fire waiting for the previous run (one at most each).
    queued: Arc<Mutex<HashSet<i64>>>,
}

/// An enabled schedule and its next slot.
#[derive(Clone)]
struct Planned {
    row: ScheduleRow,
    cron: Cron,
    next: Option<i64>,
}

impl Scheduler {
    pub fn new(store: Store, templates: Arc<Templates>, changed: Arc<Notify>, activity: Activity) -> Scheduler {
        Scheduler { store, templates, activity, changed, queued: Arc::default() }
    }

    /// Runs until `shutdown`. Fires left claimed by a previous process are failed first.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.store.fail_unsettled_fires().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(fires = n, "failed schedule fires left unsettled by the previous run"),
            Err(err) => tracing::error!(error = %err, "cannot settle the previous run's schedule fires"),
        }
        let fires = tokio_util::task::TaskTracker::new();
        // Slots before this were due while no scheduler ran here: missed (or caught up), never "on time".
        let started = now_ms();
        let mut plan = HashMap::new();
        let mut replan = true;
        let mut planned_at = tokio::time::Instant::now();
        loop {
            if replan || planned_at.elapsed() >= REPLAN {
                plan = self.plan(&fires, &plan, started).await;
                (replan, planned_at) = (false, tokio::time::Instant::now());
            }
            let now = now_ms();
            for planned in plan.values_mut() {
                while let Some(slot) = planned.next.filter(|slot| *slot <= now) {
                    if now - slot <= ON_TIME_MS {
                        self.spawn_fire(&fires, &planned.row, slot, None);
                    } else {
                        self.record_missed(&planned.row, slot, now).await;
                    }
                    planned.next = planned.cron.next_after(slot);
                }
            }
            let wake = plan.values().filter_map(|p| p.next).min();
            // Sleep by the wall clock, re-read on every wake: a clock that jumps only moves the next look.
            let wait =
                wake.map_or(REPLAN, |at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(REPLAN));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.changed.notified() => replan = true,
                _ = shutdown.cancelled() => break,
            }
        }
        fires.close();
        // A fire being started finishes creating its job (that is quick); a queued one gives up.
        let _ = tokio::time::timeout(Duration::from_secs(5), fires.wait()).await;
    }

    /// Every enabled schedule with its next slot. Slots since the last recorded one (or since the schedule became
    /// active) that are already past are handled first: the newest is fired when it came while this scheduler
    /// ran and is on time, or run when it is within the catch-up window; the rest are recorded as missed.
    async fn plan(
        &self,
        fires: &tokio_util::task::TaskTracker,
        before: &HashMap<i64, Planned>,
        started: i64,
    ) -> HashMap<i64, Planned> {
        let rows = match self.store.list_schedules().await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the schedules; keeping the current plan");
                return before.clone();
            }
        };
        let last_slots = match self.store.last_fire_slots().await {
            Ok(last) => last,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the schedules' fires; keeping the current plan");
                return before.clone();
            }
        };
        let now = now_ms();
        let mut plan = HashMap::new();
        for row in rows.into_iter().filter(|r| r.enabled != 0) {
            let cron = match cron_of(&row) {
                Ok(cron) => cron,
                Err(err) => {
                    tracing::error!(schedule_id = row.id, error = %err, "schedule skipped");
                    continue;
                }
            };
            let from = last_slots.get(&row.id).map_or(row.active_from, |last| (*last).max(row.active_from));
            let mut past = Vec::new();
            let mut slot = cron.next_after(from);
            while let Some(s) = slot.filter(|s| *s <= now) {
                past.push(s);
                if past.len() > MAX_MISSED {
                    past.remove(0);
                }
                slot = cron.next_after(s);
            }
            let catch_up = row.catch_up_secs.saturating_mul(1_000);
            let newest = past.pop();
            for s in past {
                self.record_missed(&row, s, now).await;
            }
            if let Some(s) = newest {
                if s >= started && now - s <= ON_TIME_MS {
                    self.spawn_fire(fires, &row, s, None);
                } else if now - s <= catch_up {
                    let late = format!("caught up {} s after its slot", (now - s) / 1_000);
                    self.spawn_fire(fires, &row, s, Some(late));
                } else {
                    self.record_missed(&row, s, now).await;
                }
            }
            plan.insert(row.id, Planned { next: cron.next_after(now), row, cron });
        }
        plan
    }

    async fn record_missed(&self, row: &ScheduleRow, slot: i64, now: i64) {
        let reason = format!("not fired: the server was not running at the slot ({} s ago)", (now - slot) / 1_000);
        match self.store.claim_fire(row.id, slot, "missed", Some(&reason)).await {
            Ok(true) => tracing::warn!(schedule_id = row.id, schedule = %row.name, slot, "schedule slot missed"),
            Ok(false) => {}
            Err(err) => tracing::error!(schedule_id = row.id, slot, error = %err, "cannot record a missed slot"),
        }
    }

    /// Fires one slot in a task of its own, so that a slow start (a busy database) delays no other schedule.
    fn spawn_fire(&self, fires: &tokio_util::task::TaskTracker, row: &ScheduleRow, slot: i64, note: Option<String>) {
        let fire = Fire {
            store: self.store.clone(),
            templates: self.templates.clone(),
            activity: self.activity.clone(),
            queued: self.queued.clone(),
            row: row.clone(),
            slot,
            note,
        };
        fires.spawn(async move {
            if let Err(err) = fire.go().await {
                tracing::error!(schedule_id = fire.row.id, slot, error = %err, "schedule fire failed to record");
            }
        });
    }
}

/// One slot of one schedule being fired.
struct Fire {
    store: Store,
    templates: Arc<Templates>,
    activity: Activity,
    queued: Arc<Mutex<HashSet<i64>>>,
    row: ScheduleRow,
    slot: i64,
    /// Said in the fire's reason when it ran late on purpose (catch-up).
    note: Option<String>,
}

impl Fire {
    async fn go(&self) -> Result<(), StoreError> {
        let (id, slot) = (self.row.id, self.slot);
        if !self.store.claim_fire(id, slot, "claimed", None).await? {
            return Ok(()); // fired already, by an earlier run or another server
        }
        if let Some(job) = self.store.running_job_of_template(self.row.template_id).await? {
            let overlap = if self.row.overlap == "queue" { Overlap::Queue } else { Overlap::Skip };
            let first_in_queue = overlap == Overlap::Queue && self.lock_queued().insert(id);
            if !first_in_queue {
                let reason = match overlap {
                    Overlap::Skip => format!("job {job} of this saved job was still running"),
                    Overlap::Queue => "a fire of this schedule was already waiting for the previous run".to_owned(),
                };
                tracing::info!(schedule_id = id, slot, job, "schedule fire skipped");
                return self.store.settle_fire(id, slot, "skipped", None, Some(&reason)).await;
            }
            let waiting = format!("waiting for job {job} of this saved job to end");
            self.store.settle_fire(id, slot, "queued", None, Some(&waiting)).await?;
            let waited = self.wait_for_previous().await;
            self.lock_queued().remove(&id);
            waited?;
        }
        let actor = format!("schedule:{}", self.row.name);
        // A schedule runs with the rights of whoever last saved it: a scoped user's grants as they are now.
        let scope = access::scope_of_name(&self.store, &self.row.updated_by).await?;
        let run = self.templates.run_scheduled(self.row.template_id, &actor, &scope).await;
        let change = Change::ok("template.run", format!("saved job {}", self.row.template_id)).with("slot", slot);
        let change = match &run {
            Ok(job) => change.with("job", job),
            Err(err) => change.outcome(format!("failed: {err}")),
        };
        self.activity.record(&Actor::internal(&actor), change).await;
        match run {
            Ok(job) => {
                tracing::info!(schedule_id = id, slot, job_id = job, lag_ms = now_ms() - slot, "schedule fired");
                metrics::counter!("omserver_schedule_fires_total", "outcome" => "fired").increment(1);
                self.store.settle_fire(id, slot, "fired", Some(job), self.note.as_deref()).await
            }
            Err(err) => {
                tracing::warn!(schedule_id = id, slot, error = %err, "schedule fire failed");
                metrics::counter!("omserver_schedule_fires_total", "outcome" => "failed").increment(1);
                self.store.settle_fire(id, slot, "failed", None, Some(&err.to_string())).await
            }
        }
    }

    async fn wait_for_previous(&self) -> Result<(), StoreError> {
        while self.store.running_job_of_template(self.row.template_id).await?.is_some() {
            tokio::time::sleep(QUEUE_POLL).await;
        }
        Ok(())
    }

    fn lock_queued(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        // A set of ids holds no invariant a panic could break half-way: recover it.
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}
