//! `POST /login`, `POST /logout`, `GET /api/session`, and [`guard`]: the one place where cookie-authenticated
//! requests are checked for their origin and their CSRF token.
//!
//! For the console's pages: the login form posts `name` and `password` (form or JSON). A form is answered with
//! `303 See Other` to `return_to` (a local page) or `/`; a failure with `303` to `/login?error=invalid`, or
//! `/login?error=throttled&retry_after=SECONDS`. JSON is answered `200 {"name", "role", "csrf_token"}`, `401`
//! or `429` with `Retry-After` (`503` while the failed-login counts cannot be read). Every state-changing form
//! carries the hidden field `csrf_token` (from `GET /api/session`, or given to the page's template); scripts send
//! the header `X-CSRF-Token`.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use utoipa_axum::routes;

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    body::{is_form, see_other, Submitted, CSRF_FIELD},
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    activity::{Actor, Change, Origin},
    auth::Role,
    users::Session,
};

/// The session cookie's name.
pub const COOKIE: &str = "omserver_session";
/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The login route: the one unsafe route a cookie may reach without a CSRF token (there is no session yet).
pub const LOGIN_PATH: &str = "/login";
/// Form bodies are read whole to find their CSRF field; this bounds what one request makes us hold.
const FORM_LIMIT: usize = 2 * 1024 * 1024;

pub fn router() -> Routes {
    Routes::new()
        .plain(Method::POST, LOGIN_PATH, Access::Public, login)
        .plain(Method::POST, "/logout", Access::Public, logout)
        .api(Access::AtLeast(Role::Agent), routes!(show))
}

/// Who is calling, as `GET /api/session` answers.
#[derive(Serialize, utoipa::ToSchema)]
struct Caller {
    name: String,
    #[schema(value_type = String)]
    role: Role,
    /// `session` or `token`.
    via: &'static str,
    /// For a session: what its state-changing requests must carry (`X-CSRF-Token` or the form field).
    csrf_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    name: String,
    password: String,
}

/// Checks the name and password and opens a session. No role: this is how a person gets one. Cross-site
/// login forms (login CSRF) are refused by [`guard`]'s origin check.
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Submitted<LoginForm>,
) -> Response {
    let previous = session_cookie(&headers);
    let outcome = state.users.login(&form.value.name, &form.value.password, peer.ip(), previous.as_deref()).await;
    // Who tried, from where: the name as typed (a failed login may name nobody).
    let origin = Origin {
        address: peer.ip().to_string(),
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
    };
    let typed: String = form.value.name.trim().chars().take(64).collect();
    let actor = Actor { name: typed.clone(), credential: "password".into(), origin };
    let session = match outcome {
        Ok(session) => {
            state.activity.record(&actor, Change::ok("login", format!("user {}", session.user))).await;
            session
        }
        Err(err) => {
            let err = HttpError::from(err);
            if matches!(err, HttpError::InvalidLogin | HttpError::TooManyAttempts(_)) {
                let change = Change::ok("login.failed", format!("user {typed}")).outcome(format!("refused: {err}"));
                state.activity.record(&actor, change).await;
            }
            if !form.from_form() {
                return err.into_response();
            }
            return match err {
                HttpError::InvalidLogin => see_other("/login?error=invalid"),
                HttpError::TooManyAttempts(wait) => {
                    see_other(&format!("/login?error=throttled&retry_after={}", super::error::retry_after_secs(&wait)))
                }
                other => other.into_response(),
            };
        }
    };
    let body = json!({ "name": session.user, "role": session.role, "csrf_token": session.csrf_token });
    let mut response = form.respond(StatusCode::OK, body, "/");
    set_cookie(&mut response, &format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", session.id), &state);
    response
}

/// Ends the session the cookie names, at once, and clears the cookie. No role: it can only end the caller's own
/// session, and it must work with an expired one too. A live session's CSRF token is required ([`guard`]).
async fn logout(
    State(state): State<AppState>,
    origin: RequestOrigin,
    live: Option<Extension<Session>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    if let Some(id) = session_cookie(&headers) {
        state.users.logout(&id).await?;
    }
    // Only a live session is news: an expired one's cookie is cleared without a record.
    if let Some(Extension(session)) = live {
        let change = Change::ok("logout", format!("user {}", session.principal.name));
        state.activity.record(&origin.actor(&session.principal), change).await;
    }
    let mut response = if is_form(&headers) { see_other("/login") } else { StatusCode::NO_CONTENT.into_response() };
    set_cookie(&mut response, &format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"), &state);
    Ok(response)
}

/// The caller: name and role, and for a session its CSRF token (what the console's scripts send back).
#[utoipa::path(get, path = "/api/session", tag = "session", responses((status = 200, body = Caller)))]
async fn show(who: Authenticated, session: Option<Extension<Session>>) -> Result<Json<Caller>, HttpError> {
    let principal = who.require(Role::Agent)?;
    let csrf_token = session.map(|Extension(s)| s.csrf_token);
    let via = if csrf_token.is_some() { "session" } else { "token" };
    Ok(Json(Caller { name: principal.name.clone(), role: principal.role, via, csrf_token }))
}

fn set_cookie(response: &mut Response, cookie: &str, state: &AppState) {
    let cookie = if state.secure_cookies { format!("{cookie}; Secure") } else { cookie.to_owned() };
    // The id is hex and the rest is ours: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    // A response that sets a session must never be stored by a cache on the way.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// Middleware over every route. A request with an `Authorization` header passes untouched (bearer tokens need no
/// CSRF token: a browser never adds them by itself). A request with a live session cookie gets its session put
/// into the request for [`Authenticated`]; if its method changes state, its `Origin` (when sent) must be this
/// server and it must carry the session's CSRF token, in `X-CSRF-Token` or, for a form, the `csrf_token` field
/// (the body is read and put back). Otherwise: 403. `POST /login` has no session yet: only the origin check.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if request.uri().path() == LOGIN_PATH {
        if changes_state && !same_origin(&request, state.secure_cookies) {
            return HttpError::CrossOrigin.into_response();
        }
        return next.run(request).await;
    }
    if request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let Some(id) = session_cookie(request.headers()) else {
        return next.run(request).await;
    };
    let session = match state.users.authenticate(&id).await {
        Ok(Some(session)) => session,
        // Over or unknown: the route answers as to anyone without credentials.
        Ok(None) => return next.run(request).await,
        Err(err) => return HttpError::from(err).into_response(),
    };
    let mut request = request;
    if changes_state {
        if !same_origin(&request, state.secure_cookies) {
            return HttpError::CrossOrigin.into_response();
        }
        request = match with_csrf_token(request, &session.csrf_token).await {
            Ok(request) => request,
            Err(err) => return err.into_response(),
        };
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The request back if it carries `expected`; reads (and restores) a form body to find the field.
async fn with_csrf_token(request: Request, expected: &str) -> Result<Request, HttpError> {
    let matches = |given: &[u8]| bool::from(given.ct_eq(expected.as_bytes()));
    if let Some(given) = request.headers().get(CSRF_HEADER) {
        return if matches(given.as_bytes()) { Ok(request) } else { Err(HttpError::Csrf) };
    }
    if !is_form(request.headers()) {
        return Err(HttpError::Csrf);
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| HttpError::bad_request(format!("a form body is at most {FORM_LIMIT} bytes")))?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let given = pairs.iter().find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v.as_bytes());
    if !given.is_some_and(matches) {
        return Err(HttpError::Csrf);
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// False when the browser says the request comes from another origin: `Sec-Fetch-Site` other than
/// `same-origin`/`none`, or an `Origin` whose host and port are not the request's own (`null` included). A
/// request with neither header (curl, scripts) is not a browser's cross-site request and passes. With
/// `secure_cookies` the origin must also be `https`.
fn same_origin(request: &Request, secure: bool) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let (Ok(origin), Some(own)) = (origin.to_str(), own) else {
        return false;
    };
    match origin.split_once("://") {
        Some(("https", authority)) => authority.eq_ignore_ascii_case(own),
        Some(("http", authority)) => !secure && authority.eq_ignore_ascii_case(own),
        _ => false,
    }
}
