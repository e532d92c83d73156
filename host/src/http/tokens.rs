//! `GET /api/tokens`, `POST /api/tokens`, `DELETE /api/tokens/{id}` (and `POST /api/tokens/{id}/revoke`, for
//! forms, which cannot send DELETE). Tokens belong to users and never have more rights than their user or than
//! whoever creates them.

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
    users::{respond, Empty},
    AppState, HttpError,
};
use crate::{
    activity::Change,
    auth::{Credential, Role},
    store::{TokenListing, TokenScope},
    users::PersonRole,
};

pub fn router() -> Routes {
    let viewer = Access::AtLeast(Role::Viewer);
    Routes::new()
        .api(viewer, routes!(list))
        .api(viewer, routes!(create))
        .api(viewer, routes!(revoke))
        .api(viewer, routes!(revoke_form))
}

/// The caller's tokens (its user's, or just itself for a token without a user); an admin sees all.
#[utoipa::path(get, path = "/api/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenListing>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<TokenListing>>, HttpError> {
    let principal = who.require(Role::Viewer)?;
    let scope = match (principal.role, principal.user_id, &principal.credential) {
        (Role::Admin, _, _) => TokenScope::All,
        (_, Some(user), _) => TokenScope::User(user),
        (_, None, Credential::Token { id, .. }) => TokenScope::Token(*id),
        (_, None, Credential::Session { .. }) => return Ok(Json(Vec::new())),
    };
    Ok(Json(state.store.list_tokens(scope).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// 1 to 128 characters, no control characters, not only spaces (surrounding spaces are dropped).
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    name: String,
    role: PersonRole,
    /// The user it belongs to; the caller's own user when absent or empty. Another user's needs the admin role.
    #[schema(pattern = r"^\s*([A-Za-z0-9._-]{1,64}\s*)?$")]
    user: Option<String>,
}

/// Answers the token once (`201 {"id", "name", "role", "user", "token"}`, for forms too: it must be shown).
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = NewToken, responses(
    (status = 201, description = "`{\"id\", \"name\", \"role\", \"user\", \"token\"}`: the token, shown once"),
    (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
    (status = 403, description = "above the caller's or the user's role", body = ErrorBody),
    (status = 404, description = "no such user", body = ErrorBody),
))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    form: Result<Submitted<NewToken>, HttpError>,
) -> Result<(StatusCode, Json<serde_json::Value>), HttpError> {
    // Who first: a caller without the role learns nothing from how its body is judged.
    let principal = who.require(Role::Viewer)?;
    let form = form?;
    let NewToken { name, role, user } = &form.value;
    let name =
        crate::labels::check(name, 128).ok_or_else(|| HttpError::unprocessable("name", crate::labels::rule(128)))?;
    let role = Role::from(*role);
    // Never more rights than the one who asks.
    who.require(role)?;
    let owner = match user.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(user) => {
            let row = state.users.get(user).await?;
            if Some(row.id) != principal.user_id {
                who.require(Role::Admin)?;
            }
            Some(row)
        }
        None => match principal.user_id {
            Some(id) => Some(state.store.user_by_id(id).await?.ok_or(HttpError::Unauthorized)?),
            // A token without a user can mint others without one only as an admin (as the CLI does).
            None => {
                who.require(Role::Admin)?;
                None
            }
        },
    };
    if owner.as_ref().is_some_and(|u| u.disabled_at.is_some()) {
        return Err(HttpError::unprocessable("user", "this user is disabled"));
    }
    let (id, token) = state.tokens.create_owned(name, role, owner.as_ref()).await?;
    let user = owner.map(|u| u.name);
    tracing::info!(token_id = id, token = %name, role = %role, user = ?user, actor = %principal.name, "token created");
    let change = Change::ok("token.create", format!("token {id} ({name})")).with("role", role).with("user", &user);
    state.activity.record(&origin.actor(principal), change).await;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name, "role": role, "user": user, "token": token }))))
}

/// Revokes the caller's own token or one of its user's; an admin any.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens", params(("id" = i64, Path, description = "token id")),
    responses(
    (status = 200, description = "`{\"id\", \"revoked\": true}`"),
    (status = 404, description = "no such token of the caller's", body = ErrorBody),
))]
async fn revoke(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    form: Option<Submitted<Empty>>,
) -> Result<Response, HttpError> {
    let principal = who.require(Role::Viewer)?;
    state.tokens.revoke(id, principal).await?;
    tracing::info!(token_id = id, actor = %principal.name, "token revoked");
    state.activity.record(&origin.actor(principal), Change::ok("token.revoke", format!("token {id}"))).await;
    Ok(respond(form, StatusCode::OK, json!({ "id": id, "revoked": true })))
}

/// The same for HTML forms, which cannot send DELETE.
#[utoipa::path(post, path = "/api/tokens/{id}/revoke", tag = "tokens",
    params(("id" = i64, Path, description = "token id")), responses(
    (status = 200, description = "`{\"id\", \"revoked\": true}`; a form gets 303"),
    (status = 404, description = "no such token of the caller's", body = ErrorBody),
))]
async fn revoke_form(
    state: State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    id: Path<i64>,
    form: Option<Submitted<Empty>>,
) -> Result<Response, HttpError> {
    revoke(state, who, origin, id, form).await
}
