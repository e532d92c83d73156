//! The inventory: `GET /api/hosts`, `POST /api/hosts`, `PUT /api/hosts/{id}`, `DELETE /api/hosts/{id}`, and
//! `POST /api/hosts/import` (CSV or Ansible INI, with a preview).

use std::net::IpAddr;

use axum::{extract::State, http::StatusCode, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    error::ErrorBody,
    extract::{JsonBody, Path},
    routes::{Access, Routes},
    AppState, HttpError,
};
pub use crate::inventory::HostForm;
use crate::{
    activity::Change,
    auth::Role,
    inventory::Claimed,
    store::{HostRow, NewHost},
};

pub fn router() -> Routes {
    let admin = Access::AtLeast(Role::Admin);
    Routes::new()
        .api(Access::AtLeast(Role::Viewer), routes!(list))
        .api(admin, routes!(add))
        .api(admin, routes!(update))
        .api(admin, routes!(delete))
        .api(admin, routes!(import))
}

/// The inventory, by name: for a scoped caller, the hosts its grants cover.
#[utoipa::path(get, path = "/api/hosts", tag = "inventory", responses((status = 200, body = Vec<HostRow>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<HostRow>>, HttpError> {
    who.require(Role::Viewer)?;
    let mut hosts = state.store.list_hosts().await?;
    hosts.retain(|h| who.0.scope.sees(h));
    Ok(Json(hosts))
}

/// Adds a host; its categories are created with it when new.
#[utoipa::path(post, path = "/api/hosts", tag = "inventory", request_body = HostForm, responses(
    (status = 201, body = HostRow),
    (status = 422, description = "a field is not valid; `field` names it", body = ErrorBody),
    (status = 409, description = "a host with this name or address exists", body = ErrorBody),
))]
async fn add(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    form: Result<JsonBody<HostForm>, HttpError>,
) -> Result<(StatusCode, Json<HostRow>), HttpError> {
    let actor = who.require(Role::Admin)?;
    let JsonBody(form) = form?;
    let host = validate_host(form)?;
    let row = state.store.add_host(&host).await?;
    state.audit.inventory_changed();
    tracing::info!(host = %row.name, ip = %row.ip, actor = %actor.name, "host added");
    state.activity.record(&origin.actor(actor), Change::ok("host.add", described(&row)).fields(&row)).await;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Replaces a host's fields, categories and tags.
#[utoipa::path(put, path = "/api/hosts/{id}", tag = "inventory", request_body = HostForm,
    params(("id" = i64, Path, description = "host id")), responses(
    (status = 200, body = HostRow),
    (status = 422, description = "a field is not valid; `field` names it", body = ErrorBody),
    (status = 404, description = "no such host", body = ErrorBody),
    (status = 409, description = "another host has this name or address", body = ErrorBody),
))]
async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
    form: Result<JsonBody<HostForm>, HttpError>,
) -> Result<Json<HostRow>, HttpError> {
    let actor = who.require(Role::Admin)?;
    let JsonBody(form) = form?;
    let host = validate_host(form)?;
    let not_found = || HttpError::NotFound(format!("host {id} not found"));
    let before = state.store.host(id).await?.ok_or_else(not_found)?;
    let row = state.store.update_host(id, &host).await?.ok_or_else(not_found)?;
    state.audit.inventory_changed();
    tracing::info!(host = %row.name, ip = %row.ip, actor = %actor.name, "host changed");
    let change = Change::ok("host.update", described(&row)).changed_fields(&before, &row);
    state.activity.record(&origin.actor(actor), change).await;
    Ok(Json(row))
}

/// Removes a host that has no audit history (the trail keeps the hosts its commands came from).
#[utoipa::path(delete, path = "/api/hosts/{id}", tag = "inventory", params(("id" = i64, Path, description = "host id")),
    responses(
    (status = 204, description = "deleted"),
    (status = 404, description = "no such host", body = ErrorBody),
    (status = 409, description = "the host has audit history or agent tokens", body = ErrorBody),
))]
async fn delete(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let actor = who.require(Role::Admin)?;
    let not_found = || HttpError::NotFound(format!("host {id} not found"));
    let before = state.store.host(id).await?.ok_or_else(not_found)?;
    if !state.store.delete_host(id).await? {
        return Err(not_found());
    }
    state.audit.inventory_changed();
    tracing::info!(host_id = id, actor = %actor.name, "host deleted");
    state.activity.record(&origin.actor(actor), Change::ok("host.delete", described(&before)).fields(&before)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// An inventory file to import.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    /// `csv` (a header line naming the columns: name, ip, wan_ip, op, function, app, port, user, tags) or `ini`
    /// (an Ansible INI inventory).
    format: String,
    text: String,
    /// Check every line and say what would happen; store nothing.
    #[serde(default)]
    preview: bool,
}

/// What became of each line that named a host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ImportLine {
    line: usize,
    name: Option<String>,
    ip: Option<String>,
    function: Option<String>,
    app: Option<String>,
    tags: Vec<String>,
    /// Why this line is not (or would not be) imported.
    error: Option<String>,
    imported: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ImportReport {
    lines: Vec<ImportLine>,
    imported: usize,
    failed: usize,
}

/// Imports every good line (each host with its categories in its own transaction) and reports each bad one;
/// with `preview`, only checks.
#[utoipa::path(post, path = "/api/hosts/import", tag = "inventory", request_body = ImportRequest, responses(
    (status = 200, body = ImportReport, description = "one entry per line that names a host"),
    (status = 422, description = "the file cannot be read at all (an unknown format, a bad CSV header)", body = ErrorBody),
))]
async fn import(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    request: Result<JsonBody<ImportRequest>, HttpError>,
) -> Result<Json<ImportReport>, HttpError> {
    let actor = who.require(Role::Admin)?;
    let JsonBody(request) = request?;
    let parsed = match request.format.as_str() {
        "csv" => crate::inventory::parse_csv(&request.text).map_err(|e| HttpError::unprocessable("text", e))?,
        "ini" => crate::inventory::parse_ini(&request.text),
        other => return Err(HttpError::unprocessable("format", format!("{other:?}: csv or ini"))),
    };
    let mut lines = Vec::with_capacity(parsed.len());
    // The preview and the import refuse a host the file named already alike (before the store would).
    let mut claimed = Claimed::default();
    for entry in parsed {
        let mut line = ImportLine {
            line: entry.line,
            name: None,
            ip: None,
            function: None,
            app: None,
            tags: Vec::new(),
            error: None,
            imported: false,
        };
        let form = match entry.host {
            Ok(form) => form,
            Err(reason) => {
                line.error = Some(reason);
                lines.push(line);
                continue;
            }
        };
        (line.name, line.ip, line.function, line.app) =
            (Some(form.name.clone()), Some(form.ip.clone()), form.function.clone(), form.app.clone());
        line.tags = form.tags.clone();
        match validate_host(form) {
            Err(HttpError::Unprocessable { field, reason }) => {
                line.error = Some(field.map_or(reason.clone(), |f| format!("{f}: {reason}")));
            }
            Err(other) => line.error = Some(other.to_string()),
            Ok(host) => match claimed.claim(entry.line, &host.name, &host.ip) {
                Err(reason) => line.error = Some(reason),
                Ok(()) if request.preview => {}
                Ok(()) => match state.store.add_host(&host).await {
                    Ok(_) => line.imported = true,
                    Err(crate::store::StoreError::Conflict(reason)) => line.error = Some(reason),
                    Err(other) => return Err(other.into()),
                },
            },
        }
        lines.push(line);
    }
    let imported = lines.iter().filter(|l| l.imported).count();
    let failed = lines.iter().filter(|l| l.error.is_some()).count();
    if imported > 0 {
        state.audit.inventory_changed();
    }
    tracing::info!(imported, failed, preview = request.preview, actor = %actor.name, "inventory import");
    if !request.preview {
        // One record for the file: the hosts it added by name, and the lines it refused with why.
        let added: Vec<&str> = lines.iter().filter(|l| l.imported).filter_map(|l| l.name.as_deref()).collect();
        let refused: Vec<String> =
            lines.iter().filter_map(|l| l.error.as_ref().map(|e| format!("line {}: {e}", l.line))).collect();
        let change = Change::ok("host.import", format!("{} file", request.format))
            .with("imported", added)
            .with("refused", refused);
        state.activity.record(&origin.actor(actor), change).await;
    }
    Ok(Json(ImportReport { lines, imported, failed }))
}

/// How a host is named in the activity log.
fn described(host: &HostRow) -> String {
    format!("host {} ({})", host.name, host.ip)
}

/// Host names are DNS-like labels (letters, digits, `-`, `_`, `.`), addresses are IPv4 or IPv6.
pub fn validate_host(form: HostForm) -> Result<NewHost, HttpError> {
    let name = form.name.trim();
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(HttpError::unprocessable("name", "must be 1-255 letters, digits, '-', '_' or '.'"));
    }
    let ip = parse_ip("ip", &form.ip)?;
    let wan_ip = form.wan_ip.as_deref().filter(|s| !s.is_empty()).map(|s| parse_ip("wan_ip", s)).transpose()?;
    let op = form.op.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if op.as_ref().is_some_and(|s| s.len() > 64) {
        return Err(HttpError::unprocessable("op", "must be at most 64 characters"));
    }
    let category = match (form.function, form.app) {
        (None, None) => None,
        (Some(f), Some(a)) if valid_category(&f) && valid_category(&a) => Some((f, a)),
        (Some(_), Some(_)) => {
            return Err(HttpError::unprocessable("function", "categories must be 1-64 printable characters"))
        }
        _ => return Err(HttpError::unprocessable("app", "function and app are given together or not at all")),
    };
    let port = match form.port {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| HttpError::unprocessable("port", "must be 1-65535"))?,
        ),
    };
    let user = form.user.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if user.as_deref().is_some_and(|u| !valid_user(u)) {
        return Err(HttpError::unprocessable(
            "user",
            "must be a login name: 1-32 of a-z, 0-9, '_', '.', '-', not starting with '-' or '.'",
        ));
    }
    let mut tags = Vec::new();
    for tag in &form.tags {
        let tag = tag.trim().to_ascii_lowercase();
        if tag.is_empty()
            || tag.len() > 64
            || !tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(HttpError::unprocessable(
                "tags",
                format!("{tag:?}: a tag is 1-64 of letters, digits, '.', '_' or '-'"),
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > 32 {
        return Err(HttpError::unprocessable("tags", "at most 32 tags"));
    }
    Ok(NewHost { name: name.to_owned(), ip, wan_ip, op, category, port, user, tags })
}

/// Login names as `useradd` takes them. The user reaches SSH and Ansible's inventory, so nothing else passes.
fn valid_user(user: &str) -> bool {
    user.len() <= 32
        && user.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && user.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

fn valid_category(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 64 && !s.chars().any(char::is_control)
}

/// The canonical text of an address, so that `::0001` and `::1` are one host.
fn parse_ip(field: &str, text: &str) -> Result<String, HttpError> {
    text.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| HttpError::unprocessable(field, format!("{text:?} is not an IPv4 or IPv6 address")))
}
