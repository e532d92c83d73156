//! Saved jobs: `GET /api/templates`, `POST /api/templates`, `GET|PUT|DELETE /api/templates/{id}`,
//! `GET /api/templates/{id}/hosts` (what the selector matches now) and `POST /api/templates/{id}/run`.

use axum::{extract::State, http::StatusCode, Json};
use serde::Serialize;
use utoipa_axum::routes;

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    error::ErrorBody,
    extract::{JsonBody, Path},
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    activity::Change,
    auth::Role,
    templates::{TemplateSpec, TemplateView},
};

pub fn router() -> Routes {
    let (viewer, operator) = (Access::AtLeast(Role::Viewer), Access::AtLeast(Role::Operator));
    Routes::new()
        .api(viewer, routes!(list))
        .api(operator, routes!(create))
        .api(viewer, routes!(show))
        .api(operator, routes!(update))
        .api(operator, routes!(delete))
        .api(viewer, routes!(hosts))
        .api(operator, routes!(run))
}

/// The id of what was created or started.
#[derive(Serialize, utoipa::ToSchema)]
struct Created {
    id: i64,
}

/// The hosts a saved job's targets match now.
#[derive(Serialize, utoipa::ToSchema)]
struct Matched {
    hosts: Vec<String>,
}

/// Every saved job, by name.
#[utoipa::path(get, path = "/api/templates", tag = "templates", responses((status = 200, body = Vec<TemplateView>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<TemplateView>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.templates.list(&who.0.scope).await?))
}

/// Saves a job definition. The module must be loaded, the parameters pass its schema, the backend be available
/// and the rollout valid; the targets are resolved only when it runs.
#[utoipa::path(post, path = "/api/templates", tag = "templates", request_body = TemplateSpec, responses(
    (status = 201, description = "saved", body = Created),
    (status = 403, description = "the caller's grants do not cover a host its targets match", body = ErrorBody),
    (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
    (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    spec: Result<JsonBody<TemplateSpec>, HttpError>,
) -> Result<(StatusCode, Json<Created>), HttpError> {
    let principal = who.require(Role::Operator)?;
    let JsonBody(spec) = spec?;
    let change = Change::ok("template.create", String::new()).fields(&spec);
    let id = state.templates.create(spec, &principal.name, &principal.scope).await?;
    state.activity.record(&origin.actor(principal), Change { object: format!("saved job {id}"), ..change }).await;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// One saved job.
#[utoipa::path(get, path = "/api/templates/{id}", tag = "templates",
    params(("id" = i64, Path, description = "saved job id")),
    responses((status = 200, body = TemplateView), (status = 404, description = "no such saved job", body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<TemplateView>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.templates.get_in(id, &who.0.scope).await?))
}

/// Replaces a saved job's whole definition, checked as on creation. Jobs it already ran keep the definition
/// they ran with.
#[utoipa::path(put, path = "/api/templates/{id}", tag = "templates",
    params(("id" = i64, Path, description = "saved job id")), request_body = TemplateSpec,
    responses(
        (status = 200, body = TemplateView),
        (status = 403, description = "the caller's grants do not cover a host its targets match", body = ErrorBody),
        (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
        (status = 404, description = "no such saved job", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    spec: Result<JsonBody<TemplateSpec>, HttpError>,
) -> Result<Json<TemplateView>, HttpError> {
    let principal = who.require(Role::Operator)?;
    let JsonBody(spec) = spec?;
    let before = state.templates.get_in(id, &principal.scope).await?;
    let after = state.templates.update(id, spec, &principal.name, &principal.scope).await?;
    let change = Change::ok("template.update", format!("saved job {id}")).changed_fields(&before.spec, &after.spec);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(Json(after))
}

/// Deletes a saved job; the jobs it ran stay in the history with their copy of its definition. One that schedules
/// run is kept until they are deleted or moved to another.
#[utoipa::path(delete, path = "/api/templates/{id}", tag = "templates",
    params(("id" = i64, Path, description = "saved job id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "the caller's grants do not cover a host its targets match", body = ErrorBody),
        (status = 404, description = "no such saved job", body = ErrorBody),
        (status = 409, description = "schedules run it", body = ErrorBody),
))]
async fn delete(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let principal = who.require(Role::Operator)?;
    let before = state.templates.get_in(id, &principal.scope).await?;
    state.templates.delete(id, &principal.name, &principal.scope).await?;
    let change = Change::ok("template.delete", format!("saved job {id}")).fields(&before.spec);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The hosts the saved job's targets match now, in the order a run would take them.
#[utoipa::path(get, path = "/api/templates/{id}/hosts", tag = "templates",
    params(("id" = i64, Path, description = "saved job id")),
    responses((status = 200, body = Matched), (status = 404, description = "no such saved job", body = ErrorBody)))]
async fn hosts(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<Matched>, HttpError> {
    who.require(Role::Viewer)?;
    let template = state.templates.get_in(id, &who.0.scope).await?;
    Ok(Json(Matched { hosts: state.templates.resolve(&template.spec.targets).await? }))
}

/// Runs a saved job now: its targets are resolved and its parameters checked against the module loaded now.
#[utoipa::path(post, path = "/api/templates/{id}/run", tag = "templates",
    params(("id" = i64, Path, description = "saved job id")),
    responses(
        (status = 202, description = "the job is queued", body = Created),
        (status = 403, description = "the caller's grants do not cover a host its targets match", body = ErrorBody),
        (status = 422, description = "it cannot run now (no host matches, a host is gone, the module's schema \
            refuses a parameter); `field` names the part", body = ErrorBody),
        (status = 404, description = "no such saved job", body = ErrorBody),
))]
async fn run(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<Created>), HttpError> {
    let principal = who.require(Role::Operator)?;
    // One the caller cannot see is not found, as anywhere else (a schedule's fire says which hosts instead).
    let saved = state.templates.get_in(id, &principal.scope).await?;
    let job = state.templates.run(id, &principal.name, &principal.scope).await?;
    let change = Change::ok("template.run", format!("saved job {id} ({})", saved.spec.name)).with("job", job);
    state.activity.record(&origin.actor(principal), change).await;
    Ok((StatusCode::ACCEPTED, Json(Created { id: job })))
}
