//! Module 1006, "View app config": prints an application's configuration file on each host (`cat <path>`).
//!
//! The key picks the file from the original's table; a site overrides a path with `path.<key>` under
//! `[modules.1006]`. `limits` shows the open-file limit instead (`ulimit -n`, a shell builtin, run as a fixed
//! `sh -c` string: nothing from the request reaches that shell).

use omserver_plugin_api::prelude::*;

const FILES: &[(&str, &str)] = &[
    ("nginx", "/etc/nginx/nginx.conf"),
    ("haproxy", "/usr/local/haproxy/haproxy.cfg"),
    ("apache", "/usr/local/apache/conf/httpd.conf"),
    ("mysql", "/etc/my.cnf"),
    ("snmp", "/usr/local/etc/snmpd.conf"),
    ("lighttpd", "/usr/local/lighttpd/etc/lighttpd.conf"),
    ("squid", "/usr/local/squid/etc/squid.conf"),
    ("firewall", "/etc/firewall.sh"),
    ("resin", "/usr/local/resin/conf/resin.conf"),
];

pub struct ViewAppConfig {
    hosts: Vec<Target>,
    argv: Vec<String>,
}

impl TaskModule for ViewAppConfig {
    fn metadata() -> Metadata {
        let mut keys: Vec<&str> = FILES.iter().map(|f| f.0).collect();
        keys.push("limits");
        Metadata::new(1006, "View app config", env!("CARGO_PKG_VERSION"))
            .description("Shows an application's configuration file on each host.")
            .param(ParamSpec::choice("service", &keys).describe("Which application"))
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let key = request.text("service").ok_or("parameter service is missing")?;
        let argv = if key == "limits" {
            vec!["sh".to_owned(), "-c".to_owned(), "ulimit -n".to_owned()]
        } else {
            let &(_, path) = FILES.iter().find(|f| f.0 == key).ok_or_else(|| format!("unknown service {key}"))?;
            vec!["cat".to_owned(), request.setting_or(&format!("path.{key}"), path).to_owned()]
        };
        Ok(ViewAppConfig { hosts: request.hosts.into_vec(), argv })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        Ok(ctx.run(&self.hosts, &self.argv))
    }
}

export_module!(ViewAppConfig);
