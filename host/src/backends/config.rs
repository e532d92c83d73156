//! `[backends.<name>]` sections of the configuration. A backend is available exactly when its section exists
//! (`local` needs none). Key names are documented in README.md; scripts and docs rely on them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsConfig {
    pub ssh: Option<SshConfig>,
    pub ansible: Option<AnsibleConfig>,
    pub saltstack: Option<SaltConfig>,
    pub func: Option<FuncConfig>,
}

/// How unknown host keys are treated. A changed key is refused under both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Only keys already in `known_hosts_file` are accepted (`omserver hosts trust NAME` records one).
    Strict,
    /// Trust on first use: an unknown key is recorded and accepted, then checked strictly.
    AcceptNew,
}

/// `[backends.ssh]`: our own SSH client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// Login user; an inventory host's `user` overrides it.
    pub user: String,
    /// Port; an inventory host's `port` overrides it.
    pub port: u16,
    /// The private key (OpenSSH format, unencrypted).
    pub identity_file: PathBuf,
    /// OpenSSH `known_hosts` format; hashed entries (`|1|…`) are understood.
    pub known_hosts_file: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// TCP connect, handshake and authentication together, as one deadline.
    pub connect_timeout_secs: u64,
    /// At most this many hosts are worked on at once.
    pub max_parallel: usize,
    /// A keepalive request goes to a host whose connection has been silent this long; after 3 unanswered, the
    /// connection counts as lost (OpenSSH's `ServerAliveInterval` with `ServerAliveCountMax 3`). This is how a cut
    /// link or a frozen host is noticed while a command prints nothing. 0 turns keepalives off.
    pub keepalive_secs: u64,
    /// A pooled connection that carried no command this long is closed.
    pub idle_secs: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            user: "root".to_owned(),
            port: 22,
            identity_file: PathBuf::from("/etc/omserver/id_ed25519"),
            known_hosts_file: PathBuf::from("/etc/omserver/known_hosts"),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout_secs: 10,
            max_parallel: 100,
            keepalive_secs: 15,
            idle_secs: 60,
        }
    }
}

/// `[backends.ansible]`: ansible-core's ad-hoc CLI, over the same keys and known-hosts file as `ssh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnsibleConfig {
    /// The ad-hoc binary (`ansible`), a name on PATH or a path.
    pub executable: PathBuf,
    pub forks: u32,
    pub user: String,
    pub port: u16,
    pub identity_file: PathBuf,
    pub known_hosts_file: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout_secs: u64,
}

impl Default for AnsibleConfig {
    fn default() -> Self {
        let ssh = SshConfig::default();
        AnsibleConfig {
            executable: PathBuf::from("ansible"),
            forks: 50,
            user: ssh.user,
            port: ssh.port,
            identity_file: ssh.identity_file,
            known_hosts_file: ssh.known_hosts_file,
            host_key_policy: ssh.host_key_policy,
            connect_timeout_secs: ssh.connect_timeout_secs,
        }
    }
}

/// How a Salt minion id is formed from an inventory host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaltTarget {
    /// The minion id is the inventory name.
    Name,
    /// The minion id is the host's internal address.
    Address,
}

/// `[backends.saltstack]`: salt-api (rest_cherrypy).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaltConfig {
    pub url: String,
    pub username: String,
    pub password: Secret,
    pub eauth: String,
    /// A minion that has not returned by then is unreachable.
    pub timeout_secs: u64,
    pub target: SaltTarget,
    /// Extra CA certificate (PEM) to trust for an `https` salt-api, e.g. a self-signed one.
    pub ca_file: Option<PathBuf>,
}

impl Default for SaltConfig {
    fn default() -> Self {
        SaltConfig {
            url: "https://127.0.0.1:8000".to_owned(),
            username: "omserver".to_owned(),
            password: Secret::default(),
            eauth: "pam".to_owned(),
            timeout_secs: 30,
            target: SaltTarget::Name,
            ca_file: None,
        }
    }
}

/// `[backends.func]`: XML-RPC over HTTPS with mutual TLS to each host's funcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FuncConfig {
    pub port: u16,
    /// The certmaster CA certificate (PEM).
    pub ca_file: PathBuf,
    /// This server's client certificate and key, signed by the certmaster CA (PEM).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// TCP connect and TLS handshake together, as one deadline.
    pub connect_timeout_secs: u64,
    pub max_parallel: usize,
}

impl Default for FuncConfig {
    fn default() -> Self {
        FuncConfig {
            port: 51234,
            ca_file: PathBuf::from("/etc/pki/certmaster/ca.cert"),
            cert_file: PathBuf::from("/etc/pki/certmaster/omserver.cert"),
            key_file: PathBuf::from("/etc/pki/certmaster/omserver.pem"),
            connect_timeout_secs: 10,
            max_parallel: 100,
        }
    }
}

/// A secret from the configuration: shown as `"…"` by `Debug`, never logged, never served.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"…\"" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_parse_with_documented_keys_and_secrets_stay_hidden() {
        let text = r#"
            [ssh]
            user = "deploy"
            identity_file = "/k"
            known_hosts_file = "/kh"
            host_key_policy = "accept-new"
            [saltstack]
            url = "http://127.0.0.1:8000"
            password = "hunter2"
            target = "address"
        "#;
        let config: BackendsConfig = toml::from_str(text).unwrap();
        let ssh = config.ssh.unwrap();
        assert_eq!((ssh.user.as_str(), ssh.port, ssh.host_key_policy), ("deploy", 22, HostKeyPolicy::AcceptNew));
        let salt = config.saltstack.unwrap();
        assert_eq!(salt.password.expose(), "hunter2");
        assert!(!format!("{salt:?}").contains("hunter2"));
        assert!(config.ansible.is_none() && config.func.is_none());
        assert!(toml::from_str::<BackendsConfig>("[ssh]\nusr = \"x\"\n").is_err(), "a typo is an error");
    }
}
