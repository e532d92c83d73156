//! `GET /api/openapi.json`: the OpenAPI document of the JSON API, generated from the handlers' attributes and
//! the route table (see `routes.rs`), so it lists exactly what the router serves.
//!
//! It needs a viewer's credentials like every other `/api` route: it holds no secret, but it is the map of the
//! whole attack surface, and everyone who uses the API or the console has at least the viewer role (agents do
//! not need it).

use std::sync::OnceLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use utoipa::{
    openapi::{
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        Info, OpenApi,
    },
    PartialSchema, ToSchema,
};
use utoipa_axum::routes;

use super::{
    auth::Authenticated,
    error::ErrorBody,
    routes::{Access, Routes, BEARER, SESSION},
    session, HttpError,
};
use crate::auth::Role;

pub fn router() -> Routes {
    Routes::new().api(Access::AtLeast(Role::Viewer), routes!(document))
}

/// This document (OpenAPI 3.1). Each operation names its least role in `x-omserver-access`.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses(
    (status = 200, content_type = "application/json", description = "the OpenAPI document of this API"),
))]
async fn document(who: Authenticated) -> Result<Response, HttpError> {
    who.require(Role::Viewer)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], rendered()).into_response())
}

/// The document as JSON, built on first use: it follows from the code alone, so once is enough.
fn rendered() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // The document's maps are keyed by strings, which is all serde_json needs to succeed.
        serde_json::to_string(&super::openapi()).unwrap_or_else(|e| unreachable!("the OpenAPI document: {e}"))
    })
}

/// Completes the operations collected from the route table into the document: title, version, the bearer
/// scheme and the error body that every operation's 401/403 refers to.
pub(super) fn complete(mut document: OpenApi) -> OpenApi {
    let mut info = Info::new("OMServer", env!("CARGO_PKG_VERSION"));
    info.description = Some(
        "Run task modules on many hosts and audit every command. Every operation needs a bearer token \
         (`Authorization: Bearer oms_…`) of at least the role in its `x-omserver-access`; the console's \
         session cookie does as well for the user's own role, and then every request that changes something \
         also carries the session's CSRF token in `X-CSRF-Token`."
            .into(),
    );
    document.info = info;
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("oms_ + 64 hex").build()),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            session::COOKIE,
            "the console's session, set by POST /login; POST, PUT and DELETE also need `X-CSRF-Token`",
        ))),
    );
    components.schemas.insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    document
}
