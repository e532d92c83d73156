//! The console's static files, compiled into the binary: no CDN, nothing fetched at run time.

use std::sync::OnceLock;

use axum::{
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

/// (name, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("assets/console.js")),
    ("nav.js", "text/javascript; charset=utf-8", include_str!("assets/nav.js")),
    ("jobs.js", "text/javascript; charset=utf-8", include_str!("assets/jobs.js")),
    ("home.js", "text/javascript; charset=utf-8", include_str!("assets/home.js")),
    ("job.js", "text/javascript; charset=utf-8", include_str!("assets/job.js")),
    ("audit.js", "text/javascript; charset=utf-8", include_str!("assets/audit.js")),
    ("users.js", "text/javascript; charset=utf-8", include_str!("assets/users.js")),
    ("api_docs.js", "text/javascript; charset=utf-8", include_str!("assets/api_docs.js")),
    ("inventory.js", "text/javascript; charset=utf-8", include_str!("assets/inventory.js")),
    ("run.js", "text/javascript; charset=utf-8", include_str!("assets/run.js")),
    ("modules.js", "text/javascript; charset=utf-8", include_str!("assets/modules.js")),
    ("templates.js", "text/javascript; charset=utf-8", include_str!("assets/templates.js")),
    ("notifications.js", "text/javascript; charset=utf-8", include_str!("assets/notifications.js")),
    ("schedules.js", "text/javascript; charset=utf-8", include_str!("assets/schedules.js")),
    ("activity.js", "text/javascript; charset=utf-8", include_str!("assets/activity.js")),
    ("approvals.js", "text/javascript; charset=utf-8", include_str!("assets/approvals.js")),
    ("cluster.js", "text/javascript; charset=utf-8", include_str!("assets/cluster.js")),
    ("favicon.svg", "image/svg+xml", include_str!("assets/favicon.svg")),
];

/// Each file's ETag, computed once: browsers revalidate with `If-None-Match` and get 304s.
fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, body)| format!("\"{}\"", &hex::encode(Sha256::digest(body.as_bytes()))[..16]))
            .collect()
    })
}

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    answer(&name, &headers)
}

/// `GET /favicon.ico`: the console's icon (SVG, which browsers take at this path too), for the browsers and tools
/// that ask for it there without reading the pages' `<link rel="icon">`.
pub async fn favicon(headers: HeaderMap) -> Response {
    answer("favicon.svg", &headers)
}

fn answer(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = FILES.iter().position(|(file, _, _)| *file == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (_, content_type, body) = FILES[index];
    let etag = &etags()[index];
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    let etag = HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    // no-cache: use the copy, but ask first (a new server version must not run old scripts).
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response();
    }
    let headers = [(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::ETAG, etag), cache];
    (headers, body).into_response()
}
