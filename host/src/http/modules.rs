//! `GET /api/modules`: every file in plugins.d with its status.

use axum::{extract::State, routing::get, Json, Router};

use super::{auth::Authenticated, AppState, HttpError};
use crate::{auth::Role, plugins::ModuleListing};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/modules", get(list))
}

async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<ModuleListing>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.registry.list()))
}
