//! Schedules: when a saved job runs by itself. This room keeps the schedules (checked cron expression and time
//! zone, overlap rule, catch-up window) and their fires; [`Scheduler`] is the task that fires them, and it only
//! ever creates jobs, through [`Templates::run`](crate::templates::Templates::run).

pub mod cron;
mod scheduler;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use scheduler::Scheduler;

use crate::store::{now_ms, FireRow, NewSchedule, ScheduleRow, Store, StoreError};

/// How many upcoming fire times a schedule's view lists.
pub const UPCOMING: usize = 5;
/// The longest catch-up window: a week.
pub const MAX_CATCH_UP_SECS: u64 = 7 * 86_400;
const MAX_NAME: usize = 128;

/// What a fire does when the saved job's previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is recorded as `skipped`.
    #[default]
    Skip,
    /// The fire waits for the previous run to end, then starts (one waiting fire per schedule at most).
    Queue,
}

impl Overlap {
    fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }
}

/// A schedule as a request writes it (create and edit take the whole definition).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 1 to 128 characters, no control characters, not only spaces (surrounding spaces are dropped).
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub name: String,
    /// The saved job it runs, by id.
    pub template: i64,
    /// Five fields (`minute hour day month weekday`), an optional leading seconds field, or `@hourly`, `@daily`…;
    /// month and day names allowed.
    pub cron: String,
    /// An IANA time zone; UTC when absent. A local time skipped by daylight saving does not fire that day; a
    /// repeated one fires once.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub overlap: Overlap,
    /// At start, the newest slot missed while the server was down runs if it is at most this many seconds old;
    /// the rest are recorded as missed. 0: none runs.
    #[serde(default)]
    pub catch_up_secs: u64,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn enabled() -> bool {
    true
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: i64,
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// The next fire times (Unix ms), none while disabled.
    pub next: Vec<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("schedule {0} not found")]
    NotFound(i64),
    /// A stored row that no longer parses (written behind the server's back).
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid { field, reason: reason.into() }
}

pub struct Schedules {
    store: Store,
    /// Told after every change, so that the scheduler plans again at once.
    changed: Arc<Notify>,
}

impl Schedules {
    pub fn new(store: Store) -> Schedules {
        Schedules { store, changed: Arc::new(Notify::new()) }
    }

    /// What the scheduler waits on besides time.
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    pub async fn list(&self) -> Result<Vec<ScheduleView>, ScheduleError> {
        self.store.list_schedules().await?.into_iter().map(view_of).collect()
    }

    pub async fn get(&self, id: i64) -> Result<ScheduleView, ScheduleError> {
        view_of(self.store.schedule(id).await?.ok_or(ScheduleError::NotFound(id))?)
    }

    /// Checks and saves a new schedule.
    pub async fn create(&self, spec: ScheduleSpec, actor: &str) -> Result<ScheduleView, ScheduleError> {
        let spec = self.checked(spec).await?;
        let id = self.store.add_schedule(&row(&spec, now_ms(), actor)).await?;
        tracing::info!(schedule_id = id, name = %spec.name, cron = %spec.cron, timezone = %spec.timezone, actor, "schedule created");
        self.changed.notify_one();
        self.get(id).await
    }

    /// Checks and replaces a schedule's whole definition. Slots before a change of timing or a re-enable are not
    /// counted as missed.
    pub async fn update(&self, id: i64, spec: ScheduleSpec, actor: &str) -> Result<ScheduleView, ScheduleError> {
        let spec = self.checked(spec).await?;
        let old = self.store.schedule(id).await?.ok_or(ScheduleError::NotFound(id))?;
        let retimed = old.cron != spec.cron || old.timezone != spec.timezone || (old.enabled == 0 && spec.enabled);
        let active_from = if retimed { now_ms() } else { old.active_from };
        if !self.store.update_schedule(id, &row(&spec, active_from, actor)).await? {
            return Err(ScheduleError::NotFound(id));
        }
        tracing::info!(schedule_id = id, name = %spec.name, enabled = spec.enabled, actor, "schedule edited");
        self.changed.notify_one();
        self.get(id).await
    }

    pub async fn delete(&self, id: i64, actor: &str) -> Result<(), ScheduleError> {
        if !self.store.delete_schedule(id).await? {
            return Err(ScheduleError::NotFound(id));
        }
        tracing::info!(schedule_id = id, actor, "schedule deleted");
        self.changed.notify_one();
        Ok(())
    }

    /// The schedule's fires, newest first.
    pub async fn fires(&self, id: i64, limit: i64) -> Result<Vec<FireRow>, ScheduleError> {
        self.store.schedule(id).await?.ok_or(ScheduleError::NotFound(id))?;
        Ok(self.store.schedule_fires(id, limit).await?)
    }

    async fn checked(&self, mut spec: ScheduleSpec) -> Result<ScheduleSpec, ScheduleError> {
        spec.name = crate::labels::check(&spec.name, MAX_NAME)
            .ok_or_else(|| invalid("name", crate::labels::rule(MAX_NAME)))?
            .to_owned();
        let cron = cron::Cron::parse(&spec.cron, &spec.timezone).map_err(|e| match e {
            cron::CronError::Expression(reason) => invalid("cron", reason),
            cron::CronError::TimeZone(reason) => invalid("timezone", reason),
        })?;
        spec.cron = cron.expression().to_owned();
        spec.timezone = cron.time_zone().to_owned();
        if spec.catch_up_secs > MAX_CATCH_UP_SECS {
            return Err(invalid("catch_up_secs", format!("must be at most {MAX_CATCH_UP_SECS} seconds")));
        }
        if self.store.template(spec.template).await?.is_none() {
            return Err(invalid("template", format!("saved job {} does not exist", spec.template)));
        }
        Ok(spec)
    }
}

fn row<'a>(spec: &'a ScheduleSpec, active_from: i64, actor: &'a str) -> NewSchedule<'a> {
    NewSchedule {
        name: &spec.name,
        template_id: spec.template,
        cron: &spec.cron,
        timezone: &spec.timezone,
        enabled: spec.enabled,
        overlap: spec.overlap.as_str(),
        catch_up_secs: i64::try_from(spec.catch_up_secs).unwrap_or(i64::MAX),
        active_from,
        actor,
    }
}

/// The schedule's cron in its zone, as stored; a row that no longer parses is damaged.
fn cron_of(row: &ScheduleRow) -> Result<cron::Cron, ScheduleError> {
    cron::Cron::parse(&row.cron, &row.timezone)
        .map_err(|e| ScheduleError::Damaged(format!("schedule {} has an unreadable timing: {e}", row.id)))
}

fn view_of(row: ScheduleRow) -> Result<ScheduleView, ScheduleError> {
    let next = if row.enabled != 0 { cron_of(&row)?.upcoming(now_ms(), UPCOMING) } else { Vec::new() };
    let overlap = if row.overlap == "queue" { Overlap::Queue } else { Overlap::Skip };
    Ok(ScheduleView {
        id: row.id,
        spec: ScheduleSpec {
            name: row.name,
            template: row.template_id,
            cron: row.cron,
            timezone: row.timezone,
            enabled: row.enabled != 0,
            overlap,
            catch_up_secs: u64::try_from(row.catch_up_secs).unwrap_or(0),
        },
        next,
        created_by: row.created_by,
        created_at: row.created_at,
        updated_by: row.updated_by,
        updated_at: row.updated_at,
    })
}
