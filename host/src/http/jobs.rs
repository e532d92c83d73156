//! `POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`, `GET /api/jobs/{id}/events`,
//! `POST /api/jobs/{id}/cancel`, `GET /api/backends`.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
    Json, Router,
};
use futures_util::{stream, Stream};
use serde_json::{json, Value};

use super::{auth::Authenticated, AppState, HttpError};
use crate::{
    auth::Role,
    backends::Health,
    jobs::{JobEvent, JobRequest, JobView},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list).post(submit))
        .route("/api/jobs/{id}", get(show))
        .route("/api/jobs/{id}/events", get(events))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/backends", get(backends))
}

/// Server-sent events: `event: host` with one result per host as it finishes (what is done already comes first),
/// then `event: end` with the job's final view, and the stream ends.
async fn events(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    who.require(Role::Viewer)?;
    let cursor = state.jobs.events(id).await?;
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
async fn backends(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<Health>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.jobs.backends().health().await))
}

async fn submit(
    State(state): State<AppState>,
    who: Authenticated,
    request: Result<Json<JobRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let principal = who.require(Role::Operator)?;
    let Json(request) = request?;
    let id = state.jobs.submit(request, &principal.name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<JobView>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.jobs.recent(100).await?))
}

async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<JobView>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.jobs.view(id).await?))
}

async fn cancel(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<Value>, HttpError> {
    who.require(Role::Operator)?;
    if state.jobs.cancel(id) {
        tracing::info!(job_id = id, actor = %who.0.name, "job cancel requested");
        Ok(Json(json!({ "id": id, "cancelling": true })))
    } else {
        // Finished jobs cannot be cancelled; unknown ones do not exist.
        let job = state.jobs.view(id).await?;
        Err(HttpError::Conflict(format!("job {id} is already {}", job.status)))
    }
}
