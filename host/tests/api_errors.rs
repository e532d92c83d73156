//! Every refusal of the API is the documented JSON error body (`{"error", "field"}`), including those made before
//! a handler runs: a path parameter or a query string that does not parse, a method a path does not take.
//! (Found by schemathesis: these were axum's plain-text answers.)

mod common;

use common::Server;
use reqwest::{header, Method, StatusCode};
use serde_json::Value;

/// Sends `method path` as the admin; returns the status, the content type and the body.
fn ask(server: &Server, method: Method, path: &str) -> (StatusCode, String, Value, Option<String>) {
    let response = server
        .client
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(&server.token)
        .send()
        .expect("request reaches the server");
    let status = response.status();
    let header_text = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
    let allow = header_text(header::ALLOW);
    let text = response.text().unwrap_or_default();
    (status, content_type, serde_json::from_str(&text).unwrap_or(Value::String(text)), allow)
}

#[test]
fn path_ids_that_do_not_parse_are_a_400_naming_the_id() {
    let server = Server::start();
    for (method, path) in [
        (Method::DELETE, "/api/hosts/9223372036854775808"),
        (Method::GET, "/api/jobs/abc"),
        (Method::GET, "/api/jobs/9223372036854775808/events"),
        (Method::POST, "/api/jobs/-9223372036854775809/cancel"),
        (Method::DELETE, "/api/audit/rules/1.5"),
        (Method::GET, "/api/notify/deliveries/%F0%9F%90%9B"),
    ] {
        let (status, content_type, body, _) = ask(&server, method.clone(), path);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {body}");
        assert!(content_type.starts_with("application/json"), "{method} {path}: {content_type}");
        assert_eq!(body["field"], "id", "{method} {path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("is not a valid whole number"), "{method} {path}: {error}");
    }
}

#[test]
fn query_strings_that_do_not_parse_are_a_400_naming_the_parameter() {
    let server = Server::start();
    for (path, field) in [
        ("/api/jobs?limit=abc", "limit"),
        ("/api/jobs?before=9223372036854775808", "before"),
        ("/api/overview?silent_after_secs=soon", "silent_after_secs"),
        ("/api/audit/events?after=-", "after"),
        ("/api/notify/deliveries?limit=1e3", "limit"),
    ] {
        let (status, content_type, body, _) = ask(&server, Method::GET, path);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(content_type.starts_with("application/json"), "{path}: {content_type}");
        assert_eq!(body["field"], field, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.starts_with(field)), "{path}: {body}");
    }
}

#[test]
fn a_method_a_path_does_not_take_is_a_405_with_allow_json_under_api_and_a_page_elsewhere() {
    let server = Server::start();
    let (status, content_type, body, allow) = ask(&server, Method::PATCH, "/api/hosts");
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert_eq!(body["error"], "PATCH is not allowed on /api/hosts");
    let allow = allow.expect("an Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");

    let (status, content_type, body, allow) = ask(&server, Method::PUT, "/jobs");
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.as_str().is_some_and(|page| page.contains("PUT is not allowed on /jobs")), "{body}");
    assert!(allow.is_some_and(|a| a.contains("GET")), "the page answer keeps its Allow header");
}

#[test]
fn the_document_promises_those_refusals_and_the_module_listing_matches_it() {
    let server = Server::start();
    let (status, document) = server.get("/api/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let mut undocumented = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let has_parameters = operation["parameters"].as_array().is_some_and(|p| !p.is_empty());
            let bad_request = &operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"];
            if has_parameters && bad_request != "#/components/schemas/ErrorBody" {
                undocumented.push(format!("{method} {path}"));
            }
        }
    }
    assert!(undocumented.is_empty(), "operations with parameters and no documented 400: {undocumented:?}");
    // A parameter's default is a number or a text: the schema must not narrow it to an object.
    let default = &document["components"]["schemas"]["ParamListing"]["properties"]["default"];
    assert!(default.get("type").is_none(), "ParamListing.default: {default}");
}
