//! The agent's configuration: one TOML file overlaid by `OMAUDIT_*` environment variables.
//!
//! ```toml
//! # /etc/omaudit/agent.toml (mode 0644: every user's prompt runs the agent and must read it)
//! server = "https://omserver.example:8443"   # base URL; events go to {server}/api/audit/events
//! token = "…"                                 # this host's token, bound to this host by the server
//! # ip = "192.0.2.10"                         # default: local address of the route to the server
//! # ca_file = "/etc/omaudit/ca.pem"          # extra trust anchor for https (default: Mozilla roots)
//! # spool_dir = "/var/spool/omaudit"         # created 1777 when missing, like /tmp
//! # log_file = "/var/spool/omaudit/{uid}.log" # `{uid}` is replaced; default: <spool_dir>/<uid>.log
//! # spool_max_events = 100000
//! # batch_max = 500
//! # connect_timeout_ms = 2000
//! # read_timeout_ms = 5000
//! # Only `omaudit-agent watch` (kernel execve capture) reads these three:
//! # manage_rules = false                     # true: enable auditing and install/remove our own execve rules
//! # ignore_programs = ["/usr/bin/sleep"]     # executables whose execs are not reported (exact paths)
//! # ignore_users = ["nagios"]                # login users (names or uids) whose execs are not reported
//! ```
//!
//! Environment overlay (each wins over the file): `OMAUDIT_CONFIG` (the file; empty = no file), `OMAUDIT_SERVER`,
//! `OMAUDIT_TOKEN`, `OMAUDIT_IP`, `OMAUDIT_CA_FILE`, `OMAUDIT_SPOOL_DIR`, `OMAUDIT_LOG_DIR` (log to
//! `<dir>/<uid>.log`), `OMAUDIT_LOG_FILE`, `OMAUDIT_SPOOL_MAX_EVENTS`, `OMAUDIT_BATCH_MAX`,
//! `OMAUDIT_CONNECT_TIMEOUT_MS`, `OMAUDIT_READ_TIMEOUT_MS`, `OMAUDIT_MANAGE_RULES` (`true`/`false`/`1`/`0`),
//! `OMAUDIT_IGNORE_PROGRAMS` and `OMAUDIT_IGNORE_USERS` (comma-separated). The profile snippet makes them read-only in login
//! shells so an audited user cannot point their own events elsewhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Where the file is looked for when `OMAUDIT_CONFIG` is not set. Missing is fine: defaults apply.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/omaudit/agent.toml";
/// The default spool directory.
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/omaudit";

/// Every setting, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// Base URL (`http://…` or `https://…`, no trailing slash). `None`: spool only.
    pub server: Option<String>,
    /// Bearer token. `None`: spool only.
    pub token: Option<String>,
    /// Host address to report; `None`: detected by the flusher.
    pub ip: Option<String>,
    /// PEM file with the CA(s) to trust for https instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Spool directory shared by all users (sticky, like /tmp).
    pub spool_dir: PathBuf,
    /// Log file pattern (`{uid}` replaced); `None`: `<spool_dir>/<uid>.log`.
    pub log_file: Option<String>,
    /// Events kept per spool before new ones are counted as lost (and reported as a gap).
    pub spool_max_events: u64,
    /// Events per request.
    pub batch_max: usize,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed to send the request and receive the whole answer.
    pub read_timeout: Duration,
    /// `watch`: enable auditing and install the agent's execve rules at start, remove exactly them at stop.
    pub manage_rules: bool,
    /// `watch`: executables (exact paths) whose execs are not reported.
    pub ignore_programs: Vec<String>,
    /// `watch`: login users (names, or uids as digits) whose execs are not reported.
    pub ignore_users: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            file: None,
            server: None,
            token: None,
            ip: None,
            ca_file: None,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            log_file: None,
            spool_max_events: 100_000,
            batch_max: 500,
            connect_timeout: Duration::from_millis(2_000),
            read_timeout: Duration::from_millis(5_000),
            manage_rules: false,
            ignore_programs: Vec::new(),
            ignore_users: Vec::new(),
        }
    }
}

/// The TOML file: every key optional, unknown keys refused (a typo must not silently disable delivery).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    token: Option<String>,
    ip: Option<String>,
    ca_file: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    log_file: Option<String>,
    spool_max_events: Option<u64>,
    batch_max: Option<usize>,
    connect_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    manage_rules: Option<bool>,
    ignore_programs: Option<Vec<String>>,
    ignore_users: Option<Vec<String>>,
}

impl Config {
    /// Loads the file named by `OMAUDIT_CONFIG` (or the default one) and overlays the process environment.
    pub fn load() -> Result<Config> {
        Config::load_with(|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with an injectable environment.
    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let (path, required) = match env("OMAUDIT_CONFIG") {
            Some(p) if p.is_empty() => (None, false),
            Some(p) => (Some(PathBuf::from(p)), true),
            None => (Some(PathBuf::from(DEFAULT_CONFIG_FILE)), false),
        };
        let mut config = Config::default();
        if let Some(path) = path {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let file: FileConfig = toml::from_str(&text)
                        .map_err(|e| Error::Config { path: path.clone(), message: toml_message(&e, &text) })?;
                    config.apply_file(file, &path)?;
                    config.file = Some(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(e) => return Err(Error::Config { path, message: e.to_string() }),
            }
        }
        config.apply_env(&env)?;
        Ok(config)
    }

    /// Defaults plus the environment, ignoring the file: where the prompt still spools when the file is broken.
    pub fn fallback_with(env: impl Fn(&str) -> Option<String>) -> Config {
        let mut config = Config::default();
        if config.apply_env(&env).is_err() {
            // A bad variable as well: plain defaults, but keep a spool directory override if it was given.
            config = Config::default();
            if let Some(dir) = env("OMAUDIT_SPOOL_DIR").filter(|d| !d.is_empty()) {
                config.spool_dir = PathBuf::from(dir);
            }
        }
        config
    }

    /// The server URL and token, or [`Error::NotConfigured`].
    pub fn endpoint(&self) -> Result<(&str, &str)> {
        let server = self.server.as_deref().ok_or(Error::NotConfigured("server"))?;
        let token = self.token.as_deref().ok_or(Error::NotConfigured("token"))?;
        Ok((server, token))
    }

    /// The log file of this uid.
    pub fn log_path(&self, uid: u32) -> PathBuf {
        match &self.log_file {
            Some(pattern) => PathBuf::from(pattern.replace("{uid}", &uid.to_string())),
            None => self.spool_dir.join(format!("{uid}.log")),
        }
    }

    fn apply_file(&mut self, file: FileConfig, path: &Path) -> Result<()> {
        let bad = |message: String| Error::Config { path: path.to_owned(), message };
        if let Some(server) = file.server {
            self.server = normalise_server(&server).map_err(bad)?;
        }
        if let Some(token) = file.token {
            self.token = non_empty(token);
        }
        if let Some(ip) = file.ip {
            self.ip = non_empty(ip);
        }
        if let Some(ca) = file.ca_file {
            self.ca_file = Some(ca);
        }
        if let Some(dir) = file.spool_dir {
            self.spool_dir = dir;
        }
        if let Some(log) = file.log_file {
            self.log_file = non_empty(log);
        }
        if let Some(n) = file.spool_max_events {
            self.spool_max_events = positive(n, "spool_max_events").map_err(bad)?;
        }
        if let Some(n) = file.batch_max {
            self.batch_max = positive(n as u64, "batch_max").map_err(bad)? as usize;
        }
        if let Some(ms) = file.connect_timeout_ms {
            self.connect_timeout = Duration::from_millis(positive(ms, "connect_timeout_ms").map_err(bad)?);
        }
        if let Some(ms) = file.read_timeout_ms {
            self.read_timeout = Duration::from_millis(positive(ms, "read_timeout_ms").map_err(bad)?);
        }
        if let Some(manage) = file.manage_rules {
            self.manage_rules = manage;
        }
        if let Some(list) = file.ignore_programs {
            self.ignore_programs = list.into_iter().filter_map(non_empty).collect();
        }
        if let Some(list) = file.ignore_users {
            self.ignore_users = list.into_iter().filter_map(non_empty).collect();
        }
        Ok(())
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<()> {
        let bad = |name: &str, message: String| Error::Config { path: PathBuf::from(format!("${name}")), message };
        let number = |name: &str| -> Result<Option<u64>> {
            match env(name) {
                None => Ok(None),
                Some(v) => {
                    let n = v.trim().parse::<u64>().map_err(|e| bad(name, format!("{v:?}: {e}")))?;
                    positive(n, name).map(Some).map_err(|m| bad(name, m))
                }
            }
        };
        if let Some(server) = env("OMAUDIT_SERVER") {
            self.server = normalise_server(&server).map_err(|m| bad("OMAUDIT_SERVER", m))?;
        }
        if let Some(token) = env("OMAUDIT_TOKEN") {
            self.token = non_empty(token);
        }
        if let Some(ip) = env("OMAUDIT_IP") {
            self.ip = non_empty(ip);
        }
        if let Some(ca) = env("OMAUDIT_CA_FILE") {
            self.ca_file = non_empty(ca).map(PathBuf::from);
        }
        if let Some(dir) = env("OMAUDIT_SPOOL_DIR").and_then(non_empty) {
            self.spool_dir = PathBuf::from(dir);
        }
        if let Some(dir) = env("OMAUDIT_LOG_DIR").and_then(non_empty) {
            self.log_file = Some(format!("{}/{{uid}}.log", dir.trim_end_matches('/')));
        }
        if let Some(file) = env("OMAUDIT_LOG_FILE").and_then(non_empty) {
            self.log_file = Some(file);
        }
        if let Some(n) = number("OMAUDIT_SPOOL_MAX_EVENTS")? {
            self.spool_max_events = n;
        }
        if let Some(n) = number("OMAUDIT_BATCH_MAX")? {
            self.batch_max = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(ms) = number("OMAUDIT_CONNECT_TIMEOUT_MS")? {
            self.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("OMAUDIT_READ_TIMEOUT_MS")? {
            self.read_timeout = Duration::from_millis(ms);
        }
        if let Some(v) = env("OMAUDIT_MANAGE_RULES") {
            self.manage_rules = match v.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => return Err(bad("OMAUDIT_MANAGE_RULES", format!("{other:?} is not true or false"))),
            };
        }
        let list = |v: String| v.split(',').map(str::to_owned).filter_map(non_empty).collect::<Vec<_>>();
        if let Some(v) = env("OMAUDIT_IGNORE_PROGRAMS") {
            self.ignore_programs = list(v);
        }
        if let Some(v) = env("OMAUDIT_IGNORE_USERS") {
            self.ignore_users = list(v);
        }
        Ok(())
    }
}

/// The parser's message on one line, with the line number it points at.
fn toml_message(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match err.span() {
        Some(span) => format!("line {}: {message}", text[..span.start.min(text.len())].matches('\n').count() + 1),
        None => message,
    }
}

fn non_empty(s: String) -> Option<String> {
    let trimmed = s.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn positive(n: u64, name: &str) -> std::result::Result<u64, String> {
    if n == 0 {
        Err(format!("{name} must be at least 1"))
    } else {
        Ok(n)
    }
}

/// `""` → not configured; otherwise it must be an http(s) URL; a trailing `/` is dropped.
fn normalise_server(raw: &str) -> std::result::Result<Option<String>, String> {
    let s = raw.trim().trim_end_matches('/');
    if s.is_empty() {
        return Ok(None);
    }
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(Some(s.to_owned())),
        _ => Err(format!("server {raw:?} is not an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn write_config(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_string_lossy().into_owned();
        (dir, path)
    }

    #[test]
    fn file_then_environment() {
        let (_dir, path) = write_config(
            "server = \"http://127.0.0.1:8080/\"\ntoken = \"t1\"\nbatch_max = 7\nlog_file = \"/tmp/x-{uid}.log\"\n",
        );
        let config = Config::load_with(env_of(&[
            ("OMAUDIT_CONFIG", &path),
            ("OMAUDIT_TOKEN", "t2"),
            ("OMAUDIT_SPOOL_DIR", "/tmp/spool"),
            ("OMAUDIT_READ_TIMEOUT_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(config.server.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(config.token.as_deref(), Some("t2"));
        assert_eq!(config.batch_max, 7);
        assert_eq!(config.spool_dir, PathBuf::from("/tmp/spool"));
        assert_eq!(config.read_timeout, Duration::from_millis(250));
        assert_eq!(config.connect_timeout, Duration::from_millis(2000));
        assert_eq!(config.log_path(1000), PathBuf::from("/tmp/x-1000.log"));
    }

    #[test]
    fn defaults_without_a_file() {
        let config = Config::load_with(env_of(&[("OMAUDIT_CONFIG", "")])).unwrap();
        assert_eq!(config, Config::default());
        assert!(matches!(config.endpoint(), Err(Error::NotConfigured("server"))));
        assert_eq!(config.log_path(0), PathBuf::from("/var/spool/omaudit/0.log"));
        let config = Config::load_with(env_of(&[("OMAUDIT_CONFIG", ""), ("OMAUDIT_LOG_DIR", "/var/log/om/")])).unwrap();
        assert_eq!(config.log_path(5), PathBuf::from("/var/log/om/5.log"));
    }

    #[test]
    fn bad_files_and_values_are_errors() {
        let (_dir, path) = write_config("server = \"http://x\"\ntokn = \"typo\"\n");
        let err = Config::load_with(env_of(&[("OMAUDIT_CONFIG", &path)])).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let (_dir2, path2) = write_config("server = \"ftp://x\"\n");
        assert!(Config::load_with(env_of(&[("OMAUDIT_CONFIG", &path2)])).is_err());
        let (_dir3, path3) = write_config("batch_max = 0\n");
        assert!(Config::load_with(env_of(&[("OMAUDIT_CONFIG", &path3)])).is_err());
        assert!(Config::load_with(env_of(&[("OMAUDIT_CONFIG", "/nonexistent/agent.toml")])).is_err());
        assert!(Config::load_with(env_of(&[("OMAUDIT_CONFIG", ""), ("OMAUDIT_BATCH_MAX", "many")])).is_err());
    }

    #[test]
    fn watch_settings_from_file_and_environment() {
        let (_dir, path) = write_config(
            "manage_rules = true\nignore_programs = [\"/usr/bin/sleep\", \" \"]\nignore_users = [\"nagios\"]\n",
        );
        let config = Config::load_with(env_of(&[("OMAUDIT_CONFIG", &path)])).unwrap();
        assert!(config.manage_rules);
        assert_eq!(config.ignore_programs, vec!["/usr/bin/sleep".to_owned()]);
        assert_eq!(config.ignore_users, vec!["nagios".to_owned()]);
        let config = Config::load_with(env_of(&[
            ("OMAUDIT_CONFIG", &path),
            ("OMAUDIT_MANAGE_RULES", "0"),
            ("OMAUDIT_IGNORE_USERS", "alice, 1001,,"),
        ]))
        .unwrap();
        assert!(!config.manage_rules);
        assert_eq!(config.ignore_users, vec!["alice".to_owned(), "1001".to_owned()]);
        let err = Config::load_with(env_of(&[("OMAUDIT_CONFIG", ""), ("OMAUDIT_MANAGE_RULES", "maybe")]));
        assert!(err.is_err());
    }

    #[test]
    fn fallback_keeps_the_spool_dir() {
        let config = Config::fallback_with(env_of(&[("OMAUDIT_SPOOL_DIR", "/tmp/s"), ("OMAUDIT_BATCH_MAX", "x")]));
        assert_eq!(config.spool_dir, PathBuf::from("/tmp/s"));
        assert_eq!(config.batch_max, 500);
    }
}
