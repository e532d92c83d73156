//! # omaudit-agent
//!
//! The audit agent of OMServer. bash runs it from `PROMPT_COMMAND` at every prompt with the last history line;
//! it records that line as an audit event and gets it to the server without ever making the prompt wait and
//! without ever losing an event silently.
//!
//! ## The path of an event
//!
//! 1. bash, at the prompt: `history -a; omaudit-agent "$(history 1)"` ([`profile`] writes that snippet).
//! 2. [`history`] parses `<number> <user> <date> <time> <command…>`; [`identity`] adds the real uid, the login
//!    user and the terminal; [`config`] the configured address.
//! 3. [`spool`] de-duplicates (an empty Enter repeats the line), gives the event its `(stream, seq)` and appends
//!    one JSON line to `<spool_dir>/<uid>.spool` under a flock, or, when the spool is full, counts it lost and
//!    records a gap. The prompt then starts `omaudit-agent flush --quiet` detached, unless a flusher is already
//!    running, and returns: about 1.3 ms median in all, process start included, whatever the server does
//!    (figures in agent/README.md).
//! 4. [`deliver`] (the flusher) posts batches to `{server}/api/audit/events` and removes exactly what the server
//!    acknowledged. Anything else leaves the spool as it was, for the next prompt or `omaudit-agent flush`.
//!
//! ## Why it is built this way
//!
//! - **Background flush.** The original agent sent each line synchronously with a 3 s timeout: a slow or dead
//!   server froze every prompt for 3 s and the line was then lost. Now the prompt only does local file work; the
//!   network happens in a detached process with its own timeouts, and at most one per uid at a time
//!   (`<uid>.flush.lock`).
//! - **Spool first, per uid.** The agent runs as whoever is at the prompt, so it can only write files that user
//!   may write. One spool per real uid, mode 0600, in a shared sticky directory (like /tmp), keeps users from
//!   reading or editing each other's commands and from blocking each other's locks. Files are opened with
//!   `O_NOFOLLOW` and checked for owner and link count, so a planted symlink or file is never written through.
//! - **Never silent.** Every sequence number is either delivered, rejected by the server (logged locally), or
//!   covered by a gap report (`spool full`, `spool write failed`, `event too large`) that the server sees. The
//!   server is idempotent on `(stream, seq)`, so a batch resent after a crash costs nothing.
//! - **Durability.** The prompt does not fsync (that alone would cost milliseconds on a real disk): an event
//!   survives any crash of the agent or the shell, but not a power cut in the seconds before the kernel writes it.
//!   The flusher fsyncs every rewritten spool before the rename.
//!
//! ## What history-based capture cannot see
//!
//! This is an accountability trail for cooperating users, not a defence against a determined one. It misses:
//! commands typed with a leading space if the user manages to set `HISTCONTROL=ignorespace` (the snippet makes it
//! read-only, but a shell started with `--norc`/`--noprofile` never sources it); `HISTFILE=/dev/null`,
//! `HISTSIZE=0`, `set +o history`; a fresh `bash --norc` (PROMPT_COMMAND is not exported); other shells (sh, zsh,
//! fish); non-interactive `ssh host cmd`, scp/sftp, cron, and anything run by a program. Each command is seen
//! only as typed (an alias or a script shows its name, not what ran). Kernel-level capture of execve attributed by
//! login uid is the stronger tool: [`kernel`] (`omaudit-agent watch`) is that, beside this path, which stays for
//! hosts where the watcher cannot run (`omaudit-agent watch --check` says which applies).
//!
//! Two timing effects: the last command of a session (`exit`, or one that kills the shell) gets no prompt after
//! it, so it is only recorded at the next login, when bash has reloaded HISTFILE and `history 1` shows it again
//! (with its original time); when the last command *was* recorded, that reload records it a second time under
//! another `(stream, seq)`. And a line whose history entry has no timestamp (written before HISTTIMEFORMAT was
//! set) prints as `??` and is logged as "History not configured".
//!
//! The host token is in a file every local user can read (every user's prompt runs the agent), and the
//! `OMAUDIT_*` overrides can be set by whoever runs it: any local user can forge events *for this host*. The
//! server binds each token to one host, so a forged event can never claim another host.
//!
//! ## Modules
//!
//! - [`cli`]: argv dispatch; the prompt path turns every failure into one stderr line and exit 0.
//! - [`history`]: parsing the history line. No I/O.
//! - [`identity`]: uid, login user, terminal.
//! - [`event`]: the event, gap and acknowledgement types (the wire format). No I/O.
//! - [`spool`]: the per-uid spool, its state and its locks.
//! - [`deliver`]: the flusher and the HTTP transport.
//! - [`config`]: TOML file plus environment overlay.
//! - [`profile`]: the /etc/profile.d snippet.
//! - [`local_log`]: the agent's own log file.
//! - [`kernel`]: `omaudit-agent watch`, kernel-level capture of every exec (netlink audit).
//! - [`error`]: the crate's one error enum.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod error;
pub mod event;
pub mod history;
pub mod identity;
pub mod kernel;
pub mod local_log;
pub mod profile;
pub mod spool;

pub use error::{Error, Result};
