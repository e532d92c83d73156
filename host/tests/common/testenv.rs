//! The backends' test environment, started by `cargo xtask testenv up` (and by `cargo xtask test`): sshd on
//! loopback addresses, ansible-core, a salt-master with minions and salt-api, and the Func stand-in. Its scripts
//! live in `testenv/` and describe what they started in `target/testenv/env.json`, read here.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct TestEnv {
    pub ssh: SshEnv,
    /// Absent from an env.json written before the netns piece existed.
    #[serde(default)]
    pub netns: NetnsEnv,
    pub ansible: AnsibleEnv,
    /// Absent from an env.json written before schemathesis joined the venv.
    #[serde(default)]
    pub schemathesis: SchemathesisEnv,
    pub salt: SaltEnv,
    pub func: FuncEnv,
    pub chromium: ChromiumEnv,
    /// Absent from an env.json written before the smtp piece existed.
    #[serde(default)]
    pub smtp: SmtpEnv,
    /// Absent from an env.json written before the haproxy piece existed.
    #[serde(default)]
    pub haproxy: HaproxyEnv,
}

/// Debian's haproxy; each test that needs a load balancer runs its own (`common::balancer`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HaproxyEnv {
    pub binary: PathBuf,
}

impl TestEnv {
    /// Server configuration with every backend set up against this environment (timeouts: 60 s a command,
    /// 120 s a job).
    pub fn backends_config(&self) -> String {
        let env = self;
        let ssh = &env.ssh;
        let access = format!(
            "user = \"{}\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\nconnect_timeout_secs = 5\n",
            ssh.user,
            ssh.port,
            ssh.identity_file.display(),
            ssh.known_hosts_file.display()
        );
        let salt = &env.salt;
        let func = &env.func;
        format!(
            "command_timeout_secs = 60\njob_timeout_secs = 120\n\
             [backends.ssh]\n{access}\
             [backends.ansible]\nexecutable = \"{}\"\nforks = 10\n{access}\
             [backends.saltstack]\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\neauth = \"{}\"\ntimeout_secs = 8\n\
             [backends.func]\nport = {}\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nconnect_timeout_secs = 5\n",
            env.ansible.executable.display(),
            salt.url,
            salt.username,
            salt.password,
            salt.eauth,
            func.port,
            func.ca_file.display(),
            func.cert_file.display(),
            func.key_file.display(),
        )
    }
}

/// The mail sink (aiosmtpd): every accepted message is `<n>.eml` with its envelope in `<n>.json` in `maildir`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SmtpEnv {
    pub host: String,
    pub port: u16,
    pub maildir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChromiumEnv {
    /// chromedriver's address, e.g. http://127.0.0.1:9515.
    pub webdriver_url: String,
    /// The Chromium binary chromedriver starts.
    pub binary: PathBuf,
    /// axe-core's `axe.min.js`, injected into pages by the accessibility checks (absent from an older env.json).
    #[serde(default)]
    pub axe: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SshEnv {
    pub port: u16,
    /// Loopback addresses sshd listens on; each acts as a separate host.
    pub addresses: Vec<String>,
    pub user: String,
    pub identity_file: PathBuf,
    /// `[addr]:port key` lines for every address.
    pub known_hosts_file: PathBuf,
    /// The same entries, hashed (`|1|salt|hash key`).
    pub known_hosts_hashed_file: PathBuf,
    /// A port nothing listens on.
    pub closed_port: u16,
}

/// Hosts behind a link the tests can break (testenv/netns.sh; faults through `common::netfault`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetnsEnv {
    pub hosts: Vec<NetnsHost>,
    /// sshd's port on every host (the ssh piece's keys).
    pub ssh_port: u16,
    /// A port where each host accepts TCP and never sends a byte.
    pub silent_port: u16,
    /// `[address]:ssh_port key` for every host.
    pub known_hosts_file: PathBuf,
    /// The nftables table (family inet) in each namespace, with empty `input` and `output` chains.
    pub nft_table: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NetnsHost {
    /// The network namespace, e.g. `omnet1`.
    pub namespace: String,
    /// The host's address, in its namespace.
    pub address: String,
    /// This side of its link: where the host reaches the server.
    pub server_address: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AnsibleEnv {
    pub executable: PathBuf,
}

/// schemathesis' `st`, in the venv; empty when the venv piece is not up.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchemathesisEnv {
    pub executable: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SaltEnv {
    pub url: String,
    pub username: String,
    pub password: String,
    pub eauth: String,
    /// Running minions, by id.
    pub minions: Vec<String>,
    /// A minion whose key the master has accepted but that does not run.
    pub stopped_minion: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FuncEnv {
    pub port: u16,
    /// Stand-in funcd hosts whose certificate CN is their name.
    pub hosts: Vec<FuncHost>,
    /// A stand-in whose certificate CN is not the name the inventory gives it.
    pub wrong_cn_host: FuncHost,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FuncHost {
    pub name: String,
    pub address: String,
}

/// The running test environment (`target/testenv/env.json`, or the file `OMSERVER_TESTENV` names). Panics with
/// what to run when it is not up: backend tests fail, never skip.
pub fn testenv() -> TestEnv {
    let path = std::env::var_os("OMSERVER_TESTENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::target_dir().join("testenv").join("env.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; start the backends' test environment with `cargo xtask testenv up`", path.display())
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
