//! `GET /api/modules`: every file in plugins.d with its status, and which servers of the database serve it.

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

/// Every library file in this server's plugins.d: loaded modules with their parameters, backends and content
/// hash, and rejected files with the reason. `servers` names the servers of the database that serve the same file
/// with the same content (each server watches its own plugins.d; install a module on every server).
#[utoipa::path(get, path = "/api/modules", tag = "modules", responses((status = 200, body = Vec<ModuleListing>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<ModuleListing>>, HttpError> {
    who.require(Role::Viewer)?;
    let mut listing = state.registry.list();
    let mut elsewhere = state.cluster.module_servers().await?;
    let this = state.cluster.name();
    for module in listing.iter_mut().filter(|m| m.status == "loaded") {
        let Some(sha256) = module.sha256.clone() else { continue };
        // This server's own view is the registry's now; the others' as of their last heartbeat.
        let mut servers: Vec<String> = elsewhere.remove(&(module.file.clone(), sha256)).unwrap_or_default();
        servers.retain(|s| s != this);
        servers.push(this.to_owned());
        servers.sort();
        module.servers = servers;
    }
    Ok(Json(listing))
}
