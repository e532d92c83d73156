//! Module 1003, "View OS version": the first line of `/etc/issue` on each host (`head -n 1 /etc/issue`).

use omserver_plugin_api::prelude::*;

pub struct ViewOsVersion {
    hosts: Vec<Target>,
    path: String,
}

impl TaskModule for ViewOsVersion {
    fn metadata() -> Metadata {
        Metadata::new(1003, "View OS version", env!("CARGO_PKG_VERSION"))
            .description("The first line of /etc/issue on each host.")
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let path = request.setting_or("path", "/etc/issue").to_owned();
        Ok(ViewOsVersion { hosts: request.hosts.into_vec(), path })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(ctx.run(&self.hosts, &["head", "-n", "1", &self.path]))
    }
}

export_module!(ViewOsVersion);
