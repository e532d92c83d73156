//! `GET /api/cluster`: the servers of this database, their last heartbeat and what they run.

use axum::{extract::State, Json};
use utoipa_axum::routes;

use super::{
    auth::Authenticated,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{auth::Role, cluster::ServerView};

pub fn router() -> Routes {
    Routes::new().api(Access::AtLeast(Role::Viewer), routes!(servers))
}

/// Every server registered on this database, by name: its address, version, start, last heartbeat (every 5 s;
/// `up` is false after 15 s without one) and the jobs running on it. A caller whose grants cover part of the
/// inventory sees how many jobs each runs, not which.
#[utoipa::path(get, path = "/api/cluster", tag = "cluster", responses((status = 200, body = Vec<ServerView>)))]
async fn servers(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<ServerView>>, HttpError> {
    let caller = who.require(Role::Viewer)?;
    let mut servers = state.cluster.servers().await?;
    if !caller.scope.is_all() {
        for server in &mut servers {
            server.jobs.clear();
        }
    }
    Ok(Json(servers))
}
