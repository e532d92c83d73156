//! Request bodies from the console: JSON from its scripts (`fetch`) or a plain HTML form
//! (`application/x-www-form-urlencoded`), read into the same type.
//!
//! A form also carries `csrf_token` (checked once, in [`super::session::guard`]) and may carry `return_to`, the
//! local page to go back to: both are taken out before the rest is read. A form is answered with
//! `303 See Other` to that page (or the route's default page), JSON with JSON.

use axum::{
    body::Bytes,
    extract::{FromRequest, OptionalFromRequest, Request},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{de::DeserializeOwned, Serialize};

use super::HttpError;

/// The form field that carries the session's CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// The form field naming the page to go back to.
pub const RETURN_FIELD: &str = "return_to";

/// A body read from JSON or from a form.
#[derive(Debug)]
pub struct Submitted<T> {
    pub value: T,
    /// `Some(return_to)` when it came from a form (the field may be absent: `Some(None)`).
    form: Option<Option<String>>,
}

/// True when the request's body is a urlencoded form.
pub fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim())
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Submitted<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        if is_form(request.headers()) {
            let bytes = <Bytes as FromRequest<S>>::from_request(request, state)
                .await
                .map_err(|e| HttpError::bad_request(e.body_text()))?;
            let (value, return_to) = read_form(&bytes)?;
            return Ok(Submitted { value, form: Some(return_to) });
        }
        let super::extract::JsonBody(value) = super::extract::JsonBody::<T>::from_request(request, state).await?;
        Ok(Submitted { value, form: None })
    }
}

/// An optional body: none when the request says no content type (a bare `POST` from a script).
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for Submitted<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, HttpError> {
        if !request.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Submitted<T> as FromRequest<S>>::from_request(request, state).await.map(Some)
    }
}

/// Reads a form into `T`, without the CSRF and return fields; returns the return page too.
pub fn read_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Option<String>), HttpError> {
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(bytes).map_err(|e| HttpError::bad_request(format!("form body: {e}")))?;
    let return_to = pairs.iter().find(|(k, _)| k == RETURN_FIELD).map(|(_, v)| v.clone());
    pairs.retain(|(k, _)| k != CSRF_FIELD && k != RETURN_FIELD);
    // Encoding the remaining pairs again lets serde_urlencoded do the typing (numbers, options) as for any form.
    let rest = serde_urlencoded::to_string(&pairs).map_err(|e| HttpError::Internal(e.to_string()))?;
    let value = serde_urlencoded::from_str(&rest).map_err(|e| form_error(&e.to_string()))?;
    Ok((value, return_to))
}

/// serde words a missing field ``missing field `name` ``: name it as the field, as JSON errors do.
fn form_error(text: &str) -> HttpError {
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    HttpError::BadRequest { field, reason: format!("form body: {text}") }
}

impl<T> Submitted<T> {
    /// True when the body came from an HTML form.
    pub fn from_form(&self) -> bool {
        self.form.is_some()
    }

    /// Answers a form with `303 See Other` to its `return_to` (when it is a local page) or `default_page`; JSON
    /// with `status` and `body`.
    pub fn respond(&self, status: StatusCode, body: impl Serialize, default_page: &str) -> Response {
        match &self.form {
            Some(return_to) => see_other(return_to.as_deref().filter(|p| is_local_page(p)).unwrap_or(default_page)),
            None => (status, Json(body)).into_response(),
        }
    }

    /// The form's `return_to`, when it names a local page.
    pub fn return_to(&self) -> Option<&str> {
        self.form.as_ref()?.as_deref().filter(|p| is_local_page(p))
    }
}

/// `303 See Other` to a local page.
pub fn see_other(page: &str) -> Response {
    let location = HeaderValue::from_str(page).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// A path on this server: `/…`, but not `//host` or `/\host` (which browsers read as another site), no control
/// characters. Anything else could turn a form into an open redirect.
pub fn is_local_page(page: &str) -> bool {
    page.starts_with('/')
        && !page.starts_with("//")
        && !page.starts_with("/\\")
        && page.len() <= 2048
        && !page.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Form {
        name: String,
        port: Option<u16>,
    }

    #[test]
    fn forms_lose_their_csrf_and_return_fields() {
        let (form, back) = read_form::<Form>(b"name=a+b&csrf_token=x&port=22&return_to=%2Fusers").unwrap();
        assert_eq!(form, Form { name: "a b".into(), port: Some(22) });
        assert_eq!(back.as_deref(), Some("/users"));
        match read_form::<Form>(b"port=22") {
            Err(HttpError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("name")),
            other => panic!("{other:?}"),
        }
        assert!(read_form::<Form>(b"name=a&color=red").is_err(), "unknown fields are refused as in JSON");
    }

    #[test]
    fn only_local_pages_are_return_targets() {
        for good in ["/", "/users", "/jobs/5?x=1"] {
            assert!(is_local_page(good), "{good}");
        }
        for bad in ["", "users", "//evil.example", "/\\evil.example", "https://evil.example/", "/a\nb"] {
            assert!(!is_local_page(bad), "{bad:?}");
        }
    }
}
