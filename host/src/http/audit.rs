//! Audit routes: the original agent's GET, the agent batch POST, query, CSV export, live stream, verify, and the
//! alert rules.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, FromRequest, RawQuery, Request, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures_util::{stream, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::{router::UtoipaMethodRouterExt, routes};

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    body::Submitted,
    error::ErrorBody,
    extract::{Path, Query},
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    access::Scope,
    activity::Change,
    audit::{
        alerts::RuleError, chain::Report, AgentAck, AgentBatch, AuditView, Filter, IngestError, RuleRefused,
        RuleRequest,
    },
    auth::Role,
    calendar::End,
    store::{AlertRuleRow, AuditQuery, ScanWindow, StoreError},
};

pub fn router() -> Routes {
    let viewer = Access::AtLeast(Role::Viewer);
    Routes::new()
        .plain(Method::GET, "/omaudit/omaudit_pull/", Access::InventoryPeer, legacy_pull)
        .plain(Method::GET, "/omaudit/omaudit_pull", Access::InventoryPeer, legacy_pull)
        .api(Access::Agent, routes!(agent_batch).layer(DefaultBodyLimit::max(8 * 1024 * 1024)))
        .api(viewer, routes!(list))
        .api(viewer, routes!(csv))
        .api(viewer, routes!(live))
        .api(Access::AtLeast(Role::Admin), routes!(verify))
        .api(viewer, routes!(rules))
        .api(Access::AtLeast(Role::Admin), routes!(add_rule))
        .api(Access::AtLeast(Role::Admin), routes!(delete_rule))
}

/// axum's `Json`, but a good body is parsed with plain `serde_json`: `Json` tracks the path of every value so that
/// an error can name it (`events[3].seq: …`), which cost a third of parsing a batch. Only a body that fails is
/// read again the API's usual way, so its refusals and their messages are those of every other route.
struct QuickJson<T>(T);

impl<S, T> FromRequest<S> for QuickJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        if !is_json(request.headers()) {
            return Ok(QuickJson(Json::<T>::from_request(request, state).await?.0));
        }
        let body =
            Bytes::from_request(request, state).await.map_err(|e| HttpError::unreadable(e.status(), e.body_text()))?;
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(QuickJson(value)),
            // Syntax errors are `Json`'s; a well-formed body goes through the API's own reading (`7.0` is 7).
            Err(_) => match Json::<serde_json::Value>::from_bytes(&body) {
                Ok(Json(value)) => super::extract::read_json(value).map(QuickJson),
                Err(rejection) => Err(rejection.into()),
            },
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed: what `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// The original agent's request. Authenticated by the inventory and the TCP peer address (the original agents
/// cannot send a token); answers exactly `OK` once the row is committed, as they expect.
async fn legacy_pull(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
) -> Response {
    match state.audit.ingest_legacy(query.as_deref().unwrap_or(""), peer.ip()).await {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "OK").into_response(),
        Err(err) => {
            let status = match &err {
                IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
                IngestError::UnknownHost(_) | IngestError::PeerMismatch { .. } => StatusCode::FORBIDDEN,
                IngestError::LegacyOff => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(error = %err, "legacy audit event not stored");
            } else {
                tracing::warn!(peer = %peer, error = %err, "legacy audit event refused");
            }
            (status, [(header::CONTENT_TYPE, "text/plain")], format!("{err}\n")).into_response()
        }
    }
}

/// An agent's batch of events (and gaps) for the host its token is bound to. Each event is checked on its own:
/// the invalid ones are listed in `rejected`, the rest stored; duplicates of stored events are counted, not kept.
#[utoipa::path(post, path = "/api/audit/events", tag = "audit", request_body = AgentBatch, responses(
    (status = 200, body = AgentAck),
    (status = 400, description = "not a batch", body = ErrorBody),
    (status = 422, description = "a gap's range ends before it starts", body = ErrorBody),
    (status = 413, description = "over 8 MiB: send half", body = ErrorBody),
    (status = 503, description = "not stored; send it again later", body = ErrorBody),
))]
async fn agent_batch(
    State(state): State<AppState>,
    who: Authenticated,
    batch: Result<QuickJson<AgentBatch>, HttpError>,
) -> Result<Json<AgentAck>, HttpError> {
    if who.0.role != Role::Agent {
        return Err(HttpError::Forbidden("agent"));
    }
    // A body over the limit stays 413 (`HttpError::TooLarge`): it tells the agent to halve its batch.
    let QuickJson(batch) = batch?;
    Ok(Json(state.audit.ingest_agent(who.0.host_id, batch).await?))
}

impl From<IngestError> for HttpError {
    fn from(err: IngestError) -> HttpError {
        match err {
            IngestError::Invalid(i) => HttpError::invalid(i.field, i.to_string()),
            IngestError::BatchTooLarge(..) => HttpError::invalid("events", err.to_string()),
            IngestError::GapRange(..) => HttpError::unprocessable("gaps", err.to_string()),
            IngestError::NotAnAgent | IngestError::UnknownHost(_) | IngestError::PeerMismatch { .. } => {
                HttpError::Forbidden("agent")
            }
            IngestError::LegacyOff => HttpError::NotFound(err.to_string()),
            IngestError::Unavailable(m) => HttpError::Unavailable(m),
            IngestError::Store(e) => e.into(),
        }
    }
}

/// Filters for query, export and stream. `host` takes names or IPs, comma-separated (`ip` is the same, for the
/// original page's parameter); `app` app category names and `user` user names likewise; `q` is a substring of
/// the command, case ignored. Given both, `host` and `app` narrow together: the named hosts that are in those
/// categories.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Params {
    /// Host names or IPs, comma-separated.
    host: Option<String>,
    /// The same as `host` (the original page's name).
    ip: Option<String>,
    /// App category names, comma-separated: every host in one of them (under any function category).
    app: Option<String>,
    /// User names, comma-separated.
    user: Option<String>,
    /// A substring of the command, case ignored. A term an index can answer (on SQLite three characters or
    /// more) is found by it; another reads a window of the newest events (`[audit] search_scan_rows`, 100 000)
    /// and the answer's `scanned` says which.
    q: Option<String>,
    /// Where events came from, comma-separated: `execve` (execs the kernel audited), `history` (typed lines:
    /// `agent` and `legacy`), `agent`, `legacy`.
    source: Option<String>,
    /// The kernel's audit session id (a history line and the execs of its session share it).
    session: Option<i64>,
    /// The terminal, exactly (`/dev/pts/0`).
    tty: Option<String>,
    /// Received by the server from this time on (UTC): `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS`.
    from: Option<String>,
    /// Received by the server up to this time (UTC), the whole of the day or minute given.
    to: Option<String>,
    /// By the host's own clock, from this time on: a prefix of `YYYY-MM-DD HH:MM:SS`.
    host_from: Option<String>,
    /// By the host's own clock, up to this time: a prefix of `YYYY-MM-DD HH:MM:SS`.
    host_to: Option<String>,
    /// Rows after this id, oldest first (paging forward).
    after: Option<i64>,
    /// Rows before this id, newest first (paging back).
    before: Option<i64>,
    /// At most this many rows (1-1000, default 100; the CSV export up to 100 000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<i64>,
}

/// The stream's filters: those of [`Params`] that choose rows. The stream has no time range, paging or limit (it
/// sends what is stored from now on), so it does not take them: naming one is an unknown field, not ignored.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamParams {
    /// Host names or IPs, comma-separated.
    host: Option<String>,
    /// The same as `host` (the original page's name).
    ip: Option<String>,
    /// App category names, comma-separated: every host in one of them (under any function category).
    app: Option<String>,
    /// User names, comma-separated.
    user: Option<String>,
    /// A substring of the command, case ignored.
    q: Option<String>,
    /// Where events came from, comma-separated: `execve`, `history` (`agent` and `legacy`), `agent`, `legacy`.
    source: Option<String>,
    /// The kernel's audit session id.
    session: Option<i64>,
    /// The terminal, exactly (`/dev/pts/0`).
    tty: Option<String>,
}

impl Params {
    /// The part that chooses rows, as the stream takes it.
    fn filters(&self) -> StreamParams {
        StreamParams {
            host: self.host.clone(),
            ip: self.ip.clone(),
            app: self.app.clone(),
            user: self.user.clone(),
            q: self.q.clone(),
            source: self.source.clone(),
            session: self.session,
            tty: self.tty.clone(),
        }
    }
}

/// A page of audit events.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct AuditPage {
    events: Vec<AuditView>,
    /// Continues the listing (as `before`, or `after` when paging forward); null at the end.
    next: Option<i64>,
    /// When no index could answer `q`: the ids read. Rows outside them were not searched; `next` goes on from
    /// where the read stopped. Null when an index answered, or without `q`.
    scanned: Option<ScanWindow>,
}

fn list_of(text: &Option<String>) -> Vec<String> {
    text.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A bound on the time received: a UTC date, minute or second, as Unix ms (its first or last millisecond).
fn received_bound(field: &str, value: &Option<String>, end: End) -> Result<Option<i64>, HttpError> {
    let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else { return Ok(None) };
    match crate::calendar::utc_ms(v, end) {
        Some(ms) => Ok(Some(ms)),
        None => Err(HttpError::unprocessable(field, "must be a UTC time like 2026-11-24 or 2026-11-24 18:30")),
    }
}

/// A bound on the host's time: a prefix of "YYYY-MM-DD HH:MM:SS".
fn host_time_bound(field: &str, value: &Option<String>) -> Result<Option<String>, HttpError> {
    let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else { return Ok(None) };
    let template = b"0000-00-00 00:00:00";
    let shaped = v.len() <= 19
        && v.bytes().zip(template).all(|(c, t)| {
            if *t == b'0' {
                c.is_ascii_digit()
            } else {
                c == *t || (*t == b' ' && c == b'T')
            }
        });
    if !shaped {
        return Err(HttpError::unprocessable(field, "must look like 2026-11-24 or 2026-11-24 18:30:00"));
    }
    Ok(Some(v.replace('T', " ")))
}

/// The filters a request names, narrowed to the hosts the caller's grants let it see.
async fn filter_of(state: &AppState, p: &StreamParams, scope: &Scope) -> Result<Filter, HttpError> {
    let mut keys = list_of(&p.host);
    keys.extend(list_of(&p.ip));
    let named = if keys.is_empty() {
        None
    } else {
        Some(resolved("host", "unknown hosts:", state.audit.resolve_hosts(&keys).await)?)
    };
    let apps = list_of(&p.app);
    let in_apps = if apps.is_empty() {
        None
    } else {
        Some(resolved("app", "no host is in app category", state.audit.hosts_in_apps(&apps).await)?)
    };
    let mut host_ids: Option<Vec<i64>> = match (named, in_apps) {
        (Some(named), Some(in_apps)) => Some(named.into_iter().filter(|id| in_apps.contains(id)).collect()),
        (named, in_apps) => named.or(in_apps),
    };
    if let Some(visible) = state.access.visible_hosts(scope).await? {
        // A host the caller does not see has no events for it: named, it matches nothing.
        host_ids = Some(match host_ids {
            Some(ids) => ids.into_iter().filter(|id| visible.binary_search(id).is_ok()).collect(),
            // In order: the same statement and the same binds each time, for the database's caches and ours.
            None => visible.to_vec(),
        });
    }
    let mut sources = Vec::new();
    for source in list_of(&p.source) {
        match source.as_str() {
            "history" => sources.extend(["agent".to_owned(), "legacy".to_owned()]),
            "execve" | "agent" | "legacy" => sources.push(source),
            _ => return Err(HttpError::unprocessable("source", "must be execve, history, agent or legacy")),
        }
    }
    Ok(Filter {
        host_ids,
        users: list_of(&p.user),
        text: p.q.clone().filter(|q| !q.is_empty()),
        sources,
        session: p.session,
        tty: p.tty.clone().filter(|t| !t.is_empty()),
    })
}

/// Host ids from a lookup, or a 400 on `field` that says `unknown` and lists the names nothing matched.
fn resolved(
    field: &'static str,
    unknown: &str,
    found: Result<Vec<i64>, Result<Vec<String>, StoreError>>,
) -> Result<Vec<i64>, HttpError> {
    match found {
        Ok(ids) => Ok(ids),
        Err(Ok(names)) => Err(HttpError::unprocessable(field, format!("{unknown} {}", names.join(", ")))),
        Err(Err(e)) => Err(e.into()),
    }
}

async fn query_of(state: &AppState, p: &Params, max: i64, scope: &Scope) -> Result<AuditQuery, HttpError> {
    let filter = filter_of(state, &p.filters(), scope).await?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=max).contains(&limit) {
        return Err(HttpError::unprocessable("limit", format!("must be between 1 and {max}")));
    }
    Ok(AuditQuery {
        host_ids: filter.host_ids,
        users: filter.users,
        sources: filter.sources,
        session: filter.session,
        tty: filter.tty,
        text: filter.text,
        received_from: received_bound("from", &p.from, End::Start)?,
        received_to: received_bound("to", &p.to, End::Finish)?,
        host_from: host_time_bound("host_from", &p.host_from)?,
        host_to: host_time_bound("host_to", &p.host_to)?,
        after: p.after,
        before: p.before,
        limit,
        scan_rows: None,
    })
}

/// `{"events": [...], "next": id}`: newest first, or oldest first after `after`. `next` continues the listing
/// (as `before` or `after`), absent at the end.
#[utoipa::path(get, path = "/api/audit/events", tag = "audit", params(Params), responses(
    (status = 200, body = AuditPage),
    (status = 422, description = "a filter is not valid; `field` names it", body = ErrorBody),
))]
async fn list(
    State(state): State<AppState>,
    who: Authenticated,
    query: Result<Query<Params>, HttpError>,
) -> Result<Json<AuditPage>, HttpError> {
    who.require(Role::Viewer)?;
    let Query(p) = query?;
    let q = query_of(&state, &p, 1000, &who.0.scope).await?;
    let found = state.audit.search(&q).await?;
    let events = state.audit.views(&found.rows).await;
    Ok(Json(AuditPage { events, next: found.next, scanned: found.scanned }))
}

/// The same rows as CSV (RFC 4180; cells a spreadsheet would run as a formula start with `'`), the time received
/// as UTC text (`2026-12-02 10:30:05 UTC`) and the matched alert rules' names `;`-separated. When `q` was too
/// short for the index, the `Audit-Scanned` header says which ids were read (`first_id-last_id`).
#[utoipa::path(get, path = "/api/audit/events.csv", tag = "audit", params(Params), responses(
    (status = 200, content_type = "text/csv", body = String, headers(
        ("Audit-Scanned" = String, description = "`FIRST-LAST`: the ids a short `q` read, when it read a window")
    )),
    (status = 422, description = "a filter is not valid; `field` names it", body = ErrorBody),
))]
async fn csv(
    State(state): State<AppState>,
    who: Authenticated,
    query: Result<Query<Params>, HttpError>,
) -> Result<Response, HttpError> {
    who.require(Role::Viewer)?;
    let Query(mut p) = query?;
    p.limit = Some(p.limit.unwrap_or(100_000));
    let q = query_of(&state, &p, 100_000, &who.0.scope).await?;
    let found = state.audit.search(&q).await?;
    let events = state.audit.views(&found.rows).await;
    // `received_at` in the console's UTC text; `alerts`: the names of the rules the event matched, `;`-separated.
    let mut out =
        String::from("id,host,ip,history_id,user,login_user,tty,datetime,received_at,source,command,alerts\r\n");
    for e in &events {
        let fields = [
            e.id.to_string(),
            e.host.clone(),
            e.ip.clone(),
            e.history_id.to_string(),
            e.user.clone(),
            e.login_user.clone().unwrap_or_default(),
            e.tty.clone().unwrap_or_default(),
            e.datetime.clone(),
            crate::calendar::utc_text(e.received_at),
            e.source.clone(),
            e.command.clone(),
            e.alerts.join(";"),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"audit.csv\""),
        ],
        out,
    )
        .into_response();
    if let Some(w) = found.scanned {
        let range = format!("{}-{}", w.first_id, w.last_id);
        if let Ok(value) = header::HeaderValue::from_str(&range) {
            response.headers_mut().insert("audit-scanned", value);
        }
    }
    Ok(response)
}

/// RFC 4180 quoting, plus a leading `'` on cells a spreadsheet would run as a formula (commands are
/// attacker-controlled text: `=HYPERLINK(...)` must stay text).
pub(super) fn csv_field(value: &str) -> String {
    let guarded =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}") } else { value.to_owned() };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// Server-sent events: each stored row that matches the filters, as `event: audit` with the row id as the event
/// id, as soon as it is committed.
#[utoipa::path(get, path = "/api/audit/stream", tag = "audit", params(StreamParams), responses(
    (status = 200, content_type = "text/event-stream",
     description = "`event: audit` with an AuditView per row; `event: lagged` with the number of rows missed"),
    (status = 422, description = "a filter is not valid; `field` names it", body = ErrorBody),
))]
async fn live(
    State(state): State<AppState>,
    who: Authenticated,
    query: Result<Query<StreamParams>, HttpError>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    who.require(Role::Viewer)?;
    let Query(p) = query?;
    let filter = filter_of(&state, &p, &who.0.scope).await?;
    let rx = state.audit.subscribe();
    let audit = state.audit.clone();
    let events = stream::unfold((rx, filter, audit), |(mut rx, filter, audit)| async move {
        loop {
            match rx.recv().await {
                Ok(row) if filter.matches(&row) => {
                    let view: AuditView = audit.view(&row).await;
                    let data = serde_json::to_string(&view).unwrap_or_default();
                    let event = Event::default().event("audit").id(row.id.to_string()).data(data);
                    return Some((Ok(event), (rx, filter, audit)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    // Too slow a reader: say so, so that it can fill the hole from GET /api/audit/events.
                    let event = Event::default().event("lagged").data(missed.to_string());
                    return Some((Ok(event), (rx, filter, audit)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events.boxed()).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Walks every host's chain and reports what does not hold (deleted, changed or reordered rows).
#[utoipa::path(get, path = "/api/audit/verify", tag = "audit", responses((status = 200, body = Report)))]
async fn verify(State(state): State<AppState>, who: Authenticated) -> Result<Json<Report>, HttpError> {
    who.require(Role::Admin)?;
    let mut report = state.audit.verify().await?;
    report.activity = Some(state.activity.verify().await?);
    Ok(Json(report))
}

/// The alert rules (any viewer may see what is watched for).
#[utoipa::path(get, path = "/api/audit/rules", tag = "audit", responses((status = 200, body = Vec<AlertRuleRow>)))]
async fn rules(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<AlertRuleRow>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.audit.alert_rules().await?))
}

/// Adds an alert rule; it applies to events stored from now on.
#[utoipa::path(post, path = "/api/audit/rules", tag = "audit", request_body = RuleRequest, responses(
    (status = 201, description = "`{\"id\"}`; a form gets 303"),
    (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
    (status = 409, description = "the name is taken", body = ErrorBody),
))]
async fn add_rule(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    body: Result<Submitted<RuleRequest>, HttpError>,
) -> Result<Response, HttpError> {
    // Who first: a caller without the role learns nothing from how its body is judged.
    let admin = who.require(Role::Admin)?;
    let body = body?;
    let name = body.value.name.clone();
    let id = state.audit.add_alert_rule(body.value.clone(), &admin.name).await.map_err(|err| match err {
        RuleRefused::Invalid(RuleError::Name) => HttpError::unprocessable("name", err.to_string()),
        RuleRefused::Invalid(RuleError::Pattern(_)) => HttpError::unprocessable("pattern", err.to_string()),
        RuleRefused::UnknownHost(_) => HttpError::unprocessable("host", err.to_string()),
        RuleRefused::Store(err) => err.into(),
    })?;
    tracing::info!(rule = %name, actor = %admin.name, "audit alert rule added");
    let change = Change::ok("alert_rule.add", format!("alert rule {id} ({name})")).fields(&body.value);
    state.activity.record(&origin.actor(admin), change).await;
    Ok(body.respond(StatusCode::CREATED, json!({ "id": id }), "/audit"))
}

#[utoipa::path(delete, path = "/api/audit/rules/{id}", tag = "audit",
    params(("id" = i64, Path, description = "rule id")), responses(
    (status = 204, description = "deleted"),
    (status = 404, description = "no such rule", body = ErrorBody),
))]
async fn delete_rule(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let admin = who.require(Role::Admin)?;
    let before = state.audit.alert_rules().await?.into_iter().find(|r| r.id == id);
    if !state.audit.delete_alert_rule(id).await? {
        return Err(HttpError::NotFound(format!("alert rule {id} not found")));
    }
    tracing::info!(rule_id = id, actor = %admin.name, "audit alert rule deleted");
    let name = before.as_ref().map(|r| r.name.as_str()).unwrap_or_default();
    let change = Change::ok("alert_rule.delete", format!("alert rule {id} ({name})")).fields(&before);
    state.activity.record(&origin.actor(admin), change).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("ls -l"), "ls -l");
        assert_eq!(csv_field("echo \"a,b\""), "\"echo \"\"a,b\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-rf"), "'-rf");
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
    }

    #[test]
    fn json_content_types_are_those_json_accepts() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        for yes in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"]
        {
            assert!(with(yes), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "json", "application/x-www-form-urlencoded", ""] {
            assert!(!with(no), "{no}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
