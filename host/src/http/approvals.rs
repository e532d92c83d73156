//! Approvals: `GET|POST /api/approval-policies`, `DELETE /api/approval-policies/{id}`, and a waiting job's
//! decision, `POST /api/jobs/{id}/approve` and `POST /api/jobs/{id}/reject`.

use axum::{extract::State, http::StatusCode, Json};
use serde::Deserialize;
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
    approvals::{ApprovalView, PolicyForm, PolicyView},
    auth::Role,
};

pub fn router() -> Routes {
    let (viewer, operator, admin) =
        (Access::AtLeast(Role::Viewer), Access::AtLeast(Role::Operator), Access::AtLeast(Role::Admin));
    Routes::new()
        .api(viewer, routes!(policies))
        .api(admin, routes!(add_policy))
        .api(admin, routes!(delete_policy))
        .api(operator, routes!(approve))
        .api(operator, routes!(reject))
}

/// A decision's reason, for the record (and, for a rejection, the job's error).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Decision {
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    comment: String,
}

/// Every approval policy, by name: which jobs wait for a second person.
#[utoipa::path(get, path = "/api/approval-policies", tag = "approvals",
    responses((status = 200, body = Vec<PolicyView>)))]
async fn policies(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<PolicyView>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.approvals.policies().await?))
}

/// Adds a policy. A job falls under it when one of its hosts is in the categories or tags it names (any host when
/// it names none) and its module or saved job is listed (any when it lists neither); it then waits for another
/// person's approval before it runs, for `expire_secs` at most.
#[utoipa::path(post, path = "/api/approval-policies", tag = "approvals", request_body = PolicyForm, responses(
    (status = 201, body = PolicyView),
    (status = 422, description = "it names nothing, or what does not exist; `field` names the part", body = ErrorBody),
    (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn add_policy(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    form: Result<JsonBody<PolicyForm>, HttpError>,
) -> Result<(StatusCode, Json<PolicyView>), HttpError> {
    let actor = who.require(Role::Admin)?;
    let JsonBody(form) = form?;
    let policy = state.approvals.add_policy(form, &actor.name).await?;
    let change = Change::ok("approval_policy.add", format!("approval policy {} ({})", policy.id, policy.name));
    state.activity.record(&origin.actor(actor), change.fields(&policy)).await;
    Ok((StatusCode::CREATED, Json(policy)))
}

/// Deletes a policy. Jobs already waiting under it still wait for their decision.
#[utoipa::path(delete, path = "/api/approval-policies/{id}", tag = "approvals",
    params(("id" = i64, Path, description = "policy id")), responses(
    (status = 204, description = "deleted"),
    (status = 404, description = "no such policy", body = ErrorBody),
))]
async fn delete_policy(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let actor = who.require(Role::Admin)?;
    let policy = state.approvals.delete_policy(id).await?;
    let change = Change::ok("approval_policy.delete", format!("approval policy {id} ({})", policy.name));
    state.activity.record(&origin.actor(actor), change.fields(&policy)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Approves a job waiting for approval: it is queued and starts (with the module loaded now; if it can no longer
/// run, it ends `failed` and says why). Not its requester's to approve; the caller's grants must let it run the
/// job on every host.
#[utoipa::path(post, path = "/api/jobs/{id}/approve", tag = "approvals", request_body = Decision,
    params(("id" = i64, Path, description = "job id")), responses(
    (status = 200, body = ApprovalView, description = "the approval, decided"),
    (status = 403, description = "the caller asked for this job, or its grants do not cover a host", body = ErrorBody),
    (status = 404, description = "no such job", body = ErrorBody),
    (status = 409, description = "the job is not waiting for approval", body = ErrorBody),
    (status = 422, description = "the comment is too long", body = ErrorBody),
))]
async fn approve(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    body: Result<JsonBody<Decision>, HttpError>,
) -> Result<Json<ApprovalView>, HttpError> {
    decide(state, who, origin, id, body, true).await
}

/// Rejects a job waiting for approval: it ends `rejected`, with the comment as its error. Not its requester's to
/// reject (it may cancel it); the caller's grants must let it run the job on every host.
#[utoipa::path(post, path = "/api/jobs/{id}/reject", tag = "approvals", request_body = Decision,
    params(("id" = i64, Path, description = "job id")), responses(
    (status = 200, body = ApprovalView, description = "the approval, decided"),
    (status = 403, description = "the caller asked for this job, or its grants do not cover a host", body = ErrorBody),
    (status = 404, description = "no such job", body = ErrorBody),
    (status = 409, description = "the job is not waiting for approval", body = ErrorBody),
    (status = 422, description = "the comment is too long", body = ErrorBody),
))]
async fn reject(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    body: Result<JsonBody<Decision>, HttpError>,
) -> Result<Json<ApprovalView>, HttpError> {
    decide(state, who, origin, id, body, false).await
}

/// Approves (`approve`) or rejects job `id`, and records who did and why.
async fn decide(
    state: AppState,
    who: Authenticated,
    origin: RequestOrigin,
    id: i64,
    body: Result<JsonBody<Decision>, HttpError>,
    approve: bool,
) -> Result<Json<ApprovalView>, HttpError> {
    let actor = who.require(Role::Operator)?;
    let JsonBody(decision) = body?;
    let (approval, action) = if approve {
        (state.approvals.approve(id, actor, &decision.comment).await?, "approval.approve")
    } else {
        (state.approvals.reject(id, actor, &decision.comment).await?, "approval.reject")
    };
    let change = Change::ok(action, format!("job {id}"))
        .with("policy", &approval.policy)
        .with("requested_by", &approval.requested_by)
        .with("comment", &approval.comment);
    state.activity.record(&origin.actor(actor), change).await;
    Ok(Json(approval))
}
