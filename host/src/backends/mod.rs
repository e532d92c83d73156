//! Execution backends: turn "run this argument vector / copy this file on these hosts" into per-host results.
//!
//! **Architecture invariant:** backends run commands; they neither persist nor serve. They never build a shell
//! string from their inputs (where a remote shell is unavoidable, as over SSH, every argument is quoted so that it
//! arrives as exactly one argument). A module reaches a backend only through a [`JobHandle`], which adds
//! cancellation, confines file copies to the server's file store and lets a module address only its job's hosts.
//!
//! Every backend has the same shape (`run`, `copy_file`, `check`) and the same duties:
//! - one result per host, in the order of `hosts`: ok, failed or unreachable, never a silent gap;
//! - each host's result goes to the [`Report`] the moment that host is done, not when the whole call returns;
//! - output is capped at `Limits::output_limit_bytes` with a visible marker ([`output::Capped`]);
//! - dropping the returned future (a cancelled job) stops the remote work where the tool allows it.

pub mod ansible;
pub mod config;
pub mod func;
mod handle;
mod local;
pub mod output;
mod process;
pub mod saltstack;
pub mod ssh;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use abi_stable::std_types::ROption;
use futures_util::{stream::FuturesUnordered, StreamExt};
use omserver_plugin_api::{HostResult, HostStatus};
use serde::Serialize;

pub use config::BackendsConfig;
pub use handle::{Entry, JobHandle, Progress, Settled};
pub use local::LocalBackend;
pub(crate) use process::kill_tree;

/// The backend names, in the order `GET /api/backends` lists them.
pub const NAMES: &[&str] = &["local", "ssh", "ansible", "saltstack", "func"];

/// Limits every backend applies to one command on one host.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub command_timeout: Duration,
    pub output_limit_bytes: usize,
}

/// One inventory host as a backend addresses it. Salt and Func address it by `name`, SSH and Ansible by
/// `address`, `port` and `user` (each falls back to the backend's configured default when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
}

/// Where a backend hands each host's result as soon as that host is done. The job records it there and then
/// (progress, the `/api/jobs/{id}/events` stream); the backend still returns every result at the end.
#[derive(Clone)]
pub struct Report(Arc<dyn Fn(&HostResult) + Send + Sync>);

impl Report {
    pub fn new(each: impl Fn(&HostResult) + Send + Sync + 'static) -> Report {
        Report(Arc::new(each))
    }

    /// A report that goes nowhere (checks, benchmarks).
    pub fn discard() -> Report {
        Report::new(|_| {})
    }

    /// Reports one host's final result and hands it back, for `results.push(report.done(result))`.
    pub fn done(&self, result: HostResult) -> HostResult {
        (self.0)(&result);
        result
    }
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Report")
    }
}

/// Runs `work` for every host, at most `parallel` at once, reports each result as it finishes and returns them
/// all in the order of `hosts`.
pub async fn per_host<'a, F, Fut>(hosts: &'a [Host], parallel: usize, report: &Report, work: F) -> Vec<HostResult>
where
    F: Fn(&'a Host) -> Fut,
    Fut: Future<Output = HostResult> + 'a,
{
    let mut slots: Vec<Option<HostResult>> = vec![None; hosts.len()];
    // A plain FuturesUnordered topped up by hand rather than a stream combinator with a closure: rustc cannot
    // prove such a closure's future `Send` for every lifetime, and the job's task must be `Send`.
    let mut waiting = hosts.iter().enumerate();
    let mut running = FuturesUnordered::new();
    for (i, host) in waiting.by_ref().take(parallel.max(1)) {
        running.push(indexed(i, work(host)));
    }
    while let Some((i, result)) = running.next().await {
        slots[i] = Some(report.done(result));
        if let Some((i, host)) = waiting.next() {
            running.push(indexed(i, work(host)));
        }
    }
    slots
        .into_iter()
        .zip(hosts)
        .map(|(slot, host)| slot.unwrap_or_else(|| failed(&host.name, "no result", None)))
        .collect()
}

async fn indexed<F: Future>(i: usize, work: F) -> (usize, F::Output) {
    (i, work.await)
}

/// A result for a host that was reached and whose work failed.
pub fn failed(host: &str, message: &str, duration: Option<Duration>) -> HostResult {
    outcome(host, HostStatus::Failed, message, duration)
}

/// A result for a host that could not be reached (refused, timed out, no answer from its agent).
pub fn unreachable(host: &str, message: &str, duration: Option<Duration>) -> HostResult {
    outcome(host, HostStatus::Unreachable, message, duration)
}

fn outcome(host: &str, status: HostStatus, message: &str, duration: Option<Duration>) -> HostResult {
    HostResult {
        host: host.into(),
        status,
        rc: ROption::RNone,
        stdout: "".into(),
        stderr: message.into(),
        duration_ms: duration.map_or(0, millis),
    }
}

pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What `GET /api/backends` and `omserver backends check` say about one backend.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub backend: &'static str,
    pub default: bool,
    pub ok: bool,
    /// One line: what was checked, or exactly what is wrong and how to fix it.
    pub detail: String,
}

/// A configured backend. An enum rather than a trait object: the set is closed and known to the server.
#[derive(Debug)]
pub enum Backend {
    Local(LocalBackend),
    Ssh(ssh::SshBackend),
    Ansible(ansible::AnsibleBackend),
    Saltstack(saltstack::SaltBackend),
    Func(func::FuncBackend),
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend {0:?}: choose one of local, ssh, ansible, saltstack, func")]
    Unknown(String),
    #[error("the {0} backend is not configured on this server (it needs a [backends.{0}] section)")]
    Unavailable(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Ssh(_) => "ssh",
            Backend::Ansible(_) => "ansible",
            Backend::Saltstack(_) => "saltstack",
            Backend::Func(_) => "func",
        }
    }

    pub async fn run(&self, hosts: &[Host], argv: &[String], report: &Report) -> Vec<HostResult> {
        match self {
            Backend::Local(b) => b.run(hosts, argv, report).await,
            Backend::Ssh(b) => b.run(hosts, argv, report).await,
            Backend::Ansible(b) => b.run(hosts, argv, report).await,
            Backend::Saltstack(b) => b.run(hosts, argv, report).await,
            Backend::Func(b) => b.run(hosts, argv, report).await,
        }
    }

    /// Copies the server file `source` (already resolved inside the file store) to `dest` on every host, exact
    /// bytes and `mode`, through a temporary name and a rename.
    pub async fn copy_file(
        &self,
        hosts: &[Host],
        source: &Path,
        dest: &str,
        mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        match self {
            Backend::Local(b) => b.copy_file(hosts, source, dest, mode, report).await,
            Backend::Ssh(b) => b.copy_file(hosts, source, dest, mode, report).await,
            Backend::Ansible(b) => b.copy_file(hosts, source, dest, mode, report).await,
            Backend::Saltstack(b) => b.copy_file(hosts, source, dest, mode, report).await,
            Backend::Func(b) => b.copy_file(hosts, source, dest, mode, report).await,
        }
    }

    /// Checks the configuration and what the backend needs (key files, the tool's binary, a login).
    /// `Ok` is a line saying what was checked, `Err` exactly what is wrong.
    pub async fn check(&self) -> Result<String, String> {
        match self {
            Backend::Local(_) => Ok("runs on this server (loopback targets only)".to_owned()),
            Backend::Ssh(b) => b.check().await,
            Backend::Ansible(b) => b.check().await,
            Backend::Saltstack(b) => b.check().await,
            Backend::Func(b) => b.check().await,
        }
    }
}

/// The backends this server has: `local` always, each other one when its `[backends.<name>]` section exists.
#[derive(Debug)]
pub struct Backends {
    default: Arc<Backend>,
    available: Vec<Arc<Backend>>,
}

impl Backends {
    /// `default` is `auto_platform`; it must name an available backend. `state_dir` holds what a backend
    /// generates (Ansible's home, temporary inventories).
    pub fn new(
        default: &str,
        config: &BackendsConfig,
        limits: Limits,
        state_dir: &Path,
    ) -> Result<Backends, BackendError> {
        let state: PathBuf = state_dir.join("backends");
        let mut available = vec![Arc::new(Backend::Local(LocalBackend::new(limits)))];
        if let Some(c) = &config.ssh {
            available.push(Arc::new(Backend::Ssh(ssh::SshBackend::new(c.clone(), limits))));
        }
        if let Some(c) = &config.ansible {
            available.push(Arc::new(Backend::Ansible(ansible::AnsibleBackend::new(c.clone(), limits, &state))));
        }
        if let Some(c) = &config.saltstack {
            available.push(Arc::new(Backend::Saltstack(saltstack::SaltBackend::new(c.clone(), limits))));
        }
        if let Some(c) = &config.func {
            available.push(Arc::new(Backend::Func(func::FuncBackend::new(c.clone(), limits))));
        }
        let default = Self::find(&available, default)?;
        Ok(Backends { default, available })
    }

    fn find(available: &[Arc<Backend>], name: &str) -> Result<Arc<Backend>, BackendError> {
        if !NAMES.contains(&name) {
            return Err(BackendError::Unknown(name.to_owned()));
        }
        available.iter().find(|b| b.name() == name).cloned().ok_or_else(|| BackendError::Unavailable(name.to_owned()))
    }

    /// The backend a job asked for, or the default.
    pub fn get(&self, name: Option<&str>) -> Result<Arc<Backend>, BackendError> {
        match name {
            None => Ok(self.default.clone()),
            Some(name) => Self::find(&self.available, name),
        }
    }

    pub fn default_name(&self) -> &'static str {
        self.default.name()
    }

    /// Checks every available backend, all at once.
    pub async fn health(&self) -> Vec<Health> {
        let checks = self.available.iter().map(|b| async move {
            let (ok, detail) = match b.check().await {
                Ok(line) => (true, line),
                Err(problem) => (false, problem),
            };
            Health { backend: b.name(), default: b.name() == self.default.name(), ok, detail }
        });
        futures_util::future::join_all(checks).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host { name: name.into(), address: "127.0.0.1".into(), port: None, user: None }
    }

    #[tokio::test]
    async fn per_host_reports_as_each_finishes_and_returns_in_host_order() {
        let hosts = [host("slow"), host("fast")];
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let report = Report::new(move |r| sink.lock().unwrap().push(r.host.to_string()));
        let results = per_host(&hosts, 2, &report, |h| async move {
            if h.name == "slow" {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            failed(&h.name, "done", None)
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), ["fast", "slow"], "reported in finishing order");
        let order: Vec<&str> = results.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(order, ["slow", "fast"], "returned in host order");
    }

    #[test]
    fn unknown_and_unconfigured_backends_are_told_apart() {
        let limits = Limits { command_timeout: Duration::from_secs(1), output_limit_bytes: 1024 };
        let dir = std::env::temp_dir();
        let backends = Backends::new("local", &BackendsConfig::default(), limits, &dir).unwrap();
        assert_eq!(backends.get(None).unwrap().name(), "local");
        assert!(matches!(backends.get(Some("ssh")), Err(BackendError::Unavailable(_))));
        assert!(matches!(backends.get(Some("rpyc")), Err(BackendError::Unknown(_))));
        assert!(matches!(
            Backends::new("ansible", &BackendsConfig::default(), limits, &dir),
            Err(BackendError::Unavailable(_))
        ));
    }
}
