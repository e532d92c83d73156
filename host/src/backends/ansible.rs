//! The `ansible` backend. Not built yet: every call fails with that message until its own change lands.

use std::path::Path;

use omserver_plugin_api::HostResult;

use super::{config::AnsibleConfig, failed, Host, Limits, Report};

#[derive(Debug)]
pub struct AnsibleBackend {
    #[allow(dead_code)]
    config: AnsibleConfig,
    #[allow(dead_code)]
    limits: Limits,
}

const NOT_YET: &str = "the ansible backend is not built yet";

impl AnsibleBackend {
    pub fn new(config: AnsibleConfig, limits: Limits, _state_dir: &Path) -> AnsibleBackend {
        AnsibleBackend { config, limits }
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
