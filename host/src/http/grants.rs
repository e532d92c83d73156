//! `GET /api/users/{name}/grants`, `POST /api/users/{name}/grants`, `DELETE /api/users/{name}/grants/{id}`: a
//! user's role limited to part of the inventory (admin; see [`crate::access`]).

use axum::{extract::State, http::StatusCode, Json};
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
    access::{GrantForm, GrantView},
    activity::Change,
    auth::Role,
};

pub fn router() -> Routes {
    let admin = Access::AtLeast(Role::Admin);
    Routes::new().api(admin, routes!(list_grants)).api(admin, routes!(add_grant)).api(admin, routes!(remove_grant))
}

/// The user's grants, oldest first. None: the user's role applies to every host.
#[utoipa::path(get, path = "/api/users/{name}/grants", tag = "users",
    params(("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")), responses(
    (status = 200, body = Vec<GrantView>),
    (status = 404, description = "no such user", body = ErrorBody),
))]
async fn list_grants(
    State(state): State<AppState>,
    who: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Vec<GrantView>>, HttpError> {
    who.require(Role::Admin)?;
    Ok(Json(state.access.grants(&name).await?))
}

/// Limits the user to what its grants cover: from its next request on, its role applies only to the hosts a
/// grant covers (and, when a grant lists modules or saved jobs, only to running those).
#[utoipa::path(post, path = "/api/users/{name}/grants", tag = "users", request_body = GrantForm,
    params(("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")), responses(
    (status = 201, body = GrantView),
    (status = 400, description = "not what this document allows; `field` names the part", body = ErrorBody),
    (status = 422, description = "a category or tag no host has, a module not loaded, a saved job that does not \
        exist, or a role above the user's; `field` names the part", body = ErrorBody),
    (status = 404, description = "no such user", body = ErrorBody),
))]
async fn add_grant(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(name): Path<String>,
    form: Result<JsonBody<GrantForm>, HttpError>,
) -> Result<(StatusCode, Json<GrantView>), HttpError> {
    let actor = who.require(Role::Admin)?;
    let JsonBody(form) = form?;
    let grant = state.access.grant(&name, form, &actor.name).await?;
    state.activity.record(&origin.actor(actor), granted("grant.add", &name, &grant)).await;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// The record of a grant given or removed: its role and selector.
fn granted(action: &'static str, user: &str, grant: &GrantView) -> Change {
    Change::ok(action, format!("grant {} of {}", grant.id, user.trim().to_ascii_lowercase()))
        .with("role", grant.role)
        .with("functions", &grant.spec.functions)
        .with("apps", &grant.spec.apps)
        .with("tags", &grant.spec.tags)
        .with("modules", &grant.spec.modules)
        .with("templates", &grant.spec.templates)
}

/// Removes one grant. The user's last grant removed, its role applies to every host again.
#[utoipa::path(delete, path = "/api/users/{name}/grants/{id}", tag = "users",
    params(
        ("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$"),
        ("id" = i64, Path, description = "grant id"),
    ), responses(
    (status = 204, description = "removed"),
    (status = 404, description = "no such user, or no such grant of the user", body = ErrorBody),
))]
async fn remove_grant(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path((name, id)): Path<(String, i64)>,
) -> Result<StatusCode, HttpError> {
    let actor = who.require(Role::Admin)?;
    let removed = state.access.revoke(&name, id, &actor.name).await?;
    state.activity.record(&origin.actor(actor), granted("grant.remove", &name, &removed)).await;
    Ok(StatusCode::NO_CONTENT)
}
