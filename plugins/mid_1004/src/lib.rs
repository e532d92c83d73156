//! Module 1004, "View kernel modules": the loaded kernel modules on each host.
//!
//! A site's `lsmod` under `[modules.1004]` wins. Without it each host is asked, through the backend, which of
//! these it has, and the first one is used: `lsmod` in /sbin, /usr/sbin, /bin or /usr/bin (kmod), else the
//! kernel's own list `/proc/modules`, else `/sys/module` (a kernel without loadable modules still lists its
//! built-in ones there). The output then begins with a line naming it.

use omserver_plugin_api::prelude::*;
use seed_probe::Source;

pub struct ViewKernelModules {
    hosts: Vec<Target>,
    sources: Sources,
}

enum Sources {
    Configured(String),
    FirstPresent(Vec<Source>),
}

impl TaskModule for ViewKernelModules {
    fn metadata() -> Metadata {
        Metadata::new(1004, "View kernel modules", env!("CARGO_PKG_VERSION")).description(
            "The loaded kernel modules on each host: lsmod, /proc/modules or /sys/module, the first it has.",
        )
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let sources = match request.setting("lsmod") {
            Some(lsmod) => Sources::Configured(lsmod.to_owned()),
            None => {
                let lsmod = |path: &str| Source::new(path, [path]);
                Sources::FirstPresent(vec![
                    lsmod("/sbin/lsmod"),
                    lsmod("/usr/sbin/lsmod"),
                    lsmod("/bin/lsmod"),
                    lsmod("/usr/bin/lsmod"),
                    Source::new("/proc/modules", ["cat", "/proc/modules"]),
                    Source::new("/sys/module", ["ls", "-1", "/sys/module"]),
                ])
            }
        };
        Ok(ViewKernelModules { hosts: request.hosts.into_vec(), sources })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(match &self.sources {
            Sources::Configured(lsmod) => ctx.run(&self.hosts, &[lsmod]),
            Sources::FirstPresent(sources) => seed_probe::run_first_present(ctx, &self.hosts, sources),
        })
    }
}

export_module!(ViewKernelModules);
