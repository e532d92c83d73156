//! `GET /api/hosts`, `POST /api/hosts`: the inventory.

use std::net::IpAddr;

use axum::{extract::rejection::JsonRejection, extract::State, http::StatusCode, Json};
use serde::Deserialize;
use utoipa_axum::routes;

use super::{
    auth::Authenticated,
    error::ErrorBody,
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    auth::Role,
    store::{HostRow, NewHost},
};

pub fn router() -> Routes {
    Routes::new().api(Access::AtLeast(Role::Viewer), routes!(list)).api(Access::AtLeast(Role::Admin), routes!(add))
}

/// The inventory, by name.
#[utoipa::path(get, path = "/api/hosts", tag = "inventory", responses((status = 200, body = Vec<HostRow>)))]
async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<HostRow>>, HttpError> {
    who.require(Role::Viewer)?;
    Ok(Json(state.store.list_hosts().await?))
}

/// A host to add to the inventory.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostForm {
    name: String,
    ip: String,
    wan_ip: Option<String>,
    op: Option<String>,
    /// Function category, e.g. "Linux.Web"; goes with `app`.
    function: Option<String>,
    /// App category within `function`, e.g. "nginx".
    app: Option<String>,
    /// SSH port for the ssh and ansible backends (their configured default when absent).
    port: Option<u32>,
    /// Login user for the ssh and ansible backends (their configured default when absent).
    user: Option<String>,
}

/// Adds a host; its categories are created with it when new.
#[utoipa::path(post, path = "/api/hosts", tag = "inventory", request_body = HostForm, responses(
    (status = 201, body = HostRow),
    (status = 400, description = "a field is not valid; `field` names it", body = ErrorBody),
    (status = 409, description = "a host with this name or address exists", body = ErrorBody),
))]
async fn add(
    State(state): State<AppState>,
    who: Authenticated,
    form: Result<Json<HostForm>, JsonRejection>,
) -> Result<(StatusCode, Json<HostRow>), HttpError> {
    who.require(Role::Admin)?;
    let Json(form) = form?;
    let host = validate_host(form)?;
    let row = state.store.add_host(&host).await?;
    state.audit.inventory_changed();
    tracing::info!(host = %row.name, ip = %row.ip, actor = %who.0.name, "host added");
    Ok((StatusCode::CREATED, Json(row)))
}

/// Host names are DNS-like labels (letters, digits, `-`, `_`, `.`), addresses are IPv4 or IPv6.
pub fn validate_host(form: HostForm) -> Result<NewHost, HttpError> {
    let name = form.name.trim();
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(HttpError::invalid("name", "must be 1-255 letters, digits, '-', '_' or '.'"));
    }
    let ip = parse_ip("ip", &form.ip)?;
    let wan_ip = form.wan_ip.as_deref().filter(|s| !s.is_empty()).map(|s| parse_ip("wan_ip", s)).transpose()?;
    let op = form.op.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if op.as_ref().is_some_and(|s| s.len() > 64) {
        return Err(HttpError::invalid("op", "must be at most 64 characters"));
    }
    let category = match (form.function, form.app) {
        (None, None) => None,
        (Some(f), Some(a)) if valid_category(&f) && valid_category(&a) => Some((f, a)),
        (Some(_), Some(_)) => {
            return Err(HttpError::invalid("function", "categories must be 1-64 printable characters"))
        }
        _ => return Err(HttpError::invalid("app", "function and app are given together or not at all")),
    };
    let port = match form.port {
        None => None,
        Some(p) => Some(
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| HttpError::invalid("port", "must be 1-65535"))?,
        ),
    };
    let user = form.user.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if user.as_deref().is_some_and(|u| !valid_user(u)) {
        return Err(HttpError::invalid(
            "user",
            "must be a login name: 1-32 of a-z, 0-9, '_', '.', '-', not starting with '-' or '.'",
        ));
    }
    Ok(NewHost { name: name.to_owned(), ip, wan_ip, op, category, port, user })
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
        .map_err(|_| HttpError::invalid(field, format!("{text:?} is not an IPv4 or IPv6 address")))
}
