//! The `saltstack` backend. Not built yet: every call fails with that message until its own change lands.

use std::path::Path;

use omserver_plugin_api::HostResult;

use super::{config::SaltConfig, failed, Host, Limits, Report};

#[derive(Debug)]
pub struct SaltBackend {
    #[allow(dead_code)]
    config: SaltConfig,
    #[allow(dead_code)]
    limits: Limits,
}

const NOT_YET: &str = "the saltstack backend is not built yet";

impl SaltBackend {
    pub fn new(config: SaltConfig, limits: Limits) -> SaltBackend {
        SaltBackend { config, limits }
    }

    pub async fn run(&self, hosts: &[Host], _argv: &[String], report: &Report) -> Vec<HostResult> {
        hosts.iter().map(|h| report.done(failed(&h.name, NOT_YET, None))).collect()
    }

    pub async fn copy_file(
        &self,
        hosts: &[Host],
        _source: &Path,
        _dest: &str,
        _mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        hosts.iter().map(|h| report.done(failed(&h.name, NOT_YET, None))).collect()
    }

    pub async fn check(&self) -> Result<String, String> {
        Err(NOT_YET.to_owned())
    }
}
