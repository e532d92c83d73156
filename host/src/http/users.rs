//! `GET /api/users`, `POST /api/users`, `POST /api/users/{name}/disable`, `POST /api/users/{name}/password`:
//! console users (admin). Bodies are JSON or forms ([`Submitted`]); forms are sent back to `/users`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use super::{auth::Authenticated, body::Submitted, AppState, HttpError};
use crate::{
    auth::Role,
    store::UserRow,
    users::{password, user_role},
};

/// Where forms go back to.
const PAGE: &str = "/users";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", get(list).post(add))
        .route("/api/users/{name}/disable", post(disable))
        .route("/api/users/{name}/password", post(set_password))
}

async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<UserRow>>, HttpError> {
    who.require(Role::Admin)?;
    Ok(Json(state.users.list().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    /// Absent or empty: one is generated and answered once.
    password: Option<String>,
}

async fn add(
    State(state): State<AppState>,
    who: Authenticated,
    form: Submitted<NewUser>,
) -> Result<Response, HttpError> {
    let actor = who.require(Role::Admin)?;
    let NewUser { name, role, password } = &form.value;
    let role = user_role(role)?;
    let (password, generated) = match password.as_deref().filter(|p| !p.is_empty()) {
        Some(given) => (given.to_owned(), false),
        None => (password::generate(), true),
    };
    let user = state.users.add(name, &password, role).await?;
    tracing::info!(user = %user.name, role = %user.role, actor = %actor.name, "user added");
    let body = json!({ "user": user, "password": generated.then_some(password) });
    Ok(form.respond(StatusCode::CREATED, body, PAGE))
}

/// Ends the user's sessions at once; its tokens are refused from then on.
async fn disable(
    State(state): State<AppState>,
    who: Authenticated,
    Path(name): Path<String>,
    form: Option<Submitted<Empty>>,
) -> Result<Response, HttpError> {
    let actor = who.require(Role::Admin)?;
    state.users.disable(&name).await?;
    let user = state.users.get(&name).await?;
    tracing::info!(user = %user.name, actor = %actor.name, "user disabled");
    Ok(respond(form, StatusCode::OK, json!(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

/// Sets a new password; the user's sessions end (its tokens stay).
async fn set_password(
    State(state): State<AppState>,
    who: Authenticated,
    Path(name): Path<String>,
    form: Submitted<NewPassword>,
) -> Result<Response, HttpError> {
    let actor = who.require(Role::Admin)?;
    state.users.set_password(&name, &form.value.password).await?;
    let user = state.users.get(&name).await?;
    tracing::info!(user = %user.name, actor = %actor.name, "user's password changed");
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
