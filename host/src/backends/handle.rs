//! The backend handle a module receives: the job's backend plus cancellation, live progress and two walls (file
//! copies stay inside the file store; a module addresses only its job's hosts).

use std::{
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};

use abi_stable::std_types::{RSlice, RStr, RString, RVec};
use omserver_plugin_api::{Backend as BackendApi, HostResult, Target};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Backend, Host, Report};

/// Every result a job's backend calls have reported so far, in the order hosts finished: what a running job's
/// view shows and what `/api/jobs/{id}/events` streams. Watchers are told the new count after each result.
#[derive(Debug)]
pub struct Progress {
    results: Mutex<Vec<HostResult>>,
    count: watch::Sender<usize>,
    closed: std::sync::atomic::AtomicBool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { results: Mutex::default(), count: watch::Sender::new(0), closed: Default::default() }
    }
}

impl Progress {
    pub fn push(&self, result: HostResult) {
        let mut results = self.lock();
        results.push(result);
        self.count.send_replace(results.len());
    }

    /// The results from index `from` on.
    pub fn since(&self, from: usize) -> Vec<HostResult> {
        self.lock().get(from..).map(<[HostResult]>::to_vec).unwrap_or_default()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HostResult>> {
        // A Vec of results holds no invariant a panic could break half-way: recover it.
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lent to one job's `run`. Its methods are called from the module on a blocking thread and block on the runtime.
/// They must not panic: a panic here would unwind into module code across the FFI boundary.
pub struct JobHandle {
    backend: Arc<Backend>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    files_dir: PathBuf,
    /// The job's hosts, as the inventory has them (port and user included).
    hosts: Vec<Host>,
    progress: Arc<Progress>,
}

impl JobHandle {
    pub fn new(
        backend: Arc<Backend>,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
        files_dir: PathBuf,
        hosts: Vec<Host>,
        progress: Arc<Progress>,
    ) -> JobHandle {
        JobHandle { backend, runtime, cancel, files_dir, hosts, progress }
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

    /// Runs `work` unless the job is cancelled first; a cancelled job gets a failed result per host that had not
    /// finished. Each result reaches the job's progress as the backend reports it.
    fn guarded<'a, F, W>(&'a self, hosts: &'a [Host], work: W) -> RVec<HostResult>
    where
        W: FnOnce(&'a [Host], Report) -> F,
        F: std::future::Future<Output = Vec<HostResult>> + 'a,
    {
        let done = Arc::new(Mutex::new(vec![false; hosts.len()]));
        let report = {
            let (progress, done) = (self.progress.clone(), done.clone());
            let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
            Report::new(move |result| {
                if let Some(i) = names.iter().position(|n| n == result.host.as_str()) {
                    done.lock().unwrap_or_else(|e| e.into_inner())[i] = true;
                }
                progress.push(result.clone());
            })
        };
        let cancelled = || -> Vec<HostResult> {
            let done = done.lock().unwrap_or_else(|e| e.into_inner());
            let results: Vec<HostResult> = hosts.iter().map(|h| HostResult::failed(&h.name, "cancelled")).collect();
            for (result, finished) in results.iter().zip(done.iter()) {
                if !finished {
                    self.progress.push(result.clone());
                }
            }
            results
        };
        if self.cancel.is_cancelled() {
            return cancelled().into();
        }
        let results = self.runtime.block_on(async {
            tokio::select! {
                results = work(hosts, report) => results,
                // Dropping the work stops what it started (each backend says how).
                _ = self.cancel.cancelled() => cancelled(),
            }
        });
        results.into()
    }
}

impl BackendApi for JobHandle {
    fn name(&self) -> RString {
        self.backend.name().into()
    }

    fn run(&self, targets: RSlice<'_, Target>, argv: RSlice<'_, RString>) -> RVec<HostResult> {
        let hosts = match self.resolve(targets.as_slice()) {
            Ok(hosts) => hosts,
            Err(refused) => return refused.into(),
        };
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        self.guarded(&hosts, |hosts, report| async move { self.backend.run(hosts, &argv, &report).await })
    }

    fn copy_file(&self, targets: RSlice<'_, Target>, source: RStr<'_>, dest: RStr<'_>, mode: u32) -> RVec<HostResult> {
        let targets = targets.as_slice();
        let refuse = |reason: &str| targets.iter().map(|t| HostResult::failed(&t.name, reason)).collect();
        let hosts = match self.resolve(targets) {
            Ok(hosts) => hosts,
            Err(refused) => return refused.into(),
        };
        let source = match resolve_in_store(&self.files_dir, source.as_str()) {
            Ok(path) => path,
            Err(reason) => return refuse(&reason),
        };
        let dest = dest.as_str().to_owned();
        if !dest.starts_with('/') {
            return refuse(&format!("destination {dest:?} must be an absolute path"));
        }
        self.guarded(&hosts, |hosts, report| async move {
            self.backend.copy_file(hosts, &source, &dest, mode & 0o7777, &report).await
        })
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
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
