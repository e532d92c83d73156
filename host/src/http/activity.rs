//! `GET /api/activity` and `GET /api/activity.csv`: the activity log (admin); [`RequestOrigin`], the extractor
//! that says where a request came from for the record; and [`record_refusals`], which records refused changes.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::{
    auth::{self, Authenticated},
    error::{ErrorBody, Refusal},
    extract::Query,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    activity::{Actor, Change, Origin},
    auth::{Principal, Role},
    calendar::{self, End},
    store::{ActivityQuery, ActivityRow},
    users::Session,
};

/// Most rows one listing returns; the CSV takes up to 100 times as many.
const MAX_LIMIT: i64 = 1000;

pub fn router() -> Routes {
    let admin = Access::AtLeast(Role::Admin);
    Routes::new().api(admin, routes!(list)).api(admin, routes!(csv))
}

/// Where a request came from: the peer's address and the `User-Agent` it sent. Never refuses a request.
pub struct RequestOrigin(pub Origin);

impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let address =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect())
            .unwrap_or_default();
        Ok(RequestOrigin(Origin { address, user_agent }))
    }
}

impl RequestOrigin {
    /// `principal` acting from here.
    pub fn actor(self, principal: &Principal) -> Actor {
        Actor::of(principal, self.0)
    }
}

/// Records every refused attempt to change something: a request with an unsafe method that an authenticated
/// caller made and a handler refused (403: below the route's role, outside the caller's grants, more than its
/// user may). Reads pass unrecorded; an unauthenticated request names no one (401, not here).
pub async fn record_refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method().is_safe() {
        return next.run(request).await;
    }
    let what = format!("{} {}", request.method(), request.uri().path());
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let session = request.extensions().get::<Session>().map(|s| s.principal.clone());
    let bearer = request.headers().get(header::AUTHORIZATION).cloned();
    let (mut parts, body) = request.into_parts();
    let Ok(RequestOrigin(origin)) = RequestOrigin::from_request_parts(&mut parts, &()).await;
    let response = next.run(Request::from_parts(parts, body)).await;
    let Some(Refusal(reason)) = response.extensions().get::<Refusal>().cloned() else {
        return response;
    };
    // The caller again: a session's principal came with the request; a token is looked up once more, which
    // costs a query on refusals alone.
    let principal = match (session, bearer) {
        (_, Some(header)) => match auth::bearer(&header) {
            Some(token) => state.tokens.authenticate(token).await.ok().flatten(),
            None => None,
        },
        (session, None) => session,
    };
    if let Some(principal) = principal {
        let change = Change::ok("request.refused", what).with("route", route).outcome(format!("refused: {reason}"));
        state.activity.record(&Actor::of(&principal, origin), change).await;
    }
    response
}

/// Filters of the log; empty fields mean "any". Times are UTC.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Who: a user or token name, `schedule:NAME`, `server` or `cli:USER`, exactly.
    #[param(max_length = 128)]
    actor: Option<String>,
    /// An action (`user.add`) or a kind of actions (`user`).
    #[param(pattern = r"^([a-z_]+(\.[a-z_]+)?)?$")]
    kind: Option<String>,
    /// At or after: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (UTC).
    from: Option<String>,
    /// At or before, in the same forms; a day alone includes the whole day.
    to: Option<String>,
    /// Rows with an id below this one (the next page).
    before: Option<i64>,
    /// At most this many rows (1-1000, default 100; the CSV up to 100000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<i64>,
}

/// One change, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    /// Who: a user or token name, `schedule:NAME`, `server` or `cli:USER`.
    pub actor: String,
    /// How it proved it: `session N`, `token N (name)`; empty for the server's own parts.
    pub credential: String,
    /// The client's address; empty for the server's own parts.
    pub address: String,
    pub user_agent: String,
    /// What was done: `user.add`, `grant.remove`, `login.failed`, …
    pub action: String,
    /// What it was done to: `user alice`, `grant 7 of alice`, …
    pub object: String,
    /// Each changed field: `[before, after]`, or the value given. Secrets are never recorded.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    /// When, ms since the epoch.
    pub at: i64,
    /// `ok`, or why it was refused or failed.
    pub outcome: String,
}

fn entry(row: ActivityRow) -> Entry {
    let e = row.entry;
    Entry {
        id: row.id,
        actor: e.actor,
        credential: e.credential,
        address: e.address,
        user_agent: e.user_agent,
        action: e.action,
        object: e.object,
        changes: serde_json::from_str(&e.changes).unwrap_or(serde_json::Value::Null),
        at: e.at,
        outcome: e.outcome,
    }
}

fn query_of(filter: &Filter, max: i64) -> Result<ActivityQuery, HttpError> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let time = |field: &str, text: &Option<String>, end| match given(text) {
        None => Ok(None),
        Some(text) => calendar::utc_ms(&text, end).map(Some).ok_or_else(|| {
            HttpError::unprocessable(field, "must be a UTC time such as 2026-12-02 or 2026-12-02 10:30")
        }),
    };
    let limit = filter.limit.unwrap_or(100);
    if !(1..=max).contains(&limit) {
        return Err(HttpError::unprocessable("limit", format!("must be between 1 and {max}")));
    }
    if filter.actor.as_ref().is_some_and(|a| a.chars().count() > 128) {
        return Err(HttpError::invalid("actor", "must be at most 128 characters"));
    }
    let actor = given(&filter.actor);
    // As given: the document's pattern has no spaces to trim.
    let kind = filter.kind.clone().filter(|k| !k.is_empty());
    if let Some(kind) = &kind {
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !kind.split('.').all(word) || kind.split('.').count() > 2 {
            return Err(HttpError::invalid("kind", "must be an action such as user.add, or a kind such as user"));
        }
    }
    Ok(ActivityQuery {
        actor,
        kind,
        from_ms: time("from", &filter.from, End::Start)?,
        to_ms: time("to", &filter.to, End::Finish)?,
        before: filter.before,
        limit,
    })
}

/// The log, newest first; every filter narrows. For the next page, pass the last id received as `before`.
#[utoipa::path(get, path = "/api/activity", tag = "activity", params(Filter), responses(
    (status = 200, body = Vec<Entry>),
    (status = 422, description = "a filter is not valid; `field` names it", body = ErrorBody),
))]
async fn list(
    State(state): State<AppState>,
    who: Authenticated,
    filter: Result<Query<Filter>, HttpError>,
) -> Result<Json<Vec<Entry>>, HttpError> {
    who.require(Role::Admin)?;
    let Query(filter) = filter?;
    let rows = state.store.query_activity(&query_of(&filter, MAX_LIMIT)?).await?;
    Ok(Json(rows.into_iter().map(entry).collect()))
}

/// The same rows as CSV (RFC 4180; a cell a spreadsheet would run as a formula starts with `'`), times as UTC text.
#[utoipa::path(get, path = "/api/activity.csv", tag = "activity", params(Filter), responses(
    (status = 200, content_type = "text/csv", body = String),
    (status = 422, description = "a filter is not valid; `field` names it", body = ErrorBody),
))]
async fn csv(
    State(state): State<AppState>,
    who: Authenticated,
    filter: Result<Query<Filter>, HttpError>,
) -> Result<Response, HttpError> {
    who.require(Role::Admin)?;
    let Query(mut filter) = filter?;
    filter.limit = Some(filter.limit.unwrap_or(100_000));
    let rows = state.store.query_activity(&query_of(&filter, 100 * MAX_LIMIT)?).await?;
    let mut out = String::from("id,at,actor,credential,address,user_agent,action,object,changes,outcome\r\n");
    for row in rows {
        let e = row.entry;
        let fields = [
            row.id.to_string(),
            calendar::utc_text(e.at),
            e.actor,
            e.credential,
            e.address,
            e.user_agent,
            e.action,
            e.object,
            e.changes,
            e.outcome,
        ];
        out.push_str(&fields.iter().map(|f| super::audit::csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"activity.csv\""),
        ],
        out,
    )
        .into_response())
}
