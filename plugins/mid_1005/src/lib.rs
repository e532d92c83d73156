//! Module 1005, "Sync app file": copies a file from the server's file store to a fixed destination on each host,
//! then runs a follow-up command where the copy succeeded (e.g. `sysctl -p` after `/etc/sysctl.conf`).
//!
//! The key picks the file; nothing from the request becomes a path or a command. A site overrides, per key,
//! `source.<key>` (name in the server's file store), `dest.<key>` (absolute path on the host) and `then.<key>`
//! (the follow-up, split on whitespace; empty for none) under `[modules.1005]`.

use omserver_plugin_api::prelude::*;

/// key, source name in the file store, destination, follow-up command (the original's table).
const FILES: &[(&str, &str, &str, &str)] = &[
    ("nginx", "nginx", "/etc/init.d/nginx", "chmod u+x /etc/init.d/nginx"),
    ("haproxy", "haproxy.cfg", "/usr/local/haproxy/haproxy.cfg", "ls -l /usr/local/haproxy/haproxy.cfg"),
    ("syslog", "syslog.conf", "/etc/syslog.conf", "/etc/init.d/syslog restart"),
    ("nginx_config", "nginx.conf", "/usr/local/nginx/conf/nginx.conf", "ls -l /usr/local/nginx/conf/nginx.conf"),
    ("sysctl", "sysctl.conf", "/etc/sysctl.conf", "sysctl -p"),
    ("resin", "resin.conf", "/usr/local/resin/conf/resin.conf", ""),
    ("resinhttpd", "httpd.sh", "/usr/local/resin/bin/httpd.sh", "chmod u+x /usr/local/resin/bin/httpd.sh"),
    ("resinjar", "resin.jar", "/usr/local/resin/lib/resin.jar", ""),
];

pub struct SyncAppFile {
    hosts: Vec<Target>,
    source: String,
    dest: String,
    then: Vec<String>,
}

impl TaskModule for SyncAppFile {
    fn metadata() -> Metadata {
        let keys: Vec<&str> = FILES.iter().map(|f| f.0).collect();
        Metadata::new(1005, "Sync app file", env!("CARGO_PKG_VERSION"))
            .description("Copies a configuration file from the server to each host, then runs its follow-up.")
            .param(ParamSpec::choice("file", &keys).describe("Which file to sync"))
    }

    fn initialise(request: InitRequest) -> Result<Self, String> {
        let key = request.text("file").ok_or("parameter file is missing")?;
        let &(_, source, dest, then) =
            FILES.iter().find(|f| f.0 == key).ok_or_else(|| format!("unknown file key {key}"))?;
        let source = request.setting_or(&format!("source.{key}"), source).to_owned();
        let dest = request.setting_or(&format!("dest.{key}"), dest).to_owned();
        if !dest.starts_with('/') {
            return Err(format!("dest.{key} must be an absolute path, not {dest:?}"));
        }
        let then = request.setting_or(&format!("then.{key}"), then).split_whitespace().map(str::to_owned).collect();
        Ok(SyncAppFile { hosts: request.hosts.into_vec(), source, dest, then })
    }

    fn run(&mut self, ctx: &Context<'_>) -> Result<Vec<HostResult>, String> {
        let copied = ctx.copy_file(&self.hosts, &self.source, &self.dest, 0o644);
        if self.then.is_empty() || ctx.is_cancelled() {
            return Ok(copied);
        }
        let ok_hosts: Vec<Target> = self
            .hosts
            .iter()
            .zip(&copied)
            .filter(|(_, result)| result.is_ok())
            .map(|(target, _)| target.clone())
            .collect();
        let mut followed = ctx.run(&ok_hosts, &self.then).into_iter();
        // One result per host: the copy's failure, or the follow-up's outcome with the copy's report in front.
        Ok(copied
            .into_iter()
            .map(|copy| {
                if !copy.is_ok() {
                    return copy;
                }
                match followed.next() {
                    Some(mut then) => {
                        then.stdout = format!("{}{}", copy.stdout, then.stdout).into();
                        then.duration_ms += copy.duration_ms;
                        then
                    }
                    None => copy,
                }
            })
            .collect())
    }
}

export_module!(SyncAppFile);
