//! The backend handle a module receives: the configured backend plus cancellation and the file-store wall.

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use abi_stable::std_types::{RSlice, RStr, RString, RVec};
use omserver_plugin_api::{Backend as BackendApi, HostResult, Target};
use tokio_util::sync::CancellationToken;

use super::Backend;

/// Results a job's backend calls have returned so far, for showing a running job's progress.
pub type Progress = Arc<std::sync::Mutex<Vec<HostResult>>>;

/// Lent to one job's `run`. Its methods are called from the module on a blocking thread and block on the runtime.
/// They must not panic: a panic here would unwind into module code across the FFI boundary.
pub struct JobHandle {
    backend: Arc<Backend>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    files_dir: PathBuf,
    progress: Progress,
}

impl JobHandle {
    pub fn new(
        backend: Arc<Backend>,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
        files_dir: PathBuf,
        progress: Progress,
    ) -> JobHandle {
        JobHandle { backend, runtime, cancel, files_dir, progress }
    }

    /// Runs `work` unless the job is cancelled first; a cancelled job gets a failed result per host.
    fn guarded<F>(&self, hosts: &[Target], work: F) -> RVec<HostResult>
    where
        F: std::future::Future<Output = Vec<HostResult>>,
    {
        let cancelled = || hosts.iter().map(|t| HostResult::failed(&t.name, "cancelled")).collect::<Vec<_>>();
        if self.cancel.is_cancelled() {
            return cancelled().into();
        }
        let results = self.runtime.block_on(async {
            tokio::select! {
                results = work => results,
                // Dropping `work` kills what it started (see backends::process).
                _ = self.cancel.cancelled() => cancelled(),
            }
        });
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).extend(results.iter().cloned());
        results.into()
    }
}

impl BackendApi for JobHandle {
    fn name(&self) -> RString {
        self.backend.name().into()
    }

    fn run(&self, hosts: RSlice<'_, Target>, argv: RSlice<'_, RString>) -> RVec<HostResult> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        self.guarded(hosts.as_slice(), self.backend.run(hosts.as_slice(), &argv))
    }

    fn copy_file(&self, hosts: RSlice<'_, Target>, source: RStr<'_>, dest: RStr<'_>, mode: u32) -> RVec<HostResult> {
        let hosts = hosts.as_slice();
        let source = match resolve_in_store(&self.files_dir, source.as_str()) {
            Ok(path) => path,
            Err(reason) => return hosts.iter().map(|t| HostResult::failed(&t.name, &reason)).collect(),
        };
        if !dest.as_str().starts_with('/') {
            let reason = format!("destination {:?} must be an absolute path", dest.as_str());
            return hosts.iter().map(|t| HostResult::failed(&t.name, &reason)).collect();
        }
        self.guarded(hosts, self.backend.copy_file(hosts, &source, dest.as_str(), mode & 0o7777))
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
