//! Schedules of saved jobs: `GET /api/schedules`, `POST /api/schedules`, `GET|PUT|DELETE /api/schedules/{id}` and
//! `GET /api/schedules/{id}/fires`.

use axum::{extract::State, http::StatusCode, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    error::ErrorBody,
    extract::{JsonBody, Path, Query},
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    access::Scope,
    activity::Change,
    auth::Role,
    schedules::{ScheduleSpec, ScheduleView},
    store::FireRow,
    templates::TemplateError,
};

/// The most fires one request lists.
const MAX_FIRES: i64 = 1_000;

pub fn router() -> Routes {
    let (viewer, operator) = (Access::AtLeast(Role::Viewer), Access::AtLeast(Role::Operator));
    Routes::new()
        .api(viewer, routes!(list))
        .api(operator, routes!(create))
        .api(viewer, routes!(show))
        .api(operator, routes!(update))
        .api(operator, routes!(delete))
        .api(viewer, routes!(fires))
}

/// A new schedule: its id and next fire times.
#[derive(Serialize, utoipa::ToSchema)]
struct Created {
    id: i64,
    /// The next 5 fire times (Unix ms), none while disabled.
    next: Vec<i64>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FiresQuery {
    /// How many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Every schedule, by name, with its next fire times.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules", responses((status = 200, body = Vec<ScheduleView>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<ScheduleView>>, HttpError> {
    who.require(Role::Viewer)?;
    let mut schedules = state.schedules.list().await?;
    if !who.0.scope.is_all() {
        let seen: Vec<i64> = state.templates.list(&who.0.scope).await?.iter().map(|t| t.id).collect();
        schedules.retain(|s| seen.contains(&s.spec.template));
    }
    Ok(Json(schedules))
}

/// Schedules a saved job. Slots from now on fire; none before.
#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = ScheduleSpec, responses(
    (status = 201, description = "scheduled", body = Created),
    (status = 403, description = "the caller's grants do not cover a host the saved job targets", body = ErrorBody),
    (status = 422, description = "not valid (cron, timezone, template…); `field` names the part", body = ErrorBody),
    (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    spec: Result<JsonBody<ScheduleSpec>, HttpError>,
) -> Result<(StatusCode, Json<Created>), HttpError> {
    let principal = who.require(Role::Operator)?;
    let JsonBody(spec) = spec?;
    runs_within(&state, spec.template, &principal.scope).await?;
    let view = state.schedules.create(spec, &principal.name).await?;
    let change = Change::ok("schedule.create", format!("schedule {}", view.id)).fields(&view.spec);
    state.activity.record(&origin.actor(principal), change).await;
    Ok((StatusCode::CREATED, Json(Created { id: view.id, next: view.next })))
}

/// One schedule with its next fire times.
#[utoipa::path(get, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = i64, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, description = "no such schedule", body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<ScheduleView>, HttpError> {
    who.require(Role::Viewer)?;
    let schedule = state.schedules.get(id).await?;
    seen_by(&state, &schedule, &who.0.scope).await?;
    Ok(Json(schedule))
}

/// Replaces a schedule's whole definition (to pause it, send it with `"enabled": false`). After a change of
/// timing, or when it is enabled again, slots before now are not counted as missed.
#[utoipa::path(put, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = i64, Path, description = "schedule id")), request_body = ScheduleSpec,
    responses(
        (status = 200, body = ScheduleView),
        (status = 403, description = "the caller's grants do not cover a host the saved job targets", body = ErrorBody),
        (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    spec: Result<JsonBody<ScheduleSpec>, HttpError>,
) -> Result<Json<ScheduleView>, HttpError> {
    let principal = who.require(Role::Operator)?;
    let JsonBody(spec) = spec?;
    let old = state.schedules.get(id).await?;
    seen_by(&state, &old, &principal.scope).await?;
    runs_within(&state, old.spec.template, &principal.scope).await?;
    runs_within(&state, spec.template, &principal.scope).await?;
    let new = state.schedules.update(id, spec, &principal.name).await?;
    let change = Change::ok("schedule.update", format!("schedule {id}")).changed_fields(&old.spec, &new.spec);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(Json(new))
}

/// Deletes a schedule and its record of fires; the jobs it started stay in the history.
#[utoipa::path(delete, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = i64, Path, description = "schedule id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "the caller's grants do not cover a host the saved job targets", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
))]
async fn delete(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let principal = who.require(Role::Operator)?;
    let old = state.schedules.get(id).await?;
    seen_by(&state, &old, &principal.scope).await?;
    runs_within(&state, old.spec.template, &principal.scope).await?;
    state.schedules.delete(id, &principal.name).await?;
    let change = Change::ok("schedule.delete", format!("schedule {id}")).fields(&old.spec);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The schedule's fires, newest slot first: each slot with its outcome (`fired` and the job, `skipped`,
/// `missed` or `failed` and why, `queued` while it waits for the previous run).
#[utoipa::path(get, path = "/api/schedules/{id}/fires", tag = "schedules",
    params(("id" = i64, Path, description = "schedule id"), FiresQuery),
    responses(
        (status = 200, body = Vec<FireRow>),
        (status = 422, description = "`limit` is not valid", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
))]
async fn fires(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
    query: Result<Query<FiresQuery>, HttpError>,
) -> Result<Json<Vec<FireRow>>, HttpError> {
    who.require(Role::Viewer)?;
    let Query(query) = query?;
    seen_by(&state, &state.schedules.get(id).await?, &who.0.scope).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_FIRES).contains(&limit) {
        return Err(HttpError::unprocessable("limit", format!("must be between 1 and {MAX_FIRES}")));
    }
    Ok(Json(state.schedules.fires(id, limit).await?))
}

/// A schedule exists for a scoped caller when its saved job does (see `Templates::get_in`).
async fn seen_by(state: &AppState, schedule: &ScheduleView, scope: &Scope) -> Result<(), HttpError> {
    if !scope.is_all() && state.templates.get_in(schedule.spec.template, scope).await.is_err() {
        return Err(HttpError::NotFound(format!("schedule {} not found", schedule.id)));
    }
    Ok(())
}

/// A scoped caller schedules only what it may run now: saved job `template` on every host it targets.
async fn runs_within(state: &AppState, template: i64, scope: &Scope) -> Result<(), HttpError> {
    if scope.is_all() {
        return Ok(());
    }
    match state.templates.get_in(template, scope).await {
        Ok(saved) => Ok(state.templates.check_scope(&saved.spec, Some(template), scope).await?),
        // Named in the body: a saved job the caller cannot see is one that does not exist, as for anyone.
        Err(TemplateError::NotFound(_)) => {
            Err(HttpError::unprocessable("template", format!("saved job {template} does not exist")))
        }
        Err(e) => Err(e.into()),
    }
}
