//! The inventory over the API: edit, delete, tags, and import with a preview and an error per bad line.

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn hosts(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/api/hosts");
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

fn send(server: &Server, method: reqwest::Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let mut request = server.client.request(method, format!("{}{path}", server.base)).bearer_auth(&server.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    server.send(request)
}

#[test]
fn hosts_are_edited_deleted_and_tagged() {
    let server = Server::start();
    let (status, web) = server.post(
        "/api/hosts",
        &json!({ "name": "Web1", "ip": "10.0.0.1", "function": "Linux.Web", "app": "nginx", "tags": ["Prod", "prod", "eu"] }),
    );
    assert_eq!(status, StatusCode::CREATED, "{web}");
    let id = web["id"].as_i64().unwrap();
    assert_eq!(hosts(&server).iter().find(|h| h["id"] == id).unwrap()["tags"], json!(["eu", "prod"]));

    let changed =
        json!({ "name": "web1", "ip": "10.0.0.2", "function": "Linux.Web", "app": "haproxy", "tags": ["lb"] });
    let (status, row) = send(&server, reqwest::Method::PUT, &format!("/api/hosts/{id}"), Some(&changed));
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(
        (row["ip"].clone(), row["app"].clone(), row["tags"].clone()),
        (json!("10.0.0.2"), json!("haproxy"), json!(["lb"]))
    );
    let taken = json!({ "name": "localhost", "ip": "10.0.0.2" });
    assert_eq!(send(&server, reqwest::Method::PUT, &format!("/api/hosts/{id}"), Some(&taken)).0, StatusCode::CONFLICT);
    let bad_tag = json!({ "name": "web1", "ip": "10.0.0.2", "tags": ["no spaces please"] });
    let (status, body) = send(&server, reqwest::Method::PUT, &format!("/api/hosts/{id}"), Some(&bad_tag));
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("tags")), "{body}");

    assert_eq!(send(&server, reqwest::Method::DELETE, &format!("/api/hosts/{id}"), None).0, StatusCode::NO_CONTENT);
    assert_eq!(send(&server, reqwest::Method::DELETE, &format!("/api/hosts/{id}"), None).0, StatusCode::NOT_FOUND);
    assert!(hosts(&server).iter().all(|h| h["name"] != "web1"));

    // A host with audit history stays: the trail keeps the hosts its commands came from.
    let agent = common::cli(&server, &["hosts", "token", "localhost"]).stdout.trim().to_owned();
    let localhost = hosts(&server).iter().find(|h| h["name"] == "localhost").unwrap()["id"].as_i64().unwrap();
    let (status, body) = send(&server, reqwest::Method::DELETE, &format!("/api/hosts/{localhost}"), None);
    assert_eq!(status, StatusCode::CONFLICT, "{body}: agent {agent:.6}…");
}

#[test]
fn imports_preview_then_store_the_good_lines_and_name_each_bad_one() {
    let server = Server::start();
    let csv = "name,ip,function,app,tags\nweb1,10.0.0.1,Linux.Web,nginx,prod\nweb2,not-an-ip,Linux.Web,nginx,\nweb3,10.0.0.3,Linux.Web,nginx,prod;eu\nlocalhost2,127.0.0.1,,,\n";
    let request = |preview: bool| json!({ "format": "csv", "text": csv, "preview": preview });
    let (status, preview) = server.post("/api/hosts/import", &request(true));
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!((preview["imported"].clone(), preview["failed"].clone()), (json!(0), json!(1)), "{preview}");
    assert_eq!(hosts(&server).len(), 1, "a preview stores nothing");
    let bad = &preview["lines"][1];
    assert_eq!((bad["line"].clone(), bad["name"].clone()), (json!(3), json!("web2")));
    assert!(bad["error"].as_str().unwrap().starts_with("ip: "), "{bad}");

    let (_, report) = server.post("/api/hosts/import", &request(false));
    assert_eq!((report["imported"].clone(), report["failed"].clone()), (json!(2), json!(2)), "{report}");
    assert!(
        report["lines"][3]["error"].as_str().unwrap().contains("exists already"),
        "127.0.0.1 is localhost's: {report}"
    );
    let names: Vec<String> = hosts(&server).iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["localhost", "web1", "web3"]);

    let (status, body) = server.post("/api/hosts/import", &json!({ "format": "yaml", "text": "" }));
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("format")));
    let (status, body) = server.post("/api/hosts/import", &json!({ "format": "csv", "text": "host,address\n" }));
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("text")), "{body}");
}

/// A host the file names twice (by name in any case, or by address) is flagged on its second line by the preview,
/// exactly as the import refuses it: the preview's count of ready hosts is what the import stores.
#[test]
fn a_host_named_twice_in_one_file_is_flagged_by_the_preview_as_by_the_import() {
    let server = Server::start();
    let csv = "name,ip\nweb1,10.0.0.1\nweb2,10.0.0.2\nWEB1,10.0.0.3\nweb4,10.0.0.2\nweb5,10.0.0.5\n";
    let request = |preview: bool| json!({ "format": "csv", "text": csv, "preview": preview });
    let errors = |report: &Value| -> Vec<(i64, Option<String>)> {
        report["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["line"].as_i64().unwrap(), l["error"].as_str().map(str::to_owned)))
            .collect()
    };
    let expected = vec![
        (2, None),
        (3, None),
        (4, Some("name: WEB1 is named already on line 2 of this file".to_owned())),
        (5, Some("ip: 10.0.0.2 is already on line 3 of this file".to_owned())),
        (6, None),
    ];
    let (status, preview) = server.post("/api/hosts/import", &request(true));
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(errors(&preview), expected, "{preview}");
    assert_eq!(preview["failed"], json!(2), "{preview}");

    let (status, report) = server.post("/api/hosts/import", &request(false));
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(errors(&report), expected, "{report}");
    assert_eq!((report["imported"].clone(), report["failed"].clone()), (json!(3), json!(2)), "{report}");
    let names: Vec<String> = hosts(&server).iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["localhost", "web1", "web2", "web5"]);
}
