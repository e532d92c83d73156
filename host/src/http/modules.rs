//! `GET /api/modules`: every file in plugins.d with its status.

use axum::{extract::State, Json};
use utoipa_axum::routes;

use super::{
    auth::Authenticated,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{auth::Role, plugins::ModuleListing};

pub fn router() -> Routes {
    Routes::new().api(Access::AtLeast(Role::Viewer), routes!(list))
}

/// Every library file in plugins.d: loaded modules with their parameters and backends, and rejected files with
/// the reason.
#[utoipa::path(get, path = "/api/modules", tag = "modules", responses((status = 200, body = Vec<ModuleListing>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<ModuleListing>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.registry.list()))
}
