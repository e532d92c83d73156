//! OMServer: run task modules on many hosts through the execution backend a site uses.
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct (TOML + environment).
//! - [`app`]: wiring from a config to a running server; used by `main.rs` and by the tests.
//! - [`plugins`]: the registry of task modules: watches plugins.d, checks files, has workers probe them.
//! - [`worker`]: module workers: the processes that load libraries through abi_stable and run them.
//! - [`jobs`]: validates a request, resolves targets, runs a module off the runtime, persists the outcome.
//! - [`templates`], [`schedules`]: saved jobs and the scheduler that runs them.
//! - [`access`], [`approvals`], [`activity`]: grants that scope roles to parts of the inventory, policies that
//!   hold jobs for a second person's approval, and the chained record of every change.
//! - [`cluster`]: the servers of one database: each joins under its name, heartbeats, and is listed.
//! - [`notify`]: notifications: channels, subscriptions, the outbox and delivery with retries.
//! - [`backends`]: local (and later ssh, ansible, saltstack, func): argv and file copies → per-host results.
//! - [`labels`]: the one rule for names people give things, as the API document states it.
//! - [`inventory`]: reading CSV and Ansible INI inventories into host forms.
//! - [`store`]: sqlx over SQLite, MariaDB/MySQL and PostgreSQL, with per-dialect migrations.
//! - [`audit`]: audit ingest (legacy GET and agent batches), dedup, hash chain, group commit, live fan-out.
//! - [`auth`]: API tokens and roles.
//! - [`users`]: console users, sessions, login throttling.
//! - [`http`]: the axum routes, one router per resource.
//! - [`ui`]: the web console: askama pages and embedded scripts over the JSON API.
//! - [`cli`]: the `omserver` command line.
//!
//! See ARCHITECTURE.md at the repository root for the data flows and invariants.

pub mod access;
pub mod activity;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod backends;
pub mod calendar;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod inventory;
pub mod jobs;
pub mod labels;
pub mod notify;
pub mod plugins;
pub mod schedules;
pub mod store;
pub mod templates;
pub mod ui;
pub mod users;
pub mod worker;

/// The parsers that the fuzz targets in `fuzz/` drive and that are private to their module, gathered here. Not an
/// API: cargo fuzz links this library from outside, so it can reach only `pub` paths, and widening each module
/// instead would have made whole backends public.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::backends::ansible::invocation::index_of as ansible_index_of;
    pub use crate::backends::ansible::results::{parse as parse_ansible_line, to_result as ansible_result, Action};
    pub use crate::backends::func::xmlrpc::{method_call, parse_response, xml_char_ok, Param, RpcError, Value};
    pub use crate::backends::saltstack::events::{SseEvent, SseParser};
    pub use crate::backends::ssh::known_hosts::{host_token, line_for, KnownHosts, Verdict};
    pub use crate::http::body::{is_local_page, read_form, see_other};
    pub use russh::keys::{parse_public_key_base64, PublicKey};
}
