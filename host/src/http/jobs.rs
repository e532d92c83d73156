//! `POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`, `GET /api/jobs/{id}/events`,
//! `POST /api/jobs/{id}/cancel`, `POST /api/jobs/{id}/rerun`, `GET /api/backends`.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    Json,
};
use futures_util::{stream, Stream};
use serde::Serialize;
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
    activity::Change,
    auth::Role,
    backends::Health,
    jobs::{HistoryFilter, JobEvent, JobRequest, JobView, RerunHosts},
};

pub fn router() -> Routes {
    Routes::new()
        .api(Access::AtLeast(Role::Viewer), routes!(list))
        .api(Access::AtLeast(Role::Operator), routes!(submit))
        .api(Access::AtLeast(Role::Viewer), routes!(show))
        .api(Access::AtLeast(Role::Viewer), routes!(events))
        .api(Access::AtLeast(Role::Operator), routes!(cancel))
        .api(Access::AtLeast(Role::Operator), routes!(rerun))
        .api(Access::AtLeast(Role::Viewer), routes!(backends))
}

/// The answer to a submitted job.
#[derive(Serialize, utoipa::ToSchema)]
struct Submitted {
    id: i64,
}

/// What to re-run.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RerunRequest {
    hosts: RerunHosts,
}

/// The answer to a cancel request.
#[derive(Serialize, utoipa::ToSchema)]
struct Cancelling {
    id: i64,
    cancelling: bool,
}

/// Server-sent events: `event: host` with one result per host as it finishes (what is done already comes first),
/// then `event: end` with the job's final view, and the stream ends.
#[utoipa::path(get, path = "/api/jobs/{id}/events", tag = "jobs", params(("id" = i64, Path, description = "job id")),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "`event: host` with a ResultRow per host as it finishes, then `event: end` with the JobView"),
        (status = 404, description = "no such job", body = ErrorBody),
))]
async fn events(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    who.require(Role::Viewer)?;
    let cursor = state.jobs.events(id, &who.0.scope).await?;
    let events = stream::unfold(cursor, |mut cursor| async move {
        let event = match cursor.next().await? {
            JobEvent::Host(row) => Event::default().event("host").json_data(row),
            JobEvent::End(view) => Event::default().event("end").json_data(view),
        };
        // Serialising a row of strings and numbers cannot fail; if it ever did, say so rather than drop it.
        let event = event.unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
        Some((Ok(event), cursor))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The available backends, each with a health line (checked now).
#[utoipa::path(get, path = "/api/backends", tag = "jobs", responses((status = 200, body = Vec<Health>)))]
async fn backends(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<Health>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.jobs.backends().health().await))
}

/// Checks the request (module, backend, parameters against the module's schema, hosts in the inventory) and
/// queues the job; nothing runs unless all of it holds.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = JobRequest, responses(
    (status = 202, description = "queued", body = Submitted),
    (status = 403, description = "the caller's grants do not cover a host; `field` is `hosts`", body = ErrorBody),
    (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
))]
async fn submit(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    request: Result<JsonBody<JobRequest>, HttpError>,
) -> Result<(StatusCode, Json<Submitted>), HttpError> {
    let principal = who.require(Role::Operator)?;
    let JsonBody(request) = request?;
    let change = Change::ok("job.submit", String::new()).fields(&request);
    let id = state.jobs.submit(request, &principal.name, &principal.scope).await?;
    state.activity.record(&origin.actor(principal), Change { object: format!("job {id}"), ..change }).await;
    Ok((StatusCode::ACCEPTED, Json(Submitted { id })))
}

/// The job history, newest first, without per-host results: every filter narrows. For the next page, pass the
/// last id received as `before`.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(HistoryFilter), responses(
    (status = 200, body = Vec<JobView>),
    (status = 422, description = "a filter is not valid; `field` names it", body = ErrorBody),
))]
async fn list(
    State(state): State<AppState>,
    who: Authenticated,
    filter: Result<Query<HistoryFilter>, HttpError>,
) -> Result<Json<Vec<JobView>>, HttpError> {
    who.require(Role::Viewer)?;
    let Query(filter) = filter?;
    Ok(Json(state.jobs.history(&filter.query()?, &who.0.scope).await?))
}

/// One job with its results so far.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, description = "no such job", body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<JobView>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.jobs.view_in(id, &who.0.scope).await?))
}

/// Asks a queued or running job to stop; one waiting for approval ends at once, `cancelled`.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path, description = "job id")),
    responses(
        (status = 200, body = Cancelling),
        (status = 403, description = "the caller's grants do not cover a host of the job", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job has finished", body = ErrorBody),
))]
async fn cancel(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<Json<Cancelling>, HttpError> {
    let principal = who.require(Role::Operator)?;
    if state.jobs.cancel_in(id, &principal.scope).await? {
        tracing::info!(job_id = id, actor = %principal.name, "job cancel requested");
        state.activity.record(&origin.actor(principal), Change::ok("job.cancel", format!("job {id}"))).await;
        Ok(Json(Cancelling { id, cancelling: true }))
    } else if state.approvals.withdraw(id, principal).await? {
        // It was waiting for approval: it ends without running.
        let change = Change::ok("job.cancel", format!("job {id}")).with("waiting_for_approval", true);
        state.activity.record(&origin.actor(principal), change).await;
        Ok(Json(Cancelling { id, cancelling: true }))
    } else {
        // Finished jobs cannot be cancelled; unknown ones do not exist.
        let job = state.jobs.view(id).await?;
        Err(HttpError::Conflict(format!("job {id} is already {}", job.status)))
    }
}

/// Runs a finished job again as a new job (its `rerun_of` names this one): the same module id, parameters, backend
/// and rollout, on every host (`"all"`) or on the hosts that were not ok (`"not_ok"`: failed, unreachable,
/// lost, cancelled, skipped, or without a result). The module version loaded now runs.
#[utoipa::path(post, path = "/api/jobs/{id}/rerun", tag = "jobs", params(("id" = i64, Path, description = "job id")),
    request_body = RerunRequest,
    responses(
        (status = 202, description = "the new job is queued", body = Submitted),
        (status = 403, description = "the caller's grants do not cover a host", body = ErrorBody),
        (status = 422, description = "not valid (e.g. a host is no longer in the inventory, or the module's \
            schema now refuses a parameter); `field` names the part", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job has not finished, or every host was ok", body = ErrorBody),
))]
async fn rerun(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    request: Result<JsonBody<RerunRequest>, HttpError>,
) -> Result<(StatusCode, Json<Submitted>), HttpError> {
    let principal = who.require(Role::Operator)?;
    let JsonBody(request) = request?;
    let hosts = request.hosts;
    let new = state.jobs.rerun(id, hosts, &principal.name, &principal.scope).await?;
    tracing::info!(job_id = new, rerun_of = id, actor = %principal.name, "job re-run");
    let change = Change::ok("job.rerun", format!("job {new}")).with("rerun_of", id).with("hosts", hosts);
    state.activity.record(&origin.actor(principal), change).await;
    Ok((StatusCode::ACCEPTED, Json(Submitted { id: new })))
}
