//! One error type for every handler, mapped to a status code and a JSON body `{"error": …, "field": …}`.
//! Internal failures are logged with their cause and answered with a generic message.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::{
    access::AccessError,
    approvals::ApprovalError,
    auth::TokenError,
    jobs::{FilterError, JobError},
    schedules::ScheduleError,
    store::StoreError,
    templates::TemplateError,
    users::{LoginError, PasswordError, UserError},
};

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// The request field it is about (`items[0].n` for nested ones), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    /// The caller's role would do, but its grants do not reach what the request names (`field`: which part).
    #[error("{reason}")]
    OutsideGrants { field: &'static str, reason: String },
    /// A cookie-authenticated request that changes state without its session's CSRF token.
    #[error("missing or invalid CSRF token")]
    Csrf,
    /// A state-changing request sent from a page of another origin.
    #[error("cross-origin request refused")]
    CrossOrigin,
    /// Refused for what it asks, whoever asks (e.g. a token with more rights than its user).
    #[error("{0}")]
    Refused(String),
    #[error("invalid user name or password")]
    InvalidLogin,
    /// Too many failed logins: retry after this long.
    #[error("too many failed logins; try again in {} s", retry_after_secs(.0))]
    TooManyAttempts(std::time::Duration),
    #[error("{0}")]
    NotFound(String),
    /// The request is not what the API document describes and cannot be read: malformed, a wrong type, an unknown
    /// field or parameter, a value outside an enum.
    #[error("{reason}")]
    BadRequest { field: Option<String>, reason: String },
    /// The request is what the document describes, but cannot be done as it stands: it names something that does
    /// not exist (a module, host, saved job, channel), or its values do not hold together (a module's own
    /// parameters, a cron expression, fields that go together).
    #[error("{reason}")]
    Unprocessable { field: Option<String>, reason: String },
    #[error("{0}")]
    Conflict(String),
    /// A body over the route's limit (an agent halves its batch on it; a 400 would leave it stuck).
    #[error("{0}")]
    TooLarge(String),
    /// A known path asked with a method it does not take.
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl HttpError {
    pub fn bad_request(reason: impl Into<String>) -> HttpError {
        HttpError::BadRequest { field: None, reason: reason.into() }
    }

    pub fn invalid(field: &str, reason: impl Into<String>) -> HttpError {
        HttpError::BadRequest { field: Some(field.to_owned()), reason: reason.into() }
    }

    /// A body axum could not read, with the status it gave: 413 stays 413, the rest is the client's mistake.
    pub fn unreadable(status: StatusCode, text: String) -> HttpError {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => HttpError::TooLarge(text),
            _ => json_body_error(text),
        }
    }

    pub fn unprocessable(field: &str, reason: impl Into<String>) -> HttpError {
        HttpError::Unprocessable { field: Some(field.to_owned()), reason: reason.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_)
            | HttpError::OutsideGrants { .. }
            | HttpError::Csrf
            | HttpError::CrossOrigin
            | HttpError::Refused(_) => StatusCode::FORBIDDEN,
            HttpError::InvalidLogin => StatusCode::UNAUTHORIZED,
            HttpError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            HttpError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if let HttpError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let body = match &self {
            HttpError::BadRequest { field, reason } | HttpError::Unprocessable { field, reason } => {
                ErrorBody { error: reason.clone(), field: field.clone() }
            }
            HttpError::OutsideGrants { field, reason } => {
                ErrorBody { error: reason.clone(), field: Some((*field).to_owned()) }
            }
            other => ErrorBody { error: other.to_string(), field: None },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let HttpError::Forbidden(_) | HttpError::OutsideGrants { .. } | HttpError::Refused(_) = &self {
            response.extensions_mut().insert(Refusal(self.to_string()));
        }
        match &self {
            HttpError::Unauthorized => {
                response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
            }
            HttpError::TooManyAttempts(wait) => {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs(wait).into());
            }
            _ => {}
        }
        response
    }
}

/// On a response: an authenticated caller was refused, and why ([`super::activity::record_refusals`] records it).
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// Whole seconds to wait, rounded up, at least 1 (`Retry-After` takes whole seconds).
pub fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}

impl From<UserError> for HttpError {
    fn from(err: UserError) -> HttpError {
        match err {
            UserError::InvalidName(_) => HttpError::unprocessable("name", err.to_string()),
            UserError::Password(PasswordError::Hashing(cause)) => HttpError::Internal(cause),
            UserError::Password(_) => HttpError::unprocessable("password", err.to_string()),
            UserError::InvalidRole(_) => HttpError::unprocessable("role", err.to_string()),
            UserError::NotFound(_) => HttpError::NotFound(err.to_string()),
            UserError::LastAdmin(_) => HttpError::Conflict(err.to_string()),
            UserError::Store(e) => e.into(),
        }
    }
}

impl From<LoginError> for HttpError {
    fn from(err: LoginError) -> HttpError {
        match err {
            LoginError::Invalid => HttpError::InvalidLogin,
            LoginError::Throttled(wait) => HttpError::TooManyAttempts(wait),
            // Logged where it happened (`Users::login`).
            LoginError::ThrottleUnavailable(_) => HttpError::Unavailable(err.to_string()),
            LoginError::Password(e) => HttpError::Internal(e.to_string()),
            LoginError::Store(e) => e.into(),
        }
    }
}

impl From<TokenError> for HttpError {
    fn from(err: TokenError) -> HttpError {
        match err {
            TokenError::ExceedsUser(_) => HttpError::Refused(err.to_string()),
            TokenError::NotFound(_) => HttpError::NotFound(err.to_string()),
            TokenError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> HttpError {
        match err {
            StoreError::Conflict(message) => HttpError::Conflict(message),
            // The database is down or unreachable: a retry later will do, and clients (agents) must know that.
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed,
            ) => {
                tracing::warn!(error = %err, "database unavailable");
                HttpError::Unavailable("the database is unavailable; try again later".into())
            }
            // A write that waited out the busy timeout: nothing was done, and the same request will do.
            busy if busy.is_busy() => {
                tracing::warn!(error = %busy, "database busy");
                HttpError::Unavailable("the database is busy; try again in a moment".into())
            }
            other => HttpError::Internal(other.to_string()),
        }
    }
}

impl From<ApprovalError> for HttpError {
    fn from(err: ApprovalError) -> HttpError {
        match err {
            ApprovalError::Selector(e) => e.into(),
            ApprovalError::Unprocessable { field, .. } => HttpError::unprocessable(field, err.to_string()),
            ApprovalError::PolicyNotFound(_) | ApprovalError::JobNotFound(_) => HttpError::NotFound(err.to_string()),
            ApprovalError::NotPending { .. } => HttpError::Conflict(err.to_string()),
            ApprovalError::OwnJob(_) => HttpError::Refused(err.to_string()),
            ApprovalError::OutsideGrants(_) => HttpError::OutsideGrants { field: "hosts", reason: err.to_string() },
            ApprovalError::Job(e) => e.into(),
            ApprovalError::Store(e) => e.into(),
        }
    }
}

impl From<JobError> for HttpError {
    fn from(err: JobError) -> HttpError {
        match err {
            JobError::InvalidParam(p) => HttpError::unprocessable(&p.field, p.to_string()),
            JobError::UnknownHosts(_) => HttpError::unprocessable("hosts", err.to_string()),
            JobError::OutsideGrants(_) => HttpError::OutsideGrants { field: "hosts", reason: err.to_string() },
            JobError::NoHosts => HttpError::unprocessable("hosts", err.to_string()),
            JobError::Backend(_) => HttpError::unprocessable("backend", err.to_string()),
            JobError::UnknownModule(_) | JobError::UnsupportedBackend { .. } => {
                HttpError::unprocessable("module", err.to_string())
            }
            JobError::Rollout(ref r) => HttpError::unprocessable(r.field, r.to_string()),
            JobError::NotFound(_) => HttpError::NotFound(err.to_string()),
            JobError::NotFinished(_) | JobError::NothingToRerun(_) => HttpError::Conflict(err.to_string()),
            JobError::Store(e) => e.into(),
        }
    }
}

impl From<AccessError> for HttpError {
    fn from(err: AccessError) -> HttpError {
        match err {
            AccessError::Invalid { field, .. } => HttpError::invalid(field, err.to_string()),
            AccessError::Unprocessable { field, .. } => HttpError::unprocessable(field, err.to_string()),
            AccessError::UnknownUser(_) | AccessError::NotFound(_) => HttpError::NotFound(err.to_string()),
            AccessError::Store(e) => e.into(),
        }
    }
}

impl From<TemplateError> for HttpError {
    fn from(err: TemplateError) -> HttpError {
        match err {
            TemplateError::Invalid { field, reason } => {
                HttpError::Unprocessable { reason: format!("{field}: {reason}"), field: Some(field) }
            }
            TemplateError::NotFound(_) => HttpError::NotFound(err.to_string()),
            TemplateError::NoHostMatches => HttpError::unprocessable("targets", err.to_string()),
            TemplateError::Damaged(cause) => HttpError::Internal(cause),
            TemplateError::Job(e) => e.into(),
            TemplateError::Store(e) => e.into(),
        }
    }
}

impl From<ScheduleError> for HttpError {
    fn from(err: ScheduleError) -> HttpError {
        match err {
            ScheduleError::Invalid { field, ref reason } => {
                HttpError::Unprocessable { reason: format!("{field}: {reason}"), field: Some(field.to_owned()) }
            }
            ScheduleError::NotFound(_) => HttpError::NotFound(err.to_string()),
            ScheduleError::Damaged(cause) => HttpError::Internal(cause),
            ScheduleError::Store(e) => e.into(),
        }
    }
}

impl From<crate::notify::NotifyError> for HttpError {
    fn from(err: crate::notify::NotifyError) -> HttpError {
        use crate::notify::NotifyError;
        match err {
            NotifyError::Invalid { field, reason } => {
                HttpError::Unprocessable { reason: format!("{field}: {reason}"), field: Some(field) }
            }
            NotifyError::NotFound(_) => HttpError::NotFound(err.to_string()),
            NotifyError::NotFailed(..) => HttpError::Conflict(err.to_string()),
            NotifyError::Damaged(cause) => HttpError::Internal(cause),
            NotifyError::Store(e) => e.into(),
        }
    }
}

impl From<FilterError> for HttpError {
    fn from(err: FilterError) -> HttpError {
        HttpError::unprocessable(err.field, err.to_string())
    }
}

impl From<axum::extract::rejection::JsonRejection> for HttpError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> HttpError {
        HttpError::unreadable(rejection.status(), rejection.body_text())
    }
}

/// A JSON body that could not be read, from axum's words for it.
pub fn json_body_error(text: String) -> HttpError {
    HttpError::BadRequest { field: json_error_field(&text), reason: text }
}

/// The field a JSON body error is about, for clients that show it beside the input: axum words a data error
/// `… target type: <path>: <serde error>`, and serde names a missing or unknown field only in its message.
fn json_error_field(text: &str) -> Option<String> {
    let (_, detail) = text.split_once("target type: ")?;
    let (path, error) = match detail.split_once(": ") {
        Some((path, error)) if !path.contains(' ') => (Some(path).filter(|p| *p != "."), error),
        _ => (None, detail),
    };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| error.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, named) {
        // serde_path_to_error already ends the path of an unknown field with its name.
        (Some(path), Some(name)) if path == name || path.ends_with(&format!(".{name}")) => Some(path.to_owned()),
        (Some(path), Some(name)) => Some(format!("{path}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (Some(path), None) => Some(path.to_owned()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::{extract::rejection::JsonRejection, Json};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn field_of(body: &str) -> Option<String> {
        let rejection: JsonRejection = Json::<Outer>::from_bytes(body.as_bytes()).expect_err("a bad body");
        match HttpError::from(rejection) {
            HttpError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_errors_name_their_field() {
        assert_eq!(field_of(r#"{"name": "a", "items": [], "color": 1}"#).as_deref(), Some("color"));
        assert_eq!(field_of(r#"{"items": []}"#).as_deref(), Some("name"));
        assert_eq!(field_of(r#"{"name": 7, "items": []}"#).as_deref(), Some("name"));
        assert_eq!(field_of(r#"{"name": "a", "items": [{"n": -1}]}"#).as_deref(), Some("items[0].n"));
        assert_eq!(field_of(r#"{"name": "a", "items": [{"n": 1, "m": 2}]}"#).as_deref(), Some("items[0].m"));
        assert_eq!(field_of(r#"{"name": "a", "items": [{}]}"#).as_deref(), Some("items[0].n"));
        assert_eq!(field_of(r#"{"name": "a", "#), None);
        assert_eq!(field_of("not json"), None);
    }
}
