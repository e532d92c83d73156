//! The route table: every route the server serves, each with the rule for who may call it. Each resource
//! (`http/<resource>.rs`) returns its [`Routes`] from `router()`; `http/mod.rs` merges them and builds the axum
//! router and the OpenAPI document from the result, so a route cannot be served without a rule, and the
//! authorisation test (`tests/authz.rs`) walks this table to check every rule against the running server.
//!
//! A JSON API route is added with [`Routes::api`] and `utoipa_axum::routes!(handler)`: its method and path come
//! from the handler's `#[utoipa::path]` attribute, the one place they are written, so the document cannot
//! disagree with the router. Always one handler per `routes!`: two handlers of different paths in one call are
//! registered at both paths (utoipa-axum's known trap). Routes outside the JSON API (`/healthz`, `/metrics`, the
//! original agent's GET) are added with [`Routes::plain`] and are not in the document.

use axum::{
    handler::Handler,
    http::{Method, StatusCode},
    routing::{on, MethodFilter},
    Router,
};
use utoipa::openapi::{
    extensions::Extensions,
    path::{Operation, PathItem},
    security::SecurityRequirement,
    Content, OpenApi, Ref, RefOr, Response,
};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::AppState;
use crate::auth::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials: what a load balancer needs (`/healthz`), the login form, and the console's
    /// static files (`/assets/…`, `/favicon.ico`), which hold no secret.
    Public,
    /// The original audit agent, which cannot send a token: the TCP peer must be an inventory host's address.
    InventoryPeer,
    /// An agent token and nothing else (it speaks for its one host; a person's token is refused).
    Agent,
    /// Credentials of this role or a higher one.
    AtLeast(Role),
    /// A console page: like `AtLeast`, but a caller without credentials is sent to the login page (303).
    Page(Role),
}

impl Access {
    /// How the authorisation test and the document name the rule: `public`, `inventory-peer`, `agent`, or the
    /// least role.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::InventoryPeer => "inventory-peer",
            Access::Agent => "agent",
            Access::AtLeast(role) => role.as_str(),
            Access::Page(role) => role.as_str(),
        }
    }

    /// Whether a caller with `role` (`None`: no credentials) passes this rule; the peer-address rule is judged
    /// by the address, not the credentials, so it passes here.
    pub fn admits(self, role: Option<Role>) -> bool {
        match self {
            Access::Public | Access::InventoryPeer => true,
            Access::Agent => role == Some(Role::Agent),
            Access::AtLeast(least) | Access::Page(least) => role.is_some_and(|r| r >= least),
        }
    }

    fn needs_credentials(self) -> bool {
        matches!(self, Access::Agent | Access::AtLeast(_) | Access::Page(_))
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub method: Method,
    /// axum's path template, e.g. `/api/jobs/{id}` (the same syntax as OpenAPI's).
    pub path: String,
    pub access: Access,
    /// Listed in the OpenAPI document.
    pub documented: bool,
}

/// A set of routes with their rules, and the OpenAPI operations of the documented ones.
pub struct Routes {
    router: OpenApiRouter<AppState>,
    rules: Vec<RouteRule>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes { router: OpenApiRouter::new(), rules: Vec::new() }
    }

    /// A JSON API route: `routes!(handler)`, one handler whose `#[utoipa::path]` gives method and path.
    /// The document gets the rule (`x-omserver-access`), the bearer requirement and the 401/403 answers.
    ///
    /// Panics when `route` holds more than one path or method: that is a programming error, and every test that
    /// starts a server finds it first.
    pub fn api(mut self, access: Access, route: UtoipaMethodRouter<AppState>) -> Routes {
        let (schemas, mut paths, method_router) = route;
        assert!(paths.paths.len() == 1, "one handler per routes!(…): got paths {:?}", paths.paths.keys());
        for (path, item) in paths.paths.iter_mut() {
            let operations = operations_mut(item);
            assert!(operations.len() == 1, "{path}: one method per handler, got {}", operations.len());
            for (method, operation) in operations {
                document(operation, access);
                self.rules.push(RouteRule { method, path: path.clone(), access, documented: true });
            }
        }
        self.router = self.router.routes((schemas, paths, method_router));
        self
    }

    /// A route outside the JSON API, not in the document.
    pub fn plain<H, T>(mut self, method: Method, path: &str, access: Access, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} {path}: axum cannot route this method"));
        self.router = self.router.route(path, on(filter, handler));
        self.rules.push(RouteRule { method, path: path.to_owned(), access, documented: false });
        self
    }

    /// These routes and `other`'s.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.rules.extend(other.rules);
        self
    }

    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    /// The axum router, the OpenAPI operations (paths and schemas; `http/openapi.rs` completes the document),
    /// and the table.
    pub fn split(self) -> (Router<AppState>, OpenApi, Vec<RouteRule>) {
        let (router, document) = self.router.split_for_parts();
        (router, document, self.rules)
    }
}

/// The operations of a path item with their methods. `additional_operations` stays empty: `#[utoipa::path]`
/// takes only the standard methods.
fn operations_mut(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
    .collect()
}

/// The names of the security schemes in the document's components: a bearer token, or the console's session.
pub const BEARER: &str = "bearer";
pub const SESSION: &str = "session";

/// Completes an operation: an id unique in the document (the handler's name is unique only in its file, so the
/// tag goes first), a description on every response (OpenAPI requires one), the rule, so that a client reads
/// the least role beside each operation, and the error answers every such operation can give (400 for a
/// parameter, 401 and 403).
fn document(operation: &mut Operation, access: Access) {
    if let (Some(tag), Some(id)) = (operation.tags.as_ref().and_then(|t| t.first()), operation.operation_id.as_mut()) {
        *id = format!("{tag}_{id}");
    }
    for (code, response) in operation.responses.responses.iter_mut() {
        if let RefOr::T(response) = response {
            if response.description.is_empty() {
                let reason = code.parse::<StatusCode>().ok().and_then(|s| s.canonical_reason());
                response.description = reason.unwrap_or("the answer").to_owned();
            }
        }
    }
    operation
        .extensions
        .get_or_insert_with(Extensions::default)
        .insert("x-omserver-access".into(), access.as_str().into());
    let error = |description: &str| {
        Response::builder()
            .description(description)
            .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
            .build()
    };
    // The two refusals of what a request carries (`error.rs`, `extract.rs`): 400 when it cannot be read as this
    // document describes it (a parameter that does not parse included), 422 when it is read but cannot be done as
    // it stands. Agents' batches are refused only with 400.
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_parameters || operation.request_body.is_some() {
        let responses = &mut operation.responses.responses;
        responses
            .entry("400".into())
            .or_insert_with(|| error("the request is not what this document describes; `field` names the part").into());
        if matches!(access, Access::AtLeast(_) | Access::Page(_)) {
            responses.entry("422".into()).or_insert_with(|| {
                error(
                    "the request is well formed but cannot be done as it stands: it names something that does \
                     not exist, or its values do not hold together; `field` names the part",
                )
                .into()
            });
        }
    }
    if !access.needs_credentials() {
        return;
    }
    let mut schemes = vec![SecurityRequirement::new(BEARER, Vec::<String>::new())];
    if matches!(access, Access::AtLeast(_)) {
        // Either one: the console's scripts call these operations with the session cookie.
        schemes.push(SecurityRequirement::new(SESSION, Vec::<String>::new()));
    }
    operation.security = Some(schemes);
    let responses = &mut operation.responses.responses;
    responses.entry("401".into()).or_insert_with(|| error("no credentials, or they are not valid").into());
    let forbidden = format!("the caller's role is below `{}`", access.as_str());
    responses.entry("403".into()).or_insert_with(|| error(&forbidden).into());
}
