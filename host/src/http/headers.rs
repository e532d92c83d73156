//! Security headers on every response, pages and errors included: the browser is told to run only this
//! origin's scripts (no inline script, no eval), never to frame the console, never to guess content types, and
//! to send no referrer. JSON answers are not cached: they carry audit data and tokens' results.

use axum::{
    extract::Request,
    http::{header, HeaderValue},
    middleware::Next,
    response::Response,
};

/// No inline script or style and no `eval`: whatever a host, a module or an audited command puts into a page
/// cannot run even if it were inserted as HTML by mistake.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The middleware (`middleware::from_fn`). Headers a handler set itself are kept, except `Cache-Control` on
/// `/api`, which is always `no-store`.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with form posts, which the
        // session guard must refuse; same-origin still gives no other site a URL of ours.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
