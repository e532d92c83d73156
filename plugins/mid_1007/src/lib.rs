//! Module 1007, "Restart service": `/etc/init.d/<service> restart` on each host.
//!
//! The key picks the service from the original's list (apache runs `httpd`, snmp runs `snmpd`); a site replaces
//! the whole command per key with `command.<key>` under `[modules.1007]`, e.g. `systemctl restart nginx`.

use omserver_plugin_api::prelude::*;

const SERVICES: &[(&str, &str)] = &[
    ("resin", "resin"),
    ("nginx", "nginx"),
    ("haproxy", "haproxy"),
    ("mysql", "mysql"),
    ("lighttpd", "lighttpd"),
    ("apache", "httpd"),
    ("snmp", "snmpd"),
    ("squid", "squid"),
];

pub struct RestartService {
    hosts: Vec<Target>,
    argv: Vec<String>,
}

impl TaskModule for RestartService {
    fn metadata() -> Metadata {
        let keys: Vec<&str> = SERVICES.iter().map(|s| s.0).collect();
        Metadata::new(1007, "Restart service", env!("CARGO_PKG_VERSION"))
            .description("Restarts a service on each host through its init script.")
            .param(ParamSpec::choice("service", &keys).describe("Which service"))
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let key = request.text("service").ok_or("parameter service is missing")?;
        let &(_, script) = SERVICES.iter().find(|s| s.0 == key).ok_or_else(|| format!("unknown service {key}"))?;
        let default = format!("/etc/init.d/{script} restart");
        let argv =
            request.setting_or(&format!("command.{key}"), &default).split_whitespace().map(str::to_owned).collect();
        Ok(RestartService { hosts: request.hosts.into_vec(), argv })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(ctx.run(&self.hosts, &self.argv))
    }
}

export_module!(RestartService);
