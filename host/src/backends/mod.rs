//! Execution backends: turn "run this argument vector / copy this file on these hosts" into per-host results.
//!
//! **Architecture invariant:** backends run commands; they neither persist nor serve. They never build a shell
//! string from their inputs. A module reaches a backend only through a [`JobHandle`], which adds cancellation and
//! confines file copies to the server's file store.

mod handle;
mod local;
mod process;

use std::{path::Path, time::Duration};

use omserver_plugin_api::{HostResult, Target};

pub use handle::{JobHandle, Progress};
pub use local::LocalBackend;

/// Limits every backend applies to one command on one host.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub command_timeout: Duration,
    pub output_limit_bytes: usize,
}

/// The configured backend. An enum rather than a trait object: the set is closed and known to the server.
#[derive(Debug)]
pub enum Backend {
    Local(LocalBackend),
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend {0:?}: this server supports local")]
    Unknown(String),
}

impl Backend {
    /// The backend named by AUTO_PLATFORM.
    pub fn from_name(name: &str, limits: Limits) -> Result<Backend, BackendError> {
        match name {
            "local" => Ok(Backend::Local(LocalBackend::new(limits))),
            other => Err(BackendError::Unknown(other.to_owned())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
        }
    }

    pub async fn run(&self, hosts: &[Target], argv: &[String]) -> Vec<HostResult> {
        match self {
            Backend::Local(b) => b.run(hosts, argv).await,
        }
    }

    /// Copies the server file `source` (already resolved inside the file store) to `dest` on every host.
    pub async fn copy_file(&self, hosts: &[Target], source: &Path, dest: &str, mode: u32) -> Vec<HostResult> {
        match self {
            Backend::Local(b) => b.copy_file(hosts, source, dest, mode).await,
        }
    }
}
