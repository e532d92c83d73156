//! The credentials extractor: a bearer token, or a console session found by [`super::session::guard`].

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, HeaderValue},
};

use super::{AppState, HttpError};
use crate::{
    auth::{Principal, Role},
    users::Session,
};

/// The authenticated caller. Extracting it rejects the request with 401 unless it carries a live token or a live
/// session cookie. A request with an `Authorization` header is judged by it alone.
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Fails with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<&Principal, HttpError> {
        if self.0.role >= role {
            Ok(&self.0)
        } else {
            Err(HttpError::Forbidden(role.as_str()))
        }
    }
}

/// The token of an `Authorization: Bearer …` header. The scheme name is case-insensitive (RFC 7235 §2.1); the
/// token is not.
pub fn bearer(header: &HeaderValue) -> Option<&str> {
    header
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token.trim())
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return match parts.extensions.get::<Session>() {
                Some(session) => Ok(Authenticated(session.principal.clone())),
                None => Err(HttpError::Unauthorized),
            };
        };
        let token = bearer(header).ok_or(HttpError::Unauthorized)?;
        match state.tokens.authenticate(token).await? {
            Some(principal) => Ok(Authenticated(principal)),
            None => Err(HttpError::Unauthorized),
        }
    }
}
