//! `Path` and `Query` as the API's handlers take them: axum's extractors, whose refusals are the API's JSON error
//! body (`{"error", "field"}`, 400) instead of axum's plain text. A path id that does not fit an `i64`
//! (`/api/hosts/9223372036854775808`) or a `limit=abc` is a client's mistake like any other, and a client reads
//! it the same way.

use axum::{
    extract::{
        path::ErrorKind,
        rejection::{PathRejection, QueryRejection},
        FromRequestParts, MatchedPath,
    },
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use super::HttpError;

/// A path's parameters; refusals are [`HttpError`]s naming the parameter.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                // A lone parameter (`Path<i64>`) is parsed without its name; the route's template has it.
                let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned());
                Err(path_error(rejection, route.as_deref().and_then(only_parameter)))
            }
        }
    }
}

/// A query string's parameters; refusals are [`HttpError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(HttpError))]
pub struct Query<T>(pub T);

/// The error for a path that did not parse; `lone` is the route's only parameter, when it has one.
fn path_error(rejection: PathRejection, lone: Option<&str>) -> HttpError {
    let PathRejection::FailedToDeserializePathParams(err) = &rejection else {
        // The route and its handler disagree about the path's parameters: our mistake, not the client's.
        return HttpError::Internal(rejection.body_text());
    };
    let field = lone.unwrap_or("path");
    match err.kind() {
        ErrorKind::ParseErrorAtKey { key, value, expected_type } => {
            HttpError::invalid(key, format!("{value:?} is not a valid {}", type_name(expected_type)))
        }
        ErrorKind::ParseError { value, expected_type } | ErrorKind::ParseErrorAtIndex { value, expected_type, .. } => {
            HttpError::invalid(field, format!("{value:?} is not a valid {}", type_name(expected_type)))
        }
        ErrorKind::InvalidUtf8InPathParam { key } => HttpError::invalid(key, "is not valid UTF-8"),
        _ => HttpError::invalid(field, err.body_text()),
    }
}

/// `id` for `/api/hosts/{id}`; `None` when the template has no parameter or several.
fn only_parameter(template: &str) -> Option<&str> {
    let mut names = template.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
    let first = names.next()?;
    names.next().is_none().then_some(first)
}

impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> HttpError {
        // "Failed to deserialize query string: limit: invalid digit found in string": the field comes first in
        // serde's message when it is known.
        let text = rejection.body_text();
        let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
        match detail.split_once(": ") {
            Some((field, reason)) if is_name(field) => HttpError::invalid(field, format!("{field}: {reason}")),
            _ => HttpError::bad_request(format!("query string: {detail}")),
        }
    }
}

/// What a Rust type is called in an error message for people.
fn type_name(rust: &str) -> &str {
    match rust {
        "i64" => "whole number from -9223372036854775808 to 9223372036854775807",
        other => other,
    }
}

/// A query parameter's name as our routes spell them.
fn is_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
