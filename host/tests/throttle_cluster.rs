//! Failed logins spread over the servers of one database are throttled as if all were sent to one: three servers
//! on a fresh PostgreSQL database (the machine's server) and a lone one on SQLite get the same 25 wrong passwords
//! of one name and answer them alike, and a wait, a new failure and a success on one server count on the others.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{database::block_on, scratch::Scratch, Options, Server};
use omserver::store::Dialect;
use reqwest::{blocking::Client, header::RETRY_AFTER, StatusCode};
use serde_json::json;

/// The same key on every server: tokens and failed-login counts are keyed by it.
const SECRET: &str = "throttle-cluster-test-secret-0123456789abcdef";

/// A server on `database_url` as `name`. The first server of a database prints its admin token and password; a
/// later one is given the token (`token`).
fn node(database_url: &str, name: &str, token: Option<&str>) -> Server {
    let mut server = Server::start_with(Options {
        seed: vec![],
        database_url: Some(database_url.to_owned()),
        extra_config: format!("node_name = \"{name}\"\nsecret_key = \"{SECRET}\""),
        ..Options::default()
    });
    if let Some(token) = token {
        server.token = token.to_owned();
    }
    server
}

/// A JSON login: its status and `Retry-After`, if any.
fn login(client: &Client, server: &Server, name: &str, password: &str) -> (StatusCode, Option<String>) {
    let response = client
        .post(format!("{}/login", server.base))
        .json(&json!({ "name": name, "password": password }))
        .send()
        .expect("POST /login");
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (response.status(), retry_after)
}

/// The 25 wrong passwords of `admin`, the n-th sent to `servers[n % len]`: each answer, and how long the answers
/// after the fifth failure took (they must come within its 1 s wait to be alike).
fn twenty_five_failures(client: &Client, servers: &[&Server]) -> (Vec<(StatusCode, Option<String>)>, Duration) {
    let mut answers = Vec::new();
    let mut fifth = Instant::now();
    for attempt in 0..25 {
        answers.push(login(client, servers[attempt % servers.len()], "admin", "wrong password!"));
        if attempt == 4 {
            fifth = Instant::now();
        }
    }
    (answers, fifth.elapsed())
}

#[test]
fn failed_logins_spread_over_three_servers_are_throttled_as_on_one() {
    let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let expected: Vec<(StatusCode, Option<String>)> =
        (0..25)
            .map(|n| {
                if n < 5 {
                    (StatusCode::UNAUTHORIZED, None)
                } else {
                    (StatusCode::TOO_MANY_REQUESTS, Some("1".into()))
                }
            })
            .collect();

    // One server alone, as the rule was first written for.
    let alone = Server::start_with(Options { seed: vec![], ..Options::default() });
    let (answers, took) = twenty_five_failures(&client, &[&alone]);
    assert_eq!(answers, expected, "one server (the throttled answers took {took:?})");
    drop(alone);

    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let first = node(&scratch.url, "throttle-1", None);
    let (token, password) = (first.token.clone(), first.admin_password.clone());
    assert!(!password.is_empty(), "the first server prints the admin password");
    let second = node(&scratch.url, "throttle-2", Some(&token));
    let third = node(&scratch.url, "throttle-3", Some(&token));
    let servers = [&first, &second, &third];

    // Round robin: the 4th and 5th failures land on servers that saw one failure each, and the 6th attempt onward
    // waits whichever server it reaches.
    let (answers, took) = twenty_five_failures(&client, &servers);
    assert_eq!(answers, expected, "three servers (the throttled answers took {took:?})");

    // The wait over, a failure on one server doubles the wait on the others.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(login(&client, &second, "ADMIN", "wrong password!"), (StatusCode::UNAUTHORIZED, None));
    for server in [&third, &first] {
        let answer = login(&client, server, "admin", &password);
        assert_eq!(answer, (StatusCode::TOO_MANY_REQUESTS, Some("2".into())), "{}", server.base);
    }

    // A success on one server resets the name's count on all.
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(login(&client, &third, "admin", &password).0, StatusCode::OK);
    assert_eq!(login(&client, &first, "admin", "wrong password!"), (StatusCode::UNAUTHORIZED, None));

    for server in servers {
        assert!(!server.log().contains("wrong password!"), "no password reaches the log");
    }
    drop((first, second, third));
    block_on(scratch.drop_database());
}
