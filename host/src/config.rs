//! The server's configuration: one struct, loaded from a TOML file with an environment overlay.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `OMSERVER_<KEY>` variables (nested keys with `__`,
//! e.g. `OMSERVER_MODULES__1006__PATH.NGINX`), and the original's bare `AUTO_PLATFORM` and `SECRET_KEY`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) for HTTPS. With `tls_key_file`, `listen` serves HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// `sqlite://file.db` (the default), `mysql://…` (MariaDB/MySQL) or `postgres://…`.
    pub database_url: String,
    /// Connections each server keeps to MariaDB or PostgreSQL at most (SQLite is one file, one process). Servers
    /// of one database hold up to this many each: keep their sum within the database's `max_connections`.
    pub database_connections: u32,
    /// The drop-in directory for task-module libraries, watched while the server runs.
    pub plugins_dir: PathBuf,
    /// Where the server keeps its own state: private copies of loaded libraries, the generated secret key.
    pub state_dir: PathBuf,
    /// The file store that modules copy from (module 1005's sources). Modules name files relative to it.
    pub files_dir: PathBuf,
    /// The default execution backend: `local` (the default), `ssh`, `ansible`, `saltstack` or `func`. A job may
    /// name another available one.
    pub auto_platform: String,
    /// `[backends.<name>]`: a backend other than `local` is available when its section exists.
    pub backends: crate::backends::BackendsConfig,
    /// Key for hashing API tokens. When unset, one is generated into `state_dir/secret_key` on first start.
    pub secret_key: Option<String>,
    /// A job that has not finished after this long is stopped and fails with "timed out".
    pub job_timeout_secs: u64,
    /// One command on one host may run this long.
    pub command_timeout_secs: u64,
    /// How many module runs may execute at once (each holds a blocking thread).
    pub max_concurrent_jobs: usize,
    /// Each of stdout and stderr is kept up to this many bytes per host; the rest is cut with a marker.
    pub output_limit_bytes: usize,
    /// Audit ingest settings (`[audit]`).
    pub audit: crate::audit::AuditConfig,
    /// The `[notify]` section: retries, rates, storm windows, periodic checks.
    pub notify: crate::notify::NotifyConfig,
    /// The console's address as people reach it (`https://omserver.example.org`), for links in notifications;
    /// `http(s)://<listen>` when unset.
    pub public_url: Option<String>,
    /// Per-module site settings, e.g. `[modules.1006] "path.nginx" = "/etc/nginx/nginx.conf"`.
    pub modules: BTreeMap<String, BTreeMap<String, String>>,
    /// Address-space limit of each module worker (RLIMIT_AS), in MiB.
    pub module_memory_limit_mb: u64,
    /// CPU-time limit of each module worker (RLIMIT_CPU), in seconds. A worker that has used half of it is not
    /// given another job, so every run has at least half.
    pub module_cpu_limit_secs: u64,
    /// Open-file limit of each module worker (RLIMIT_NOFILE).
    pub module_open_files: u64,
    /// Run module workers as this user and its group (the server must run as root). They then cannot read the
    /// database, `state_dir`, the secret key or this configuration.
    pub module_user: Option<String>,
    /// Loading a new library in a probe worker must finish within this.
    pub module_probe_timeout_secs: u64,
    /// The `omserver` binary started as `omserver worker`; by default the running executable. Only programs
    /// that run the server in their own process (benchmarks) need to set it.
    pub module_worker_program: Option<PathBuf>,
    /// The file this was loaded from, if any (not a key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// A console session unused this long ends (its `last_seen_at` is written at most once a minute).
    pub session_idle_timeout_secs: u64,
    /// A console session ends this long after its login, however busy.
    pub session_max_age_secs: u64,
    /// This server's name among the servers of one database (`GET /api/cluster`, the server a job runs on): letters,
    /// digits, `.`, `_` and `-`, at most 128. The machine's host name when unset.
    pub node_name: Option<String>,
    /// How the other servers and their admins reach this one (`https://omserver-2.example.org:8080`), shown in
    /// the cluster view; `http(s)://<listen>` when unset.
    pub node_address: Option<String>,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Set it when the console is reached over HTTPS,
    /// directly or through a TLS-terminating proxy; the browser then also refuses the cookie over plain HTTP.
    pub secure_cookies: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert_file: None,
            tls_key_file: None,
            database_url: "sqlite://omserver.db".to_owned(),
            database_connections: crate::store::DEFAULT_CONNECTIONS,
            plugins_dir: PathBuf::from("plugins.d"),
            state_dir: PathBuf::from(".omserver"),
            files_dir: PathBuf::from("files"),
            auto_platform: "local".to_owned(),
            backends: crate::backends::BackendsConfig::default(),
            secret_key: None,
            job_timeout_secs: 300,
            command_timeout_secs: 120,
            max_concurrent_jobs: 8,
            output_limit_bytes: 1024 * 1024,
            audit: crate::audit::AuditConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            public_url: None,
            modules: BTreeMap::new(),
            module_memory_limit_mb: 1024,
            module_cpu_limit_secs: 600,
            module_open_files: 256,
            module_user: None,
            module_probe_timeout_secs: 10,
            module_worker_program: None,
            source: None,
            session_idle_timeout_secs: 1800,
            session_max_age_secs: 12 * 3600,
            secure_cookies: false,
            node_name: None,
            node_address: None,
        }
    }
}

/// The top-level keys, for filtering the environment.
const KEYS: &[&str] = &[
    "listen",
    "tls_cert_file",
    "tls_key_file",
    "database_url",
    "database_connections",
    "plugins_dir",
    "state_dir",
    "files_dir",
    "auto_platform",
    "backends",
    "secret_key",
    "job_timeout_secs",
    "command_timeout_secs",
    "max_concurrent_jobs",
    "output_limit_bytes",
    "audit",
    "notify",
    "public_url",
    "modules",
    "module_memory_limit_mb",
    "module_cpu_limit_secs",
    "module_open_files",
    "module_user",
    "module_probe_timeout_secs",
    "module_worker_program",
    "session_idle_timeout_secs",
    "session_max_age_secs",
    "secure_cookies",
    "node_name",
    "node_address",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The certificate and key files of HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Loads defaults, then `file` (when given), then the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            // Only known keys: an unrelated OMSERVER_* variable must not make start-up fail.
            .merge(Env::prefixed("OMSERVER_").split("__").filter(|key| {
                let top = key.as_str().split('.').next().unwrap_or_default();
                KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
            }))
            .merge(Env::raw().only(&["AUTO_PLATFORM", "SECRET_KEY"]));
        let mut config: Config = figment.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.source = file.map(std::path::Path::to_path_buf);
        config.tls()?;
        if let Some(url) = &config.public_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("public_url {url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(ConfigError::Invalid(format!("public_url {url:?} must be an http(s) URL with a host")));
            }
        }
        config.node_name()?;
        if !(crate::store::MIN_CONNECTIONS..=1000).contains(&config.database_connections) {
            return Err(ConfigError::Invalid(format!(
                "database_connections {} must be {} to 1000: two listen for other servers' signals, the audit \
                 writer holds two through each group, and requests need the others",
                config.database_connections,
                crate::store::MIN_CONNECTIONS
            )));
        }
        Ok(config)
    }

    /// `node_name`, or the machine's host name; a name that could not be shown or matched as it is (spaces,
    /// slashes, more than 128 bytes) is an error.
    pub fn node_name(&self) -> Result<String, ConfigError> {
        let name = match &self.node_name {
            Some(name) => name.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|n| n.trim().to_owned())
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "omserver".to_owned()),
        };
        let fits = !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !fits {
            return Err(ConfigError::Invalid(format!(
                "node_name {name:?} must be 1 to 128 letters, digits, '.', '_' or '-'"
            )));
        }
        Ok(name)
    }

    /// The HTTPS files when both keys are set, `None` when neither is; one without the other is an error (a
    /// server meant to be HTTPS must not come up as plain HTTP).
    pub fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone() })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::Invalid("tls_cert_file is set but tls_key_file is not".into())),
            (None, Some(_)) => Err(ConfigError::Invalid("tls_key_file is set but tls_cert_file is not".into())),
        }
    }

    /// `https` when TLS is configured, else `http`.
    pub fn url_scheme(&self) -> &'static str {
        if matches!(self.tls(), Ok(Some(_))) {
            "https"
        } else {
            "http"
        }
    }

    /// The base of links to the console.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}://{}", self.url_scheme(), self.listen),
        }
    }

    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_secs)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    /// How long console sessions live.
    pub fn sessions(&self) -> crate::users::SessionSettings {
        crate::users::SessionSettings {
            idle_timeout: Duration::from_secs(self.session_idle_timeout_secs),
            max_age: Duration::from_secs(self.session_max_age_secs),
        }
    }

    /// Where audit retention writes its archive files (`[audit] archive_dir`, else under `state_dir`).
    pub fn audit_archive_dir(&self) -> PathBuf {
        self.audit.archive_dir.clone().unwrap_or_else(|| self.state_dir.join("audit-archive"))
    }

    /// The site settings for one module, as key/value pairs.
    pub fn module_settings(&self, module_id: u32) -> Vec<(String, String)> {
        self.modules
            .get(&module_id.to_string())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
// figment::Jail fixes the closure's error type, a large one; nothing to box here.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "omserver.toml",
                "listen = \"127.0.0.1:9000\"\nauto_platform = \"ssh\"\n[modules.1006]\n\"path.nginx\" = \"/srv/nginx.conf\"\n",
            )?;
            jail.set_env("OMSERVER_DATABASE_URL", "postgres://127.0.0.1/test");
            jail.set_env("AUTO_PLATFORM", "local");
            let config = Config::load(Some("omserver.toml".as_ref())).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 9000);
            assert_eq!(config.database_url, "postgres://127.0.0.1/test");
            assert_eq!(config.auto_platform, "local", "the bare AUTO_PLATFORM wins over the file");
            assert_eq!(config.module_settings(1006), vec![("path.nginx".to_owned(), "/srv/nginx.conf".to_owned())]);
            Ok(())
        });
    }

    #[test]
    fn database_connections_are_bounded() {
        figment::Jail::expect_with(|jail| {
            for (value, ok) in [(5, false), (6, true), (1000, true), (1001, false)] {
                jail.create_file("pool.toml", &format!("database_connections = {value}\n"))?;
                match Config::load(Some("pool.toml".as_ref())) {
                    Ok(config) => assert!(ok && config.database_connections == value, "{value} accepted"),
                    Err(err) => assert!(!ok && err.to_string().contains("must be 6 to 1000"), "{value}: {err}"),
                }
            }
            assert_eq!(Config::default().database_connections, 16);
            Ok(())
        });
    }

    #[test]
    fn tls_needs_both_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("cert.toml", "tls_cert_file = \"/etc/omserver/cert.pem\"\n")?;
            let err = Config::load(Some("cert.toml".as_ref())).expect_err("a certificate without a key");
            assert!(err.to_string().contains("tls_key_file is not"), "{err}");
            jail.create_file("key.toml", "tls_key_file = \"/etc/omserver/key.pem\"\n")?;
            let err = Config::load(Some("key.toml".as_ref())).expect_err("a key without a certificate");
            assert!(err.to_string().contains("tls_cert_file is not"), "{err}");
            jail.create_file("both.toml", "tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n")?;
            let config = Config::load(Some("both.toml".as_ref())).map_err(|e| e.to_string())?;
            assert_eq!(config.tls().ok().flatten(), Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }));
            assert_eq!(config.url_scheme(), "https");
            assert_eq!(Config::default().url_scheme(), "http");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listn = \"127.0.0.1:9000\"\n")?;
            let err = Config::load(Some("bad.toml".as_ref())).expect_err("a typo must not pass silently");
            assert!(err.to_string().contains("listn"), "{err}");
            Ok(())
        });
    }
}
