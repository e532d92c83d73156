//! `GET /api/overview`: the counts the console's home page draws beside the lists it reads from other routes —
//! jobs per day by status (14 days), audit events per hour (24 h) — and the hosts whose audit events stopped.

use std::collections::HashMap;

use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::{
    auth::Authenticated,
    extract::Query,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{auth::Role, store::now_ms};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

pub fn router() -> Routes {
    Routes::new().api(Access::AtLeast(Role::Viewer), routes!(overview))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// A host that had audit events and none for this many seconds is listed as silent (default 86400, at
    /// least 60).
    #[param(minimum = 60, maximum = 31_622_400)]
    silent_after_secs: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// The server's time, ms since the epoch: the charts end here.
    pub now: i64,
    /// Jobs created in the last 14 UTC days (today included), per day and status; days without jobs are absent.
    pub jobs_per_day: Vec<DayCount>,
    /// Audit events received in the last 24 hours, per hour; hours without events are absent.
    pub audit_per_hour: Vec<HourCount>,
    /// Hosts whose newest audit event is older than `silent_after_secs`: an agent removed or broken.
    pub silent_hosts: Vec<SilentHost>,
    pub silent_after_secs: i64,
    /// Whether `jobs_per_day` and `audit_per_hour` are given: they count the whole fleet, so a caller limited by
    /// grants gets neither (its silent hosts are only its own).
    pub fleet_counts: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayCount {
    /// The day's start (00:00 UTC), ms.
    pub day: i64,
    pub status: String,
    pub jobs: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourCount {
    /// The hour's start, ms.
    pub hour: i64,
    pub events: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SilentHost {
    pub host: String,
    pub last_event_at: i64,
}

/// What the home page draws: jobs per day, audit events per hour, silent hosts.
#[utoipa::path(get, path = "/api/overview", tag = "overview", params(OverviewQuery),
    responses((status = 200, body = Overview), (status = 422, body = super::error::ErrorBody)))]
async fn overview(
    State(state): State<AppState>,
    who: Authenticated,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<Overview>, HttpError> {
    who.require(Role::Viewer)?;
    let silent_after_secs = query.silent_after_secs.unwrap_or(86_400);
    if !(60..=366 * 86_400).contains(&silent_after_secs) {
        return Err(HttpError::unprocessable("silent_after_secs", "must be between 60 and 31622400"));
    }
    let now = now_ms();
    let today = now - now % DAY_MS;
    let fleet_counts = who.0.scope.is_all();
    let (jobs_per_day, audit_per_hour) = if fleet_counts {
        (
            state.store.jobs_per_day(today - 13 * DAY_MS).await?,
            state.store.audit_per_hour(now - now % HOUR_MS - 23 * HOUR_MS).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let names: HashMap<i64, String> = state
        .store
        .inventory_snapshot()
        .await?
        .iter()
        .filter(|h| who.0.scope.sees(h))
        .map(|h| (h.id, h.name.clone()))
        .collect();
    let cutoff = now - silent_after_secs * 1000;
    let mut silent_hosts: Vec<SilentHost> = state
        .store
        .newest_audit_per_host()
        .await?
        .into_iter()
        .filter(|(_, newest)| *newest < cutoff)
        // A host deleted from the inventory is no longer expected to report.
        .filter_map(|(id, newest)| Some(SilentHost { host: names.get(&id)?.clone(), last_event_at: newest }))
        .collect();
    silent_hosts.sort_by_key(|h| h.last_event_at);
    Ok(Json(Overview {
        now,
        jobs_per_day: jobs_per_day.into_iter().map(|(day, status, jobs)| DayCount { day, status, jobs }).collect(),
        audit_per_hour: audit_per_hour.into_iter().map(|(hour, events)| HourCount { hour, events }).collect(),
        silent_hosts,
        silent_after_secs,
        fleet_counts,
    }))
}
