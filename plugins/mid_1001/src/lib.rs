//! Module 1001, "View system log": the last N lines of the system log on each host.
//!
//! A site's `path` under `[modules.1001]` wins (`tail -n N <path>`). Without it each host is asked, through the
//! backend, which of these it has, and the first one is used: `/var/log/messages` (Red Hat, the original's),
//! `/var/log/syslog` (Debian and Ubuntu with rsyslog), the journal (`journalctl`, systemd hosts without a syslog
//! daemon). The output then begins with a line naming it.

use omserver_plugin_api::prelude::*;
use seed_probe::Source;

pub struct ViewSystemLog {
    hosts: Vec<Target>,
    /// The site's choice, or the candidates in order.
    sources: Sources,
}

enum Sources {
    Configured(Vec<String>),
    FirstPresent(Vec<Source>),
}

impl TaskModule for ViewSystemLog {
    fn metadata() -> Metadata {
        Metadata::new(1001, "View system log", env!("CARGO_PKG_VERSION"))
            .description("The last lines of the system log on each host: /var/log/messages, /var/log/syslog or the journal, the first it has.")
            .param(ParamSpec::integer("lines", 1, 10_000).default_integer(50).describe("How many lines"))
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let lines = request.integer("lines").ok_or("parameter lines is missing")?.to_string();
        let tail = |path: &str| vec!["tail".to_owned(), "-n".to_owned(), lines.clone(), path.to_owned()];
        let journal = |path: &str| Source::new(path, [path, "-n", &lines, "--no-pager", "--quiet"]);
        let sources = match request.setting("path") {
            Some(path) => Sources::Configured(tail(path)),
            None => Sources::FirstPresent(vec![
                Source::new("/var/log/messages", tail("/var/log/messages")),
                Source::new("/var/log/syslog", tail("/var/log/syslog")),
                journal("/usr/bin/journalctl"),
                journal("/bin/journalctl"),
            ]),
        };
        Ok(ViewSystemLog { hosts: request.hosts.into_vec(), sources })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(match &self.sources {
            Sources::Configured(argv) => ctx.run(&self.hosts, argv),
            Sources::FirstPresent(sources) => seed_probe::run_first_present(ctx, &self.hosts, sources),
        })
    }
}

export_module!(ViewSystemLog);
