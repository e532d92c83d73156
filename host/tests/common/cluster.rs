//! Servers of one database for the cluster tests: each joins under its own `node_name` with one secret key, so a
//! token made on one is valid on the others.

use std::time::Duration;

use super::{fixture, install, Options, Server};

/// The key every server of a test shares.
pub const SECRET: &str = "cluster-test-secret-key-0123456789abcdef";

/// A server on `database_url` as `name`, with `extra` configuration lines and the sleeping fixture (9003) loaded.
/// The first server of a database prints its admin token; a later one is given it (`token`).
pub fn node(database_url: &str, name: &str, token: Option<&str>, extra: &str) -> Server {
    let mut server = Server::start_with(Options {
        seed: vec![1003],
        database_url: Some(database_url.to_owned()),
        extra_config: format!("node_name = \"{name}\"\nsecret_key = \"{SECRET}\"\n{extra}"),
        ..Options::default()
    });
    if let Some(token) = token {
        server.token = token.to_owned();
    }
    install(&fixture("fx_sleep"), &server.plugins_dir(), "Mid_9003.so");
    server.wait_for_module("Mid_9003.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    server
}
