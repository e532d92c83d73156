//! `GET /api/users`, `POST /api/users`, `POST /api/users/{name}/disable`, `…/enable`, `…/role`,
//! `…/password`: console users (admin). Bodies are JSON or forms ([`Submitted`]); forms are sent back to `/users`.

use axum::{extract::State, http::StatusCode, response::Response, Json};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::routes;

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    body::Submitted,
    error::ErrorBody,
    extract::Path,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    activity::Change,
    auth::Role,
    store::UserRow,
    users::{password, PersonRole},
};

/// Where forms go back to.
const PAGE: &str = "/users";

pub fn router() -> Routes {
    let admin = Access::AtLeast(Role::Admin);
    Routes::new()
        .api(admin, routes!(list))
        .api(admin, routes!(add))
        .api(admin, routes!(disable))
        .api(admin, routes!(enable))
        .api(admin, routes!(set_role))
        .api(admin, routes!(set_password))
}

/// Every console user.
#[utoipa::path(get, path = "/api/users", tag = "users", responses((status = 200, body = Vec<UserRow>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<UserRow>>, HttpError> {
    who.require(Role::Admin)?;
    Ok(Json(state.users.list().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// Letters, digits, `.`, `_`, `-`; stored in lower case, surrounding spaces dropped.
    #[schema(pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")]
    name: String,
    role: PersonRole,
    /// Absent or empty: one is generated and answered once. Otherwise 12 to 1024 characters, no control
    /// characters.
    #[schema(pattern = r"^([^\x00-\x1f\x7f-\x9f]{12,1024})?$")]
    password: Option<String>,
}

/// Adds a user (JSON or a form); without a password one is generated and answered once.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUser, responses(
    (status = 201, description = "`{\"user\": UserRow, \"password\": the generated one or null}`; a form gets 303"),
    (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
    (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn add(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    form: Result<Submitted<NewUser>, HttpError>,
) -> Result<Response, HttpError> {
    // Who first: a caller without the role learns nothing from how its body is judged.
    let actor = who.require(Role::Admin)?;
    let form = form?;
    let NewUser { name, role, password } = &form.value;
    let role = Role::from(*role);
    let (password, generated) = match password.as_deref().filter(|p| !p.is_empty()) {
        Some(given) => (given.to_owned(), false),
        None => (password::generate(), true),
    };
    let user = state.users.add(name, &password, role).await?;
    tracing::info!(user = %user.name, role = %user.role, actor = %actor.name, "user added");
    let change = Change::ok("user.add", format!("user {}", user.name)).with("role", &user.role);
    state.activity.record(&origin.actor(actor), change.with("password_generated", generated)).await;
    let body = json!({ "user": user, "password": generated.then_some(password) });
    Ok(form.respond(StatusCode::CREATED, body, PAGE))
}

/// Ends the user's sessions at once; its tokens are refused from then on.
#[utoipa::path(post, path = "/api/users/{name}/disable", tag = "users",
    params(("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")), responses(
    (status = 200, body = UserRow, description = "the user, now disabled; a form gets 303"),
    (status = 404, description = "no such user", body = ErrorBody),
    (status = 409, description = "the last enabled admin", body = ErrorBody),
))]
async fn disable(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(name): Path<String>,
    form: Option<Submitted<Empty>>,
) -> Result<Response, HttpError> {
    switch(state, who, origin, name, form, false).await
}

/// Lets a disabled user log in again; its tokens work again too.
#[utoipa::path(post, path = "/api/users/{name}/enable", tag = "users",
    params(("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")), responses(
    (status = 200, body = UserRow, description = "the user, enabled; a form gets 303"),
    (status = 404, description = "no such user", body = ErrorBody),
))]
async fn enable(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(name): Path<String>,
    form: Option<Submitted<Empty>>,
) -> Result<Response, HttpError> {
    switch(state, who, origin, name, form, true).await
}

/// Enables or disables a user and answers with it.
async fn switch(
    state: AppState,
    who: Authenticated,
    origin: RequestOrigin,
    name: String,
    form: Option<Submitted<Empty>>,
    enabled: bool,
) -> Result<Response, HttpError> {
    let actor = who.require(Role::Admin)?;
    let before = state.users.get(&name).await?;
    if enabled {
        state.users.enable(&name).await?;
    } else {
        state.users.disable(&name).await?;
    }
    let user = state.users.get(&name).await?;
    tracing::info!(user = %user.name, actor = %actor.name, enabled, "user enabled or disabled");
    let action = if enabled { "user.enable" } else { "user.disable" };
    let change = Change::ok(action, format!("user {}", user.name)).diff(
        "disabled",
        before.disabled_at.is_some(),
        user.disabled_at.is_some(),
    );
    state.activity.record(&origin.actor(actor), change).await;
    Ok(respond(form, StatusCode::OK, json!(user)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRole {
    role: PersonRole,
}

/// Gives a user another role, from its next request on: its sessions and tokens are capped by it when used.
#[utoipa::path(post, path = "/api/users/{name}/role", tag = "users", request_body = NewRole,
    params(("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")), responses(
    (status = 200, body = UserRow, description = "the user with its new role; a form gets 303"),
    (status = 404, description = "no such user", body = ErrorBody),
    (status = 409, description = "the last enabled admin would be left without the role", body = ErrorBody),
))]
async fn set_role(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(name): Path<String>,
    form: Result<Submitted<NewRole>, HttpError>,
) -> Result<Response, HttpError> {
    let actor = who.require(Role::Admin)?;
    let form = form?;
    let before = state.users.get(&name).await?;
    state.users.set_role(&name, form.value.role.into()).await?;
    let user = state.users.get(&name).await?;
    tracing::info!(user = %user.name, role = %user.role, actor = %actor.name, "user's role changed");
    let change = Change::ok("user.role", format!("user {}", user.name)).diff("role", &before.role, &user.role);
    state.activity.record(&origin.actor(actor), change).await;
    Ok(form.respond(StatusCode::OK, json!(user), PAGE))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    /// 12 to 1024 characters, no control characters.
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{12,1024}$")]
    password: String,
}

/// Sets a new password; the user's sessions end (its tokens stay).
#[utoipa::path(post, path = "/api/users/{name}/password", tag = "users", request_body = NewPassword,
    params(("name" = String, Path, description = "user name", pattern = r"^\s*[A-Za-z0-9._-]{1,64}\s*$")), responses(
    (status = 200, body = UserRow, description = "the user; a form gets 303"),
    (status = 422, description = "too short a password", body = ErrorBody),
    (status = 404, description = "no such user", body = ErrorBody),
))]
async fn set_password(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(name): Path<String>,
    form: Result<Submitted<NewPassword>, HttpError>,
) -> Result<Response, HttpError> {
    let actor = who.require(Role::Admin)?;
    let form = form?;
    state.users.set_password(&name, &form.value.password).await?;
    let user = state.users.get(&name).await?;
    tracing::info!(user = %user.name, actor = %actor.name, "user's password changed");
    let change = Change::ok("user.password", format!("user {}", user.name)).with("sessions", "ended");
    state.activity.record(&origin.actor(actor), change).await;
    Ok(form.respond(StatusCode::OK, json!(user), PAGE))
}

/// A body with nothing in it but what every form carries (`csrf_token`, `return_to`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Answers an action whose body is optional: a form goes back to its page, anything else gets JSON.
pub fn respond(form: Option<Submitted<Empty>>, status: StatusCode, body: serde_json::Value) -> Response {
    match form {
        Some(form) => form.respond(status, body, PAGE),
        None => axum::response::IntoResponse::into_response((status, Json(body))),
    }
}
