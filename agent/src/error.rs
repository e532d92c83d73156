//! The crate's one error type.
//!
//! Every failure the agent can meet is a variant here. At the prompt an error becomes at most one short line on
//! stderr and exit status 0 (see [`crate::cli`]); `flush` and `status` print it and exit non-zero.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The argv did not look like `<number> <user> <date> <time> <command…>`: HISTTIMEFORMAT is not set as the
    /// profile snippet sets it, or history is empty.
    #[error("History not configured: {0}")]
    HistoryNotConfigured(String),

    /// The configuration file could not be read or parsed, or an `OMAUDIT_*` variable has a bad value.
    #[error("config {}: {message}", path.display())]
    Config {
        /// The file (or, for an environment variable, its name).
        path: PathBuf,
        /// What was wrong, as the parser said it.
        message: String,
    },

    /// The spool directory cannot be created or written.
    #[error("spool {} not writable: {source}", path.display())]
    SpoolNotWritable {
        /// The spool directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A spool, state, lock or log file exists but belongs to another user, is a symlink, or has extra hard links.
    /// In the shared (sticky) spool directory another user may have planted it: it is never written through.
    #[error("{} is not ours (owner uid {owner}, not a regular file, or hard-linked): refusing to use it", path.display())]
    ForeignFile {
        /// The offending path.
        path: PathBuf,
        /// Its owner, as lstat/fstat reported.
        owner: u32,
    },

    /// The spool directory is world-writable without the sticky bit: anyone could delete or replace our files.
    #[error("spool {} is world-writable without the sticky bit (chmod 1777 it)", path.display())]
    InsecureSpoolDir {
        /// The spool directory.
        path: PathBuf,
    },

    /// Another process held the spool lock for too long.
    #[error("spool {} stayed locked for {waited_ms} ms", path.display())]
    SpoolBusy {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },

    /// Any other I/O failure on a local file.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing ("read", "write", "rename", …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// `server` or `token` is missing: events are spooled but cannot be delivered.
    #[error("not configured: {0} missing")]
    NotConfigured(&'static str),

    /// The server answered 401 or 403.
    #[error("token refused (HTTP {0})")]
    TokenRefused(u16),

    /// The server answered something other than 200/401/403/413.
    #[error("server answered HTTP {status}: {body}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// The server answered 200 with a body that is not the acknowledgement JSON: nothing is removed.
    #[error("bad acknowledgement from server: {0}")]
    BadAck(String),

    /// Connecting, sending or receiving failed (refused, timed out, TLS, DNS).
    #[error("cannot reach {server}: {message}")]
    Transport {
        /// The configured server URL.
        server: String,
        /// What the HTTP client said.
        message: String,
    },

    /// The kernel's audit subsystem (`watch`).
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),

    /// Bad command-line usage of a subcommand.
    #[error("{0}")]
    Usage(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done and to which file.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { what, path: path.into(), source }
    }
}
