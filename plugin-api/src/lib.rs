//! The contract between OMServer and its task modules, and the SDK for writing one.
//!
//! A task module is a `cdylib` crate that the server loads from its `plugins.d` directory while it runs.
//! The module declares what it is ([`Metadata`]: id, name, version, typed parameters), turns a request into a
//! task ([`TaskModule::initialise`]) and runs that task ([`TaskModule::run`]) through a [`Context`]: a handle to the
//! execution backend (local, ssh, ansible, saltstack, func) that the server chose. A module is written once and
//! runs on every backend, because it never talks to a backend itself: it asks the handle to run an argument vector
//! or copy a file on some hosts, and gets one [`HostResult`] per host back.
//!
//! # A complete module
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "mid_1003"
//! version = "1.0.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! omserver-plugin-api = "0.1"
//! abi_stable = "0.11"   # the export macro expands to `::abi_stable` paths
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use omserver_plugin_api::prelude::*;
//!
//! pub struct OsVersion {
//!     hosts: Vec<Target>,
//! }
//!
//! impl TaskModule for OsVersion {
//!     fn metadata() -> Metadata {
//!         Metadata::new(1003, "View OS version", env!("CARGO_PKG_VERSION"))
//!             .description("First line of /etc/issue on each host.")
//!     }
//!
//!     fn initialise(request: InitRequest) -> Result<Self, String> {
//!         Ok(OsVersion { hosts: request.hosts.into_vec() })
//!     }
//!
//!     fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
//!         Ok(ctx.run(&self.hosts, &["head", "-n", "1", "/etc/issue"]))
//!     }
//! }
//!
//! export_module!(OsVersion);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release` and rename `target/release/libmid_1003.so` into `plugins.d/Mid_1003.so`
//! (write it under a temporary name first: the server ignores `*.tmp` and dot files, and only loads complete
//! files).
//!
//! # What the server guarantees
//!
//! - Parameters reach `initialise` already checked against the schema in [`Metadata::params`], with defaults
//!   filled in: an integer is within its bounds, a choice is one of its choices, a text matches its pattern.
//! - `run` is called on a blocking thread, never on the server's async runtime. It may block.
//! - When the job times out or is cancelled, [`Context::is_cancelled`] turns true, the backend stops what it is
//!   running and refuses new work. A module that loops should poll it.
//! - A panic in `metadata`, `initialise` or `run` is caught by the code [`export_module!`] generates and becomes a
//!   failed job; it never crosses into the server (which would end it).
//!
//! # Versioning
//!
//! abi_stable checks this crate's version when the server loads a module: a module built against 0.1.x loads in
//! a server built against 0.1.y. Every new public item here is a promise to modules built elsewhere; fields may
//! only be added to the root module after its `last_prefix_field`.

mod contract;
mod sdk;

pub use contract::{
    Backend, BackendRef, Backend_TO, HostResult, HostStatus, InitRequest, Metadata, ModuleLib, ModuleLibRef, Param,
    ParamKind, ParamSpec, ParamValue, Setting, Target, Task, TaskBox, Task_TO,
};
pub use sdk::{Context, TaskModule};

/// The imports a module needs.
pub mod prelude {
    pub use crate::export_module;
    pub use crate::{
        Context, HostResult, HostStatus, InitRequest, Metadata, Param, ParamKind, ParamSpec, ParamValue, Target,
        TaskModule,
    };
    pub use abi_stable::std_types::{ROption, RString, RVec};
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`export_module!`](crate::export_module); not part of the API.
    pub use crate::sdk::module_lib;
}

/// Exports a [`TaskModule`] as the library's root module. Use it once, at the crate root.
#[macro_export]
macro_rules! export_module {
    ($module:ty) => {
        #[::abi_stable::export_root_module]
        pub fn omserver_module_root() -> $crate::ModuleLibRef {
            $crate::__private::module_lib::<$module>()
        }
    };
}
