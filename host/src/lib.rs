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

pub mod app;
pub mod audit;
pub mod auth;
pub mod backends;
pub mod calendar;
pub mod cli;
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
