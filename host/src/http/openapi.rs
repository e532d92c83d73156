//! `GET /api/openapi.json`: the OpenAPI document of the JSON API, generated from the handlers' attributes and
//! the route table (see `routes.rs`), so it lists exactly what the router serves.
//!
//! It needs a viewer's credentials like every other `/api` route: it holds no secret, but it is the map of the
//! whole attack surface, and everyone who uses the API or the console has at least the viewer role (agents do
//! not need it).

use std::{collections::BTreeMap, sync::OnceLock};

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use utoipa::{
    openapi::{
        link::Link,
        schema::AdditionalProperties,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        Info, OpenApi, RefOr, Schema,
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
    open_flattened(&mut document);
    link_created(&mut document);
    document
}

/// A view that `#[serde(flatten)]`s a request's spec (`ScheduleView` of `ScheduleSpec`) is documented by utoipa as
/// `allOf: [spec, view's own fields]`; the spec refuses unknown fields (`additionalProperties: false`), which
/// would make every answer with the view's own fields invalid. In an `allOf`, such a spec is inlined without that
/// refusal; the spec itself, where requests use it, keeps it.
fn open_flattened(document: &mut OpenApi) {
    let Some(components) = document.components.as_mut() else { return };
    let closed: BTreeMap<String, Schema> = components
        .schemas
        .iter()
        .filter_map(|(name, schema)| match schema {
            RefOr::T(Schema::Object(object))
                if matches!(object.additional_properties.as_deref(), Some(AdditionalProperties::FreeForm(false))) =>
            {
                let mut open = object.clone();
                open.additional_properties = None;
                Some((format!("#/components/schemas/{name}"), Schema::Object(open)))
            }
            _ => None,
        })
        .collect();
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::AllOf(all)) = schema else { continue };
        for item in all.items.iter_mut() {
            if let RefOr::Ref(reference) = item {
                if let Some(open) = closed.get(&reference.ref_location) {
                    *item = RefOr::T(open.clone());
                }
            }
        }
    }
}

/// OpenAPI links from each `POST /api/<things>` to the operations on `/api/<things>/{id}…`, whose `id` is the
/// `id` of the created thing's answer: a client (and schemathesis' stateful phase) can follow a resource from
/// its creation to its reading, change and deletion.
fn link_created(document: &mut OpenApi) {
    let mut consumers: Vec<(String, String)> = Vec::new();
    for (path, item) in &document.paths.paths {
        let operations = [&item.get, &item.put, &item.post, &item.delete];
        for operation in operations.into_iter().flatten() {
            if let Some(id) = &operation.operation_id {
                consumers.push((path.clone(), id.clone()));
            }
        }
    }
    for (path, item) in document.paths.paths.iter_mut() {
        let Some(create) = item.post.as_mut() else { continue };
        let prefix = format!("{path}/{{id}}");
        let links: Vec<&(String, String)> =
            consumers.iter().filter(|(p, _)| *p == prefix || p.starts_with(&format!("{prefix}/"))).collect();
        if links.is_empty() {
            continue;
        }
        for (status, response) in create.responses.responses.iter_mut() {
            let RefOr::T(response) = response else { continue };
            if !status.starts_with('2') {
                continue;
            }
            for (_, operation_id) in &links {
                let link = Link::builder().operation_id(operation_id.clone()).parameter("id", "$response.body#/id");
                response.links.insert(operation_id.clone(), RefOr::T(link.build()));
            }
        }
    }
}
