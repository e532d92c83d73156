//! Module workers: every module library is loaded and run in a process of its own, never in the server.
//!
//! A module is code from anyone. In a worker, a segfault, an abort, a stack overflow, a leak or a loop that never
//! polls cancellation costs its job and nothing else: the server sees the socket close, reads the exit status and
//! fails that job with the reason; at a timeout or cancel it kills the worker, so the job's slot is free again and
//! nothing keeps running. The same holds at load time: new files are probed in a short-lived worker, so a library
//! whose constructor crashes is rejected, not fatal (and not fatal again at the next start).
//!
//! - [`protocol`]: the messages and their framing (versioned; the worker speaks first).
//! - [`child`]: the worker's side, `omserver worker`.
//! - [`process`]: one worker as the server sees it.
//! - this file: configuration, the faults, and [`Workers`], the pool of warm workers keyed by library hash.
//!
//! **Architecture invariant:** the server process never maps a module library; only `child.rs` loads one.

pub mod child;
pub mod process;
pub mod protocol;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use omserver_plugin_api::{HostResult, InitRequest, Metadata};
use tokio_util::sync::CancellationToken;

pub use process::{RunError, GRACE};

use crate::{backends::JobHandle, plugins::LoadedModule};
use process::WorkerProcess;

/// An idle worker unused for this long is retired.
const IDLE_LIFETIME: Duration = Duration::from_secs(600);

/// How workers are started and limited; from the `module_*` configuration keys.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The `omserver` binary to start as `omserver worker` (the running executable by default).
    pub program: PathBuf,
    pub memory_limit_mb: u64,
    pub cpu_limit_secs: u64,
    pub open_files: u64,
    /// Drop to this user before the library is loaded.
    pub user: Option<WorkerUser>,
    /// A probe (start, load, metadata) must be done within this.
    pub probe_timeout: Duration,
    /// Idle workers kept per library.
    pub max_idle: usize,
}

#[derive(Debug, Clone)]
pub struct WorkerUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("module_user {0:?}: no such user")]
    Unknown(String),
    #[error("module_user is set, so the server must run as root to start workers as another user")]
    NotRoot,
}

impl WorkerUser {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<WorkerUser, UserError> {
        let unknown = || UserError::Unknown(name.to_owned());
        let c_name = std::ffi::CString::new(name).map_err(|_| unknown())?;
        // SAFETY: getpwnam_r writes into the buffers we own and pass with their sizes.
        let (uid, gid) = unsafe {
            let mut entry: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let mut buffer = vec![0 as libc::c_char; 16 * 1024];
            let rc = libc::getpwnam_r(c_name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found);
            if rc != 0 || found.is_null() {
                return Err(unknown());
            }
            (entry.pw_uid, entry.pw_gid)
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(UserError::NotRoot);
        }
        Ok(WorkerUser { name: name.to_owned(), uid, gid })
    }
}

/// Why a worker did not do what was asked. The text is what operators read in the job's error or the module
/// listing.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("cannot start a module worker: {0}")]
    Start(std::io::Error),
    #[error("{}", exited_message(.status, .tail))]
    Exited { status: String, tail: Vec<String> },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out after {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The library loaded badly (abi_stable's checks, the metadata call): the worker said why.
    #[error("{0}")]
    Refused(String),
}

/// "the module's worker crashed: killed by SIGSEGV (…)", with what the worker's last stderr lines say it was.
fn exited_message(status: &str, tail: &[String]) -> String {
    let what = if status.starts_with("killed") {
        format!("the module's worker crashed: {status}")
    } else {
        format!("the module's worker {status}")
    };
    let said = |needle: &str| tail.iter().find(|l| l.contains(needle));
    if let Some(line) = said("has overflowed its stack") {
        return format!("the module overflowed its stack ({what}): {line}");
    }
    if let Some(line) = said("memory allocation of") {
        return format!("the module ran past its memory limit (module_memory_limit_mb) ({what}): {line}");
    }
    match tail.iter().rev().find(|l| l.contains("panicked") || l.contains("fatal")) {
        Some(line) => format!("{what}: {line}"),
        None => what,
    }
}

impl Fault {
    /// The same fault, phrased for a library being probed ("crashed while loading").
    pub fn while_loading(&self) -> String {
        match self {
            Fault::Exited { status, .. } if status.starts_with("killed") => {
                format!("the module crashed while loading: {status}")
            }
            Fault::Exited { status, .. } => format!("the module's worker {status} while loading"),
            Fault::TimedOut(after) => format!("timed out after {} s while loading", after.as_secs()),
            other => other.to_string(),
        }
    }
}

/// The pool: warm workers per library (by content hash), reused across jobs, retired when their library is.
pub struct Workers {
    config: WorkerConfig,
    idle: Mutex<HashMap<String, Vec<WorkerProcess>>>,
}

impl Workers {
    pub fn new(config: WorkerConfig) -> Workers {
        Workers { config, idle: Mutex::default() }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Starts a worker and checks it answers: run at server start, so that a wrong `module_worker_program` or
    /// `module_user` is an error then, not a rejection of every module.
    pub async fn self_check(&self) -> Result<(), Fault> {
        WorkerProcess::spawn(&self.config, "", self.config.probe_timeout).await?.kill().await;
        Ok(())
    }

    /// Loads `library` in a fresh worker and returns its metadata (unvalidated: the caller checks it). A worker
    /// that loaded the library well stays as the first warm worker for it.
    pub async fn probe(&self, library: Arc<[u8]>, sha256: &str) -> Result<Metadata, Fault> {
        let deadline = self.config.probe_timeout;
        let mut worker = WorkerProcess::spawn(&self.config, sha256, deadline).await?;
        match worker.load(library, deadline).await {
            Ok(metadata) => {
                self.check_in(worker);
                Ok(metadata)
            }
            Err(fault) => {
                worker.kill().await;
                Err(fault)
            }
        }
    }

    /// Runs one job's module in a worker: a warm one for this library when there is one, else a fresh one.
    pub async fn run(
        &self,
        module: &LoadedModule,
        init: &InitRequest,
        handle: &JobHandle,
        cancel: &CancellationToken,
    ) -> Result<Result<Vec<HostResult>, String>, RunError> {
        let mut worker = self.check_out(module).await.map_err(RunError::Fault)?;
        match worker.run(init, handle, cancel).await {
            Ok(outcome) => {
                self.check_in(worker);
                Ok(outcome)
            }
            Err(err) => {
                match &err {
                    RunError::Fault(fault) => {
                        tracing::warn!(module = module.meta.id, worker_pid = worker.pid, fault = %fault, "module worker failed");
                        metrics::counter!("omserver_module_worker_faults_total").increment(1);
                    }
                    RunError::Overdue => {
                        tracing::warn!(
                            module = module.meta.id,
                            worker_pid = worker.pid,
                            "killing a module that did not stop"
                        );
                        metrics::counter!("omserver_module_workers_killed_total").increment(1);
                    }
                }
                worker.kill().await;
                Err(err)
            }
        }
    }

    /// Kills the idle workers of a library that is no longer served.
    pub fn retire(&self, sha256: &str) {
        let retired = self.lock().remove(sha256).unwrap_or_default();
        self.gauge();
        for worker in retired {
            tokio::spawn(worker.kill());
        }
    }

    async fn check_out(&self, module: &LoadedModule) -> Result<WorkerProcess, Fault> {
        loop {
            let candidate = self.lock().get_mut(&module.sha256).and_then(Vec::pop);
            self.gauge();
            match candidate {
                Some(mut worker) => {
                    if worker.alive() && worker.idle_since.elapsed() < IDLE_LIFETIME {
                        return Ok(worker);
                    }
                    tokio::spawn(worker.kill());
                }
                None => break,
            }
        }
        let deadline = self.config.probe_timeout;
        let mut worker = WorkerProcess::spawn(&self.config, &module.sha256, deadline).await?;
        match worker.load(module.bytes.clone(), deadline).await {
            Ok(metadata) if metadata.id == module.meta.id => Ok(worker),
            Ok(metadata) => {
                worker.kill().await;
                Err(Fault::Protocol(format!("the library now says it is module {}", metadata.id)))
            }
            Err(fault) => {
                worker.kill().await;
                Err(fault)
            }
        }
    }

    /// Keeps a worker that finished well for the next job, unless its library has enough idle workers or it has
    /// used half its CPU limit (a job must not inherit a worker about to hit RLIMIT_CPU).
    fn check_in(&self, worker: WorkerProcess) {
        let spent = worker.cpu_ms / 1000 >= self.config.cpu_limit_secs / 2;
        let mut idle = self.lock();
        let list = idle.entry(worker.sha256.clone()).or_default();
        if spent || list.len() >= self.config.max_idle {
            drop(idle);
            tokio::spawn(worker.kill());
        } else {
            list.push(worker);
            drop(idle);
        }
        self.gauge();
    }

    fn gauge(&self) {
        let count: usize = self.lock().values().map(Vec::len).sum();
        metrics::gauge!("omserver_module_workers_idle").set(count as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<WorkerProcess>>> {
        // Lists of processes hold no invariant a panic could break half-way: recover them.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_messages_say_what_happened() {
        let crash = Fault::Exited { status: "killed by SIGSEGV (segmentation fault)".into(), tail: vec![] };
        assert_eq!(crash.to_string(), "the module's worker crashed: killed by SIGSEGV (segmentation fault)");
        assert_eq!(crash.while_loading(), "the module crashed while loading: killed by SIGSEGV (segmentation fault)");
        let exit = Fault::Exited { status: "exited with code 3".into(), tail: vec![] };
        assert_eq!(exit.to_string(), "the module's worker exited with code 3");
        assert_eq!(exit.while_loading(), "the module's worker exited with code 3 while loading");
        let tail = vec!["memory allocation of 67108864 bytes failed".to_owned()];
        let oom = Fault::Exited { status: "killed by SIGABRT (aborted)".into(), tail };
        assert!(oom.to_string().starts_with("the module ran past its memory limit (module_memory_limit_mb)"), "{oom}");
        let tail =
            vec!["thread 'main' has overflowed its stack".to_owned(), "fatal runtime error: stack overflow".into()];
        let deep = Fault::Exited { status: "killed by SIGABRT (aborted)".into(), tail };
        assert!(deep.to_string().starts_with("the module overflowed its stack"), "{deep}");
        assert_eq!(Fault::TimedOut(Duration::from_secs(10)).while_loading(), "timed out after 10 s while loading");
    }
}
