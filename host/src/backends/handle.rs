//! The backend handle a module receives: the job's backend plus cancellation, live progress and two walls (file
//! copies stay inside the file store; a module addresses only its job's hosts).

use std::{
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};

use omserver_plugin_api::{HostResult, Target};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Backend, Host, Report};

/// What a job's progress records for a host: a result its backend reported, or what the job decided for a host
/// that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The backend's result (ok, failed, unreachable).
    Reported,
    /// The host was running when the job was cancelled or timed out.
    Cancelled,
    /// The host never started (a cancel, a timeout or a rollout's failure threshold came first).
    Skipped,
}

/// One entry of a job's progress.
#[derive(Debug, Clone)]
pub struct Entry {
    pub result: HostResult,
    pub settled: Settled,
}

/// Every result a job's backend calls have reported so far, in the order hosts finished: what a running job's
/// view shows and what `/api/jobs/{id}/events` streams. Watchers are told the new count after each result.
#[derive(Debug)]
pub struct Progress {
    entries: Mutex<Vec<Entry>>,
    count: watch::Sender<usize>,
    closed: std::sync::atomic::AtomicBool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { entries: Mutex::default(), count: watch::Sender::new(0), closed: Default::default() }
    }
}

impl Progress {
    pub fn push(&self, result: HostResult, settled: Settled) {
        let mut entries = self.lock();
        entries.push(Entry { result, settled });
        self.count.send_replace(entries.len());
    }

    /// The entries from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Entry> {
        self.lock().get(from..).map(<[Entry]>::to_vec).unwrap_or_default()
    }

    /// How many entries there are: where the next batch's entries start.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Wakes on every new result and at [`close`](Self::close).
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// No more results will come: the job's outcome is stored.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.count.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A Vec of results holds no invariant a panic could break half-way: recover it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one job's module reaches hosts through: the worker forwards each of the module's `Context` calls here.
pub struct JobHandle {
    backend: Arc<Backend>,
    cancel: CancellationToken,
    files_dir: PathBuf,
    /// The job's hosts, as the inventory has them (port and user included).
    hosts: Vec<Host>,
    progress: Arc<Progress>,
}

impl JobHandle {
    pub fn new(
        backend: Arc<Backend>,
        cancel: CancellationToken,
        files_dir: PathBuf,
        hosts: Vec<Host>,
        progress: Arc<Progress>,
    ) -> JobHandle {
        JobHandle { backend, cancel, files_dir, hosts, progress }
    }

    /// The backend's name, what the module's `ctx.backend_name()` answers.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Runs `argv` on the module's targets (each must be one of the job's hosts).
    pub async fn run(&self, targets: &[Target], argv: &[String]) -> Vec<HostResult> {
        let hosts = match self.resolve(targets) {
            Ok(hosts) => hosts,
            Err(refused) => return refused,
        };
        let (report, done) = self.report_for(&hosts);
        self.guarded(&hosts, &done, self.backend.run(&hosts, argv, &report)).await
    }

    /// Copies `source` from the file store to `dest` on the module's targets.
    pub async fn copy_file(&self, targets: &[Target], source: &str, dest: &str, mode: u32) -> Vec<HostResult> {
        let refuse = |reason: &str| targets.iter().map(|t| HostResult::failed(&t.name, reason)).collect();
        let hosts = match self.resolve(targets) {
            Ok(hosts) => hosts,
            Err(refused) => return refused,
        };
        let source = match resolve_in_store(&self.files_dir, source) {
            Ok(path) => path,
            Err(reason) => return refuse(&reason),
        };
        if !dest.starts_with('/') {
            return refuse(&format!("destination {dest:?} must be an absolute path"));
        }
        let (report, done) = self.report_for(&hosts);
        self.guarded(&hosts, &done, self.backend.copy_file(&hosts, &source, dest, mode & 0o7777, &report)).await
    }

    /// The job's hosts for the module's targets, by name. A target that is not one of the job's hosts is refused:
    /// a module must not reach an address the operator did not choose.
    fn resolve(&self, targets: &[Target]) -> Result<Vec<Host>, Vec<HostResult>> {
        let mut hosts = Vec::with_capacity(targets.len());
        let mut refused = Vec::new();
        for target in targets {
            match self.hosts.iter().find(|h| h.name == target.name.as_str()) {
                Some(host) => hosts.push(host.clone()),
                None => refused.push(target.name.as_str()),
            }
        }
        if refused.is_empty() {
            return Ok(hosts);
        }
        let message = format!("not a host of this job: {}", refused.join(", "));
        Err(targets.iter().map(|t| HostResult::failed(&t.name, &message)).collect())
    }

    /// The report for one call on `hosts`: each result goes to the job's progress as it arrives, and is marked
    /// done so that a cancel adds "cancelled" only for the hosts still running.
    fn report_for(&self, hosts: &[Host]) -> (Report, Arc<Mutex<Vec<bool>>>) {
        let done = Arc::new(Mutex::new(vec![false; hosts.len()]));
        let (progress, marks) = (self.progress.clone(), done.clone());
        let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        let report = Report::new(move |result| {
            if let Some(i) = names.iter().position(|n| n == result.host.as_str()) {
                marks.lock().unwrap_or_else(|e| e.into_inner())[i] = true;
            }
            progress.push(result.clone(), Settled::Reported);
        });
        (report, done)
    }

    /// Runs `work` unless the job is cancelled first. On a cancel the module gets a failed result per host, and
    /// the job's progress records the hosts that had not finished as cancelled, with how long they ran.
    async fn guarded(
        &self,
        hosts: &[Host],
        done: &Mutex<Vec<bool>>,
        work: impl std::future::Future<Output = Vec<HostResult>>,
    ) -> Vec<HostResult> {
        let started = std::time::Instant::now();
        let cancelled = || -> Vec<HostResult> {
            let done = done.lock().unwrap_or_else(|e| e.into_inner());
            let ran_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let results: Vec<HostResult> = hosts.iter().map(|h| HostResult::failed(&h.name, "cancelled")).collect();
            for (result, finished) in results.iter().zip(done.iter()) {
                if !finished {
                    let mut stopped = result.clone();
                    stopped.duration_ms = ran_ms;
                    self.progress.push(stopped, Settled::Cancelled);
                }
            }
            results
        };
        if self.cancel.is_cancelled() {
            // A call made after the cancel starts nothing: its hosts never ran.
            for host in hosts {
                self.progress.push(HostResult::failed(&host.name, "cancelled"), Settled::Skipped);
            }
            return hosts.iter().map(|h| HostResult::failed(&h.name, "cancelled")).collect();
        }
        tokio::select! {
            results = work => results,
            // Dropping the work stops what it started (each backend says how).
            _ = self.cancel.cancelled() => cancelled(),
        }
    }
}

/// Resolves a module's source name inside the file store. Absolute names and `..` are refused, so a module cannot
/// send arbitrary server files (keys, the database) to hosts.
fn resolve_in_store(store: &Path, name: &str) -> Result<PathBuf, String> {
    let relative = Path::new(name);
    let plain = !name.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(format!("source {name:?} must be a plain name inside the server's file store"));
    }
    Ok(store.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{Limits, LocalBackend};

    #[tokio::test]
    async fn a_module_reaches_only_its_jobs_hosts() {
        let limits = Limits { command_timeout: std::time::Duration::from_secs(5), output_limit_bytes: 1024 };
        let mine = Host { name: "web1".into(), address: "127.0.0.1".into(), port: None, user: None };
        let handle = JobHandle::new(
            Arc::new(Backend::Local(LocalBackend::new(limits))),
            CancellationToken::new(),
            PathBuf::from("/srv/files"),
            vec![mine],
            Arc::new(Progress::default()),
        );
        let forged = Target { name: "db1".into(), address: "127.0.0.1".into() };
        let results = handle.run(&[forged], &["true".to_owned()]).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].stderr.as_str(), "not a host of this job: db1");
        assert!(handle.progress.since(0).is_empty(), "nothing ran, nothing reported");
    }

    #[test]
    fn sources_stay_inside_the_store() {
        let store = Path::new("/srv/files");
        assert_eq!(resolve_in_store(store, "nginx.conf").unwrap(), Path::new("/srv/files/nginx.conf"));
        assert_eq!(resolve_in_store(store, "resin/resin.conf").unwrap(), Path::new("/srv/files/resin/resin.conf"));
        for bad in ["", "/etc/shadow", "../etc/passwd", "a/../../b", "./x"] {
            assert!(resolve_in_store(store, bad).is_err(), "{bad:?} must be refused");
        }
    }
}
