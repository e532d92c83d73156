//! Module 1002, "View latest logins": the last N lines of the login log on each host (`tail -n N <path>`).
//! The path defaults to the original's `/var/log/secure`; a site sets `path` under `[modules.1002]`.

use omserver_plugin_api::prelude::*;

pub struct ViewLatestLogins {
    hosts: Vec<Target>,
    argv: Vec<String>,
}

impl TaskModule for ViewLatestLogins {
    fn metadata() -> Metadata {
        Metadata::new(1002, "View latest logins", env!("CARGO_PKG_VERSION"))
            .description("The last lines of the login log on each host.")
            .param(ParamSpec::integer("lines", 1, 10_000).default_integer(50).describe("How many lines"))
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let lines = request.integer("lines").ok_or("parameter lines is missing")?;
        let path = request.setting_or("path", "/var/log/secure");
        let argv = vec!["tail".to_owned(), "-n".to_owned(), lines.to_string(), path.to_owned()];
        Ok(ViewLatestLogins { hosts: request.hosts.into_vec(), argv })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(ctx.run(&self.hosts, &self.argv))
    }
}

export_module!(ViewLatestLogins);
