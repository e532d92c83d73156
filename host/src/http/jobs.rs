//! `POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`, `POST /api/jobs/{id}/cancel`.

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

use super::{auth::Authenticated, AppState, HttpError};
use crate::{
    auth::Role,
    jobs::{JobRequest, JobView},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list).post(submit))
        .route("/api/jobs/{id}", get(show))
        .route("/api/jobs/{id}/cancel", post(cancel))
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
