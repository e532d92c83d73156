//! Module 1002, "View latest logins": the last N lines of the login log on each host.
//!
//! A site's `path` under `[modules.1002]` wins (`tail -n N <path>`). Without it each host is asked, through the
//! backend, which of these it has, and the first one is used: `/var/log/secure` (Red Hat, the original's),
//! `/var/log/auth.log` (Debian and Ubuntu with rsyslog), the login records in wtmp (`last`, every Linux host).
//! The output then begins with a line naming it.

use omserver_plugin_api::prelude::*;
use seed_probe::Source;

pub struct ViewLatestLogins {
    hosts: Vec<Target>,
    sources: Sources,
}

enum Sources {
    Configured(Vec<String>),
    FirstPresent(Vec<Source>),
}

impl TaskModule for ViewLatestLogins {
    fn metadata() -> Metadata {
        Metadata::new(1002, "View latest logins", env!("CARGO_PKG_VERSION"))
            .description(
                "The latest logins on each host: /var/log/secure, /var/log/auth.log or wtmp (last), the first it has.",
            )
            .param(ParamSpec::integer("lines", 1, 10_000).default_integer(50).describe("How many lines"))
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let lines = request.integer("lines").ok_or("parameter lines is missing")?.to_string();
        let tail = |path: &str| vec!["tail".to_owned(), "-n".to_owned(), lines.clone(), path.to_owned()];
        // `last` reads wtmp, which every distribution keeps; -F for full times, as the log files have them.
        let last = |path: &str| Source::new(path, [path, "-F", "-n", &lines]);
        let sources = match request.setting("path") {
            Some(path) => Sources::Configured(tail(path)),
            None => Sources::FirstPresent(vec![
                Source::new("/var/log/secure", tail("/var/log/secure")),
                Source::new("/var/log/auth.log", tail("/var/log/auth.log")),
                last("/usr/bin/last"),
                last("/bin/last"),
            ]),
        };
        Ok(ViewLatestLogins { hosts: request.hosts.into_vec(), sources })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(match &self.sources {
            Sources::Configured(argv) => ctx.run(&self.hosts, argv),
            Sources::FirstPresent(sources) => seed_probe::run_first_present(ctx, &self.hosts, sources),
        })
    }
}

export_module!(ViewLatestLogins);
