//! The HTTP API: one router per resource, merged over one shared state.
//!
//! **Architecture invariant:** the router is built from the route table ([`routes`]): every route is there with
//! its rule, and `tests/authz.rs` checks each rule against the running server. Every route but `/healthz`, the
//! original agent's GET, the login page and `POST /login` (how a person gets credentials), `POST /logout` (ends
//! only the session the caller's own cookie names) and the console's static assets goes through
//! [`auth::Authenticated`], and each handler requires the least role its rule states. Every request passes
//! [`session::guard`] first: cookie-borne requests that change state must come from this origin and carry the
//! session's CSRF token. Handlers parse and authorise, then call the domain (`jobs`, `store`, `plugins`); they
//! hold no logic of their own beyond mapping to JSON.

mod activity;
mod approvals;
mod audit;
mod auth;
mod cluster;
// pub(crate): `read_form` is re-exported for the fuzz targets by `crate::fuzzing`.
pub(crate) mod body;
mod error;
mod extract;
mod grants;
mod headers;
mod health;
mod hosts;
mod jobs;
mod modules;
mod notify;
mod openapi;
mod overview;
pub mod routes;
mod schedules;
mod session;
mod templates;
pub mod tls;
mod tokens;
mod users;

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
    Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;

pub use auth::Authenticated;
pub use body::{Submitted, CSRF_FIELD, RETURN_FIELD};
pub use error::HttpError;
pub use headers::CONTENT_SECURITY_POLICY;
pub use hosts::{validate_host, HostForm};
pub use session::{COOKIE as SESSION_COOKIE, CSRF_HEADER};

use routes::{RouteRule, Routes};

use crate::{
    audit::AuditService, auth::Tokens, jobs::JobService, plugins::Registry, schedules::Schedules, store::Store,
    templates::Templates, users::Users,
};

/// What every handler may use. Cloned for every request (axum's `State`), so one `Arc` rather than the parts.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    /// This server among its database's servers.
    pub cluster: Arc<crate::cluster::Cluster>,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub jobs: Arc<JobService>,
    pub templates: Arc<Templates>,
    pub schedules: Arc<Schedules>,
    pub notify: Arc<crate::notify::Notifications>,
    pub audit: Arc<AuditService>,
    pub tokens: Tokens,
    pub users: Arc<Users>,
    pub access: Arc<crate::access::Access>,
    pub approvals: Arc<crate::approvals::Approvals>,
    pub activity: crate::activity::Activity,
    /// Whether the session cookie is marked `Secure` (and origins must be `https`).
    pub secure_cookies: bool,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// Every route the server serves, each with its rule: one `router()` per resource, one line here each.
fn table() -> Routes {
    Routes::new()
        .merge(health::router())
        .merge(cluster::router())
        .merge(modules::router())
        .merge(hosts::router())
        .merge(jobs::router())
        .merge(approvals::router())
        .merge(overview::router())
        .merge(templates::router())
        .merge(schedules::router())
        .merge(notify::router())
        .merge(audit::router())
        .merge(session::router())
        .merge(users::router())
        .merge(grants::router())
        .merge(activity::router())
        .merge(tokens::router())
        .merge(crate::ui::router())
        .merge(openapi::router())
}

/// The route table: what the router serves (method, path) and who may call each route.
pub fn route_table() -> Vec<RouteRule> {
    table().split().2
}

/// The OpenAPI document of the JSON API (what `GET /api/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::complete(table().split().1)
}

/// The router with `extra` routes served through the same layers as every other route (the benchmarks' no-op
/// route: a ceiling measured beside the real routes must pay what they pay). `extra` is not in the table: only
/// benchmarks pass any.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (routes, _, _) = table().split();
    Router::new()
        .merge(extra)
        .merge(routes)
        // Not a route (nothing is served there): an unknown path answers 404, as a console page for people.
        .fallback(crate::ui::not_found)
        .method_not_allowed_fallback(crate::ui::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), activity::record_refusals))
        .layer(middleware::from_fn_with_state(state.clone(), session::guard))
        .layer(middleware::from_fn(track_latency))
        .layer(middleware::from_fn(headers::security_headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Records request latency labelled by the matched route (never the raw URI: it would explode the label set).
async fn track_latency(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("omserver_http_request_duration_seconds", "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}
