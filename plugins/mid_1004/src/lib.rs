//! Module 1004, "View kernel modules": `/sbin/lsmod` on each host.

use omserver_plugin_api::prelude::*;

pub struct ViewKernelModules {
    hosts: Vec<Target>,
    lsmod: String,
}

impl TaskModule for ViewKernelModules {
    fn metadata() -> Metadata {
        Metadata::new(1004, "View kernel modules", env!("CARGO_PKG_VERSION"))
            .description("The loaded kernel modules on each host (lsmod).")
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let lsmod = request.setting_or("lsmod", "/sbin/lsmod").to_owned();
        Ok(ViewKernelModules { hosts: request.hosts.into_vec(), lsmod })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(ctx.run(&self.hosts, &[&self.lsmod]))
    }
}

export_module!(ViewKernelModules);
