//! `/healthz` (the one unauthenticated route) and `/metrics` (Prometheus text).

use axum::{
    extract::State,
    http::{Method, StatusCode},
    Json,
};
use serde_json::json;

use super::{
    auth::Authenticated,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::auth::Role;

pub fn router() -> Routes {
    let viewer = Access::AtLeast(Role::Viewer);
    Routes::new().plain(Method::GET, "/healthz", Access::Public, healthz).plain(
        Method::GET,
        "/metrics",
        viewer,
        metrics,
    )
}

/// 200 while the database answers, 503 otherwise. Says nothing an anonymous caller should not know.
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(err) => {
            tracing::warn!(error = %err, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unreachable" })))
        }
    }
}

async fn metrics(State(state): State<AppState>, who: Authenticated) -> Result<String, HttpError> {
    who.require(Role::Viewer)?;
    Ok(state.metrics.render())
}
