//! The `local` backend: runs on the server itself. The embedded default, so a fresh server does its job at once.
//!
//! It only accepts targets that are this machine (a loopback address or the name `localhost`): running a command
//! here and reporting it as the output of another host would mislead.

use std::{net::IpAddr, path::Path, time::Instant};

use abi_stable::std_types::ROption;
use futures_util::future::join_all;
use omserver_plugin_api::{HostResult, HostStatus, Target};

use super::{process, Limits};

#[derive(Debug)]
pub struct LocalBackend {
    limits: Limits,
}

impl LocalBackend {
    pub fn new(limits: Limits) -> LocalBackend {
        LocalBackend { limits }
    }

    pub async fn run(&self, hosts: &[Target], argv: &[String]) -> Vec<HostResult> {
        join_all(hosts.iter().map(|target| async move {
            if let Err(refusal) = check_local(target) {
                return refusal;
            }
            process::run(argv, self.limits.command_timeout, self.limits.output_limit_bytes)
                .await
                .into_result(&target.name)
        }))
        .await
    }

    pub async fn copy_file(&self, hosts: &[Target], source: &Path, dest: &str, mode: u32) -> Vec<HostResult> {
        join_all(hosts.iter().map(|target| async move {
            if let Err(refusal) = check_local(target) {
                return refusal;
            }
            let started = Instant::now();
            let outcome = copy_atomically(source, Path::new(dest), mode).await;
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match outcome {
                Ok(bytes) => HostResult {
                    host: target.name.clone(),
                    status: HostStatus::Ok,
                    rc: ROption::RSome(0),
                    stdout: format!("copied {bytes} bytes to {dest}\n").into(),
                    stderr: "".into(),
                    duration_ms,
                },
                Err(err) => HostResult { duration_ms, ..HostResult::failed(&target.name, &err) },
            }
        }))
        .await
    }
}

fn check_local(target: &Target) -> Result<(), HostResult> {
    let local = target.name == "localhost"
        || target.address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || target.address == "localhost";
    if local {
        Ok(())
    } else {
        Err(HostResult::failed(
            &target.name,
            &format!("the local backend runs only on this server; {} is not a loopback address", target.address),
        ))
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
