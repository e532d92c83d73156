//! The `local` backend: runs on the server itself. The embedded default, so a fresh server does its job at once.
//!
//! It only accepts targets that are this machine (a loopback address or the name `localhost`): running a command
//! here and reporting it as the output of another host would mislead.

use std::{net::IpAddr, path::Path, time::Instant};

use abi_stable::std_types::ROption;
use omserver_plugin_api::{HostResult, HostStatus};

use super::{failed, millis, per_host, process, Host, Limits, Report};

#[derive(Debug)]
pub struct LocalBackend {
    limits: Limits,
}

impl LocalBackend {
    pub fn new(limits: Limits) -> LocalBackend {
        LocalBackend { limits }
    }

    pub async fn run(&self, hosts: &[Host], argv: &[String], report: &Report) -> Vec<HostResult> {
        per_host(hosts, hosts.len(), report, |host| async move {
            if let Err(refusal) = check_local(host) {
                return refusal;
            }
            process::run(argv, self.limits.command_timeout, self.limits.output_limit_bytes)
                .await
                .into_result(&host.name)
        })
        .await
    }

    pub async fn copy_file(
        &self,
        hosts: &[Host],
        source: &Path,
        dest: &str,
        mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        per_host(hosts, hosts.len(), report, |host| async move {
            if let Err(refusal) = check_local(host) {
                return refusal;
            }
            let started = Instant::now();
            match copy_atomically(source, Path::new(dest), mode).await {
                Ok(bytes) => HostResult {
                    host: host.name.as_str().into(),
                    status: HostStatus::Ok,
                    rc: ROption::RSome(0),
                    stdout: format!("copied {bytes} bytes to {dest}\n").into(),
                    stderr: "".into(),
                    duration_ms: millis(started.elapsed()),
                },
                Err(err) => failed(&host.name, &err, Some(started.elapsed())),
            }
        })
        .await
    }
}

fn check_local(host: &Host) -> Result<(), HostResult> {
    let local = host.name == "localhost"
        || host.address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.address == "localhost";
    if local {
        Ok(())
    } else {
        let message = format!("the local backend runs only on this server; {} is not a loopback address", host.address);
        Err(failed(&host.name, &message, None))
    }
}

/// Writes `dest` through a temporary file in the same directory and a rename, so that a reader never sees half a
/// file. Returns the number of bytes copied.
async fn copy_atomically(source: &Path, dest: &Path, mode: u32) -> Result<u64, String> {
    use std::os::unix::fs::PermissionsExt;
    let data = tokio::fs::read(source).await.map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    let dir = dest.parent().ok_or_else(|| format!("{} has no parent directory", dest.display()))?;
    let name = dest.file_name().ok_or_else(|| format!("{} is not a file path", dest.display()))?;
    let tmp = dir.join(format!(".{}.omserver-{}.tmp", name.to_string_lossy(), std::process::id()));
    let write = async {
        tokio::fs::write(&tmp, &data).await?;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).await?;
        tokio::fs::rename(&tmp, dest).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(format!("cannot write {}: {e}", dest.display()));
    }
    Ok(data.len() as u64)
}
