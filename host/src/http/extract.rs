//! `Path`, `Query` and `JsonBody` as the API's handlers take them: axum's extractors, whose refusals are the API's
//! JSON error body (`{"error", "field"}`, 400) instead of axum's plain text. A path id that does not fit an `i64`
//! (`/api/hosts/9223372036854775808`) or a `limit=abc` is a client's mistake like any other, and a client reads
//! it the same way.

use axum::{
    extract::{
        path::ErrorKind,
        rejection::{PathRejection, QueryRejection},
        FromRequest, FromRequestParts, MatchedPath, Request,
    },
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{error::json_body_error, HttpError};

/// A JSON body read into `T`. A whole number written with a zero fraction (`7.0`) is read as the integer it is:
/// JSON has one kind of number and JSON Schema counts `7.0` as an integer, so a client built from our document may
/// send it, where serde alone refuses it for an integer field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        let axum::Json(value) = axum::Json::<Value>::from_request(request, state).await?;
        read_json(value).map(JsonBody)
    }
}

/// `value` as a `T`; a refusal names the field (`items[0].n`) as axum's `Json` does.
pub fn read_json<T: DeserializeOwned>(mut value: Value) -> Result<T, HttpError> {
    whole_numbers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let detail = if path == "." { err.inner().to_string() } else { format!("{path}: {}", err.inner()) };
        json_body_error(format!("Failed to deserialize the JSON body into the target type: {detail}"))
    })
}

/// Turns every float without a fraction that an integer type can hold into that integer.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) else { return };
            // The casts saturate; the range checks keep only the exact ones.
            if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                *value = Value::from(f as i64);
            } else if f >= 0.0 && f < u64::MAX as f64 {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

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

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Form {
        id: i64,
        size: u64,
        share: f64,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        n: u32,
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let read: Form =
            read_json(json!({"id": -7.0, "size": 1e19, "share": 2.0, "items": [{"n": 3.0}]})).expect("whole numbers");
        assert_eq!(read, Form { id: -7, size: 10_000_000_000_000_000_000, share: 2.0, items: vec![Item { n: 3 }] });
        let refused = read_json::<Form>(json!({"id": 1, "size": 1, "share": 1, "items": [{"n": 2.5}]}));
        match refused {
            Err(HttpError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("items[0].n")),
            other => panic!("{other:?}"),
        }
        match read_json::<Form>(json!({"id": 1, "size": 1, "share": 1, "items": [], "extra": 0})) {
            Err(HttpError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("extra")),
            other => panic!("{other:?}"),
        }
    }
}
