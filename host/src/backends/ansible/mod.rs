//! The `ansible` backend: drives ansible-core's ad-hoc CLI (`ansible all -m command|copy`) once per call.
//!
//! The path of a call: [`invocation::prepare`] writes a private directory under the state dir (a YAML inventory
//! of the call's hosts under aliases, the arguments as `!unsafe` variables, an empty ansible.cfg, our stdout
//! callback plugin) and builds the command with a cleared environment; the process runs in its own process group
//! ([`process::Streaming`]); each line the plugin prints is one host's result, reported at once; hosts ansible said
//! nothing about are failed, never left out.
//!
//! Cancellation: dropping the future kills ansible's whole process group (its forks and their ssh clients); no
//! ssh multiplexing master is used, so no connection outlives the call.

// pub(crate): re-exported for the fuzz targets by `crate::fuzzing`.
pub(crate) mod invocation;
pub(crate) mod results;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use omserver_plugin_api::HostResult;
use tracing::{debug, warn};

use super::{config::AnsibleConfig, failed, output::cap, process::Streaming, Host, Limits, Report};
use invocation::Task;
use results::Action;

#[derive(Debug)]
pub struct AnsibleBackend {
    config: AnsibleConfig,
    limits: Limits,
    /// `<server state>/backends/ansible`: ANSIBLE_HOME, the calls' private directories.
    state_dir: PathBuf,
}

/// Extra time a whole call may take beyond its hosts' own timeouts (ansible's start-up, forks, fact-free setup).
const CALL_SLACK: Duration = Duration::from_secs(30);

impl AnsibleBackend {
    pub fn new(config: AnsibleConfig, limits: Limits, state_dir: &Path) -> AnsibleBackend {
        AnsibleBackend { config, limits, state_dir: state_dir.join("ansible") }
    }

    pub async fn run(&self, hosts: &[Host], argv: &[String], report: &Report) -> Vec<HostResult> {
        if argv.is_empty() {
            return hosts.iter().map(|h| report.done(failed(&h.name, "empty command", None))).collect();
        }
        self.call(hosts, &Task::Command { argv }, &Action::Command, report).await
    }

    pub async fn copy_file(
        &self,
        hosts: &[Host],
        source: &Path,
        dest: &str,
        mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        // The size is read here only for the success message; ansible reads the file itself.
        let bytes = match tokio::fs::metadata(source).await {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => return all_failed(hosts, &format!("{} is not a file", source.display()), report),
            Err(e) => return all_failed(hosts, &format!("cannot read {}: {e}", source.display()), report),
        };
        self.call(hosts, &Task::Copy { source, dest, mode }, &Action::Copy { dest, bytes }, report).await
    }

    /// `ansible --version` runs, the key is readable, the known-hosts file is there.
    pub async fn check(&self) -> Result<String, String> {
        let key = &self.config.identity_file;
        std::fs::File::open(key).map_err(|e| format!("identity_file {}: {e}", key.display()))?;
        invocation::ssh_args(&self.config).map_err(|e| e.to_string())?;
        let known = &self.config.known_hosts_file;
        if !known.is_file() {
            let accept_new = self.config.host_key_policy == super::config::HostKeyPolicy::AcceptNew;
            let dir_ok = known.parent().is_some_and(Path::is_dir);
            if !(accept_new && dir_ok) {
                return Err(format!(
                    "known_hosts_file {} does not exist: create it (`omserver hosts trust NAME` records keys) \
                     or use host_key_policy = \"accept-new\"",
                    known.display()
                ));
            }
        }
        let exe = &self.config.executable;
        let mut command = tokio::process::Command::new(exe);
        command.arg("--version").env_clear().envs([
            ("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned())),
            ("LANG", "C.UTF-8".to_owned()),
            ("ANSIBLE_HOME", self.state_dir.join("home").display().to_string()),
            ("HOME", self.state_dir.join("home").display().to_string()),
        ]);
        command.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let output = match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(format!("cannot run `{} --version`: {e} (set executable)", exe.display())),
            Err(_) => return Err(format!("`{} --version` did not answer within 30 s", exe.display())),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let version = stdout.lines().next().unwrap_or("").trim().to_owned();
        if !output.status.success() || !version.contains("core") {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "`{} --version` failed ({}): {}",
                exe.display(),
                output.status,
                cap(stderr.trim(), 500)
            ));
        }
        Ok(format!("{version}; key {} readable; known hosts {} checked", key.display(), known.display()))
    }

    /// One ansible process for all `hosts`; each host's line is reported as it arrives.
    async fn call(&self, hosts: &[Host], task: &Task<'_>, action: &Action<'_>, report: &Report) -> Vec<HostResult> {
        if hosts.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let prepared = invocation::prepare(&self.config, &self.limits, &self.state_dir, hosts, task);
        let invocation = match prepared {
            Ok(invocation) => invocation,
            Err(e) => return all_failed(hosts, &e.to_string(), report),
        };
        let limit = self.limits.output_limit_bytes;
        let mut child = match Streaming::spawn(invocation.command, limit) {
            Ok(child) => child,
            Err(e) => {
                let message = format!("cannot start {}: {e}", self.config.executable.display());
                return all_failed(hosts, &message, report);
            }
        };
        let deadline = self.call_deadline(hosts.len(), task);
        // Three capped texts, JSON-escaped, fit; a longer line is not one of ours.
        let max_line = limit.saturating_mul(3 * 6).saturating_add(64 * 1024);
        let mut slots: Vec<Option<HostResult>> = vec![None; hosts.len()];
        let mut stray = String::new();
        let reading = async {
            while let Ok(Some(line)) = child.next_line(max_line).await {
                let Some(parsed) = results::parse(&line) else {
                    if stray.len() < 4096 {
                        stray.push_str(&String::from_utf8_lossy(&line));
                        stray.push('\n');
                    }
                    continue;
                };
                let Some(i) = invocation::index_of(&parsed.host).filter(|&i| i < hosts.len()) else {
                    warn!(host = %parsed.host, "ansible reported a host that is not in the call");
                    continue;
                };
                if slots[i].is_none() {
                    let result = results::to_result(&hosts[i].name, parsed, action, started.elapsed());
                    slots[i] = Some(report.done(result));
                }
            }
        };
        let finished = tokio::time::timeout(deadline, reading).await.is_ok();
        let why_missing = if finished {
            // Its stdout ended, so ansible is exiting; a bounded wait all the same (a timeout drops and kills it).
            let (status, stderr) = match tokio::time::timeout(Duration::from_secs(10), child.finish()).await {
                Ok(done) => done,
                Err(_) => (Err(std::io::Error::other("did not exit after closing its output")), String::new()),
            };
            let code = status.as_ref().ok().and_then(|s| s.code());
            debug!(code, hosts = hosts.len(), "ansible finished");
            let stderr = cap(format!("{stderr}{stray}").trim(), limit);
            match code {
                // Per-host outcomes: every host should have a line.
                Some(0 | 2 | 4) => format!("ansible reported nothing for this host. {stderr}").trim().to_owned(),
                _ => {
                    let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    format!("ansible failed ({how}): {stderr}")
                }
            }
        } else {
            drop(child); // kills the group
            format!("ansible did not finish within {deadline:?}; the call was stopped")
        };
        slots
            .into_iter()
            .zip(hosts)
            .map(|(slot, host)| {
                slot.unwrap_or_else(|| report.done(failed(&host.name, &why_missing, Some(started.elapsed()))))
            })
            .collect()
    }

    /// A bound on the whole call: hosts go in waves of `forks`, each host within its connect and task timeouts (a
    /// copy makes a few connections), plus ansible's own overhead.
    fn call_deadline(&self, hosts: usize, task: &Task<'_>) -> Duration {
        let forks = usize::try_from(self.config.forks).unwrap_or(usize::MAX).max(1);
        let waves = u32::try_from(hosts.div_ceil(forks)).unwrap_or(u32::MAX);
        let connections = match task {
            Task::Command { .. } => 1,
            Task::Copy { .. } => 4,
        };
        let per_host = Duration::from_secs(self.config.connect_timeout_secs.max(1)) * connections
            + self.limits.command_timeout * connections;
        per_host.saturating_mul(waves) + CALL_SLACK
    }
}

fn all_failed(hosts: &[Host], message: &str, report: &Report) -> Vec<HostResult> {
    hosts.iter().map(|h| report.done(failed(&h.name, message, None))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use omserver_plugin_api::HostStatus;

    fn backend(executable: &str, state: &Path) -> AnsibleBackend {
        let config = AnsibleConfig { executable: executable.into(), ..AnsibleConfig::default() };
        let limits = Limits { command_timeout: Duration::from_secs(5), output_limit_bytes: 1024 };
        AnsibleBackend::new(config, limits, state)
    }

    fn hosts() -> Vec<Host> {
        ["a", "b"]
            .iter()
            .map(|n| Host { name: (*n).into(), address: "127.0.0.1".into(), port: None, user: None })
            .collect()
    }

    #[tokio::test]
    async fn a_failing_executable_fails_every_host_with_its_stderr() {
        let state = tempfile::tempdir().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(0));
        let count = seen.clone();
        let report = Report::new(move |_| *count.lock().unwrap() += 1);
        // `false` exits 1 without a line: not a per-host outcome.
        let results = backend("false", state.path()).run(&hosts(), &["id".into()], &report).await;
        assert_eq!(*seen.lock().unwrap(), 2, "every host reported");
        assert!(results.iter().all(|r| r.status == HostStatus::Failed && r.stderr.starts_with("ansible failed")));
        let missing = backend("/nonexistent/ansible", state.path()).run(&hosts(), &["id".into()], &report).await;
        assert!(missing[0].stderr.contains("cannot start /nonexistent/ansible"), "{}", missing[0].stderr);
        // The call's private directory is gone afterwards.
        let calls = std::fs::read_dir(state.path().join("ansible/calls")).unwrap().count();
        assert_eq!(calls, 0);
    }
}
