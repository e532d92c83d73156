//! One error type for every handler, mapped to a status code and a JSON body `{"error": …, "field": …}`.
//! Internal failures are logged with their cause and answered with a generic message.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::{jobs::JobError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{reason}")]
    BadRequest { field: Option<String>, reason: String },
    #[error("{0}")]
    Conflict(String),
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

    fn status(&self) -> StatusCode {
        match self {
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
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
            HttpError::BadRequest { field: Some(field), reason } => json!({ "error": reason, "field": field }),
            other => json!({ "error": other.to_string() }),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, HttpError::Unauthorized) {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
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
            other => HttpError::Internal(other.to_string()),
        }
    }
}

impl From<JobError> for HttpError {
    fn from(err: JobError) -> HttpError {
        match err {
            JobError::InvalidParam(p) => HttpError::invalid(&p.field, p.to_string()),
            JobError::UnknownHosts(_) => HttpError::invalid("hosts", err.to_string()),
            JobError::NoHosts => HttpError::invalid("hosts", err.to_string()),
            JobError::UnknownModule(_) | JobError::UnsupportedBackend { .. } => {
                HttpError::invalid("module", err.to_string())
            }
            JobError::NotFound(_) => HttpError::NotFound(err.to_string()),
            JobError::Store(e) => e.into(),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for HttpError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> HttpError {
        HttpError::bad_request(rejection.body_text())
    }
}
