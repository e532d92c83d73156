//! The `ssh` backend: our own SSH client (russh), no `ssh` binary.
//!
//! The path of one command on one host:
//! - `quote.rs` turns the argument vector into one command string, every argument single-quoted;
//! - `pool.rs` hands out the pooled connection for (address, port, user), or `connect.rs` opens one: TCP, key
//!   exchange with the host key judged against `known_hosts_file` (`known_hosts.rs`), public-key authentication,
//!   all under `connect_timeout_secs`;
//! - `session.rs` runs the command on a new channel and reads it to its end, killing it on timeout or when the
//!   call is dropped; `copy.rs` builds the command that installs a file sent on stdin.
//!
//! Outcomes: a host we could not reach (refused, no answer, connection lost, deadline passed) is `unreachable`;
//! a host that answered but whose key we refuse, or that refuses our key, is `failed`: retrying will not help,
//! and the message says what to fix.

mod connect;
mod copy;
// pub(crate): re-exported for the fuzz targets by `crate::fuzzing`.
pub(crate) mod known_hosts;
mod pool;
mod quote;
mod session;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::ROption;
use omserver_plugin_api::{HostResult, HostStatus};
use russh::keys::PrivateKey;

use self::{
    connect::{ConnectError, Target, Trust},
    pool::Pool,
    session::{CommandError, Finished},
};
use super::{
    config::{HostKeyPolicy, SshConfig},
    failed, millis, per_host, unreachable, Host, Limits, Report,
};

pub struct SshBackend {
    config: SshConfig,
    limits: Limits,
    trust: Trust,
    client: Arc<russh::client::Config>,
    pool: Pool,
}

impl std::fmt::Debug for SshBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshBackend").field("config", &self.config).field("pool", &self.pool).finish()
    }
}

/// The identity, loaded once per call: a problem with it fails every host that needs a new connection.
type Identity = Result<Arc<PrivateKey>, String>;

impl SshBackend {
    pub fn new(config: SshConfig, limits: Limits) -> SshBackend {
        let idle = Duration::from_secs(config.idle_secs);
        SshBackend::with_idle_expiry(config, limits, idle)
    }

    /// As [`SshBackend::new`] with an idle expiry for pooled connections finer than `idle_secs` (tests).
    pub fn with_idle_expiry(config: SshConfig, limits: Limits, idle: Duration) -> SshBackend {
        let trust = Trust { known_hosts_file: config.known_hosts_file.clone(), policy: config.host_key_policy };
        let client = connect::client_config(Duration::from_secs(config.keepalive_secs));
        SshBackend { config, limits, trust, client, pool: Pool::new(idle) }
    }

    pub async fn run(&self, hosts: &[Host], argv: &[String], report: &Report) -> Vec<HostResult> {
        let command = match quote::command_line(argv) {
            Ok(command) => command,
            Err(e) => return hosts.iter().map(|h| report.done(failed(&h.name, &e.to_string(), None))).collect(),
        };
        let identity = self.identity().await;
        per_host(hosts, self.config.max_parallel, report, |host| {
            let (command, identity) = (&command, &identity);
            async move {
                let started = Instant::now();
                match self.exec_on(host, command, None, identity).await {
                    Ok(done) => finished(host, done, started),
                    Err(result) => result,
                }
            }
        })
        .await
    }

    pub async fn copy_file(
        &self,
        hosts: &[Host],
        source: &Path,
        dest: &str,
        mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        let data = match tokio::fs::read(source).await {
            Ok(data) => data,
            Err(e) => {
                let message = format!("cannot read {}: {e}", source.display());
                return hosts.iter().map(|h| report.done(failed(&h.name, &message, None))).collect();
            }
        };
        let identity = self.identity().await;
        per_host(hosts, self.config.max_parallel, report, |host| {
            let (data, identity) = (&data, &identity);
            async move {
                let started = Instant::now();
                let command = match copy::install_command(dest, data.len(), mode, rand::random()) {
                    Ok(command) => command,
                    Err(e) => return failed(&host.name, &e, None),
                };
                match self.exec_on(host, &command, Some(data), identity).await {
                    Ok(done) if done.exit_status == Some(0) => HostResult {
                        host: host.name.as_str().into(),
                        status: HostStatus::Ok,
                        rc: ROption::RSome(0),
                        stdout: format!("copied {} bytes to {dest}\n", data.len()).into(),
                        stderr: done.stderr.into(),
                        duration_ms: millis(started.elapsed()),
                    },
                    Ok(done) => finished(host, done, started),
                    Err(result) => result,
                }
            }
        })
        .await
    }

    /// Identity file readable and usable, known-hosts file readable.
    pub async fn check(&self) -> Result<String, String> {
        let key = self.identity().await?;
        let path = &self.config.known_hosts_file;
        let known = match tokio::fs::read_to_string(path).await {
            Ok(text) => format!("lists {} host keys", known_hosts::KnownHosts::parse(&text).len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.trust.policy == HostKeyPolicy::AcceptNew => {
                "does not exist yet (accept-new creates it)".to_owned()
            }
            Err(e) => {
                return Err(format!(
                    "known_hosts_file {}: {e}; create it (e.g. `touch {0}`) and record hosts with \
                     `omserver hosts trust NAME`",
                    path.display()
                ))
            }
        };
        Ok(format!(
            "identity_file {} ({} key) readable; known_hosts_file {} {known}; host_key_policy {}",
            self.config.identity_file.display(),
            key.algorithm(),
            path.display(),
            match self.trust.policy {
                HostKeyPolicy::Strict => "strict",
                HostKeyPolicy::AcceptNew => "accept-new",
            },
        ))
    }

    async fn identity(&self) -> Identity {
        let path = &self.config.identity_file;
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read identity_file {}: {e}", path.display()))?;
        match russh::keys::decode_secret_key(&text, None) {
            Ok(key) => Ok(Arc::new(key)),
            Err(russh::keys::Error::KeyIsEncrypted) => Err(format!(
                "identity_file {} is encrypted (has a passphrase); omserver needs an unencrypted key: \
                 remove the passphrase with `ssh-keygen -p -N '' -f {0}` or point identity_file at another key",
                path.display()
            )),
            Err(e) => Err(format!("identity_file {} is not a private key omserver can use: {e}", path.display())),
        }
    }

    fn target(&self, host: &Host) -> Target {
        Target {
            address: host.address.clone(),
            port: host.port.unwrap_or(self.config.port),
            user: host.user.clone().unwrap_or_else(|| self.config.user.clone()),
        }
    }

    /// Runs one command string on one host through the pool. A pooled connection that turns out broken when a
    /// channel is opened on it (nothing was sent yet) is replaced once, so a connection that died while idle never
    /// fails a command.
    async fn exec_on(
        &self,
        host: &Host,
        command: &str,
        stdin: Option<&[u8]>,
        identity: &Identity,
    ) -> Result<Finished, HostResult> {
        let started = Instant::now();
        let target = self.target(host);
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let mut retried = false;
        loop {
            let connect = async {
                let key = identity.clone().map_err(ConnectError::Protocol)?;
                connect::connect(
                    self.client.clone(),
                    &target,
                    &host.name,
                    key,
                    &self.config.identity_file,
                    &self.trust,
                    connect_timeout,
                )
                .await
            };
            let (connection, reused) = match self.pool.get(&target, connect_timeout, connect).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::info!(host = %host.name, %target, error = %e, "ssh: no connection");
                    return Err(connect_failure(&host.name, &e, started));
                }
            };
            let output_limit = self.limits.output_limit_bytes;
            let outcome =
                session::run(&connection, command, stdin, connect_timeout, self.limits.command_timeout, output_limit)
                    .await;
            match outcome {
                Ok(done) => return Ok(done),
                Err(CommandError::Open(e)) if reused && !retried => {
                    tracing::info!(host = %host.name, %target, error = %e, "ssh: pooled connection broken, reconnecting");
                    self.pool.discard(&target, &connection).await;
                    retried = true;
                }
                Err(e @ (CommandError::Open(_) | CommandError::Lost(_))) => {
                    self.pool.discard(&target, &connection).await;
                    return Err(unreachable(&host.name, &e.to_string(), Some(started.elapsed())));
                }
                Err(e) => return Err(failed(&host.name, &e.to_string(), Some(started.elapsed()))),
            }
        }
    }
}

fn connect_failure(host: &str, e: &ConnectError, started: Instant) -> HostResult {
    match e {
        ConnectError::Unreachable(m) => unreachable(host, m, Some(started.elapsed())),
        ConnectError::HostKey(m) | ConnectError::Auth(m) | ConnectError::Protocol(m) => {
            failed(host, m, Some(started.elapsed()))
        }
    }
}

fn finished(host: &Host, done: Finished, started: Instant) -> HostResult {
    let mut stderr = done.stderr;
    if let Some(signal) = &done.exit_signal {
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        stderr.push_str(&format!("killed by signal {signal}"));
    }
    HostResult {
        host: host.name.as_str().into(),
        status: if done.exit_status == Some(0) { HostStatus::Ok } else { HostStatus::Failed },
        rc: done.exit_status.map_or(ROption::RNone, |c| ROption::RSome(i32::try_from(c).unwrap_or(i32::MAX))),
        stdout: done.stdout.into(),
        stderr: stderr.into(),
        duration_ms: millis(started.elapsed()),
    }
}

/// What a host presents, for `omserver hosts trust NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    /// The key type, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it: show this to the operator before recording.
    pub fingerprint: String,
    /// The line [`record_key`] appends: `[address]:port type base64` (`address type base64` on port 22).
    pub known_hosts_line: String,
    key: russh::keys::PublicKey,
}

/// What [`trust`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trusted {
    Recorded,
    AlreadyKnown,
}

/// Errors of the host-key functions used by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{0}")]
    Connect(String),
    #[error("cannot record the key in {path}: {source}")]
    Record { path: String, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
}

/// Connects to `address:port`, runs the key exchange far enough to see the host key, and hangs up: nothing is
/// authenticated or trusted, and nothing is written. `timeout` bounds the whole exchange.
pub async fn presented_key(address: &str, port: u16, timeout: Duration) -> Result<PresentedKey, SshError> {
    let key = connect::presented_key(address, port, timeout).await.map_err(|e| SshError::Connect(e.to_string()))?;
    Ok(PresentedKey {
        algorithm: key.algorithm().to_string(),
        fingerprint: known_hosts::fingerprint(&key),
        known_hosts_line: known_hosts::line_for(address, port, &key),
        key,
    })
}

/// Records `presented` for `address:port` in `known_hosts_file` (`omserver hosts trust NAME`), unless the file
/// holds a different key of the same type for it, or revokes this one: a changed key is replaced only by hand,
/// after someone found out why it changed. Blocking.
pub fn trust(known_hosts_file: &Path, address: &str, port: u16, presented: &PresentedKey) -> Result<Trusted, SshError> {
    let file = known_hosts_file.display().to_string();
    let hosts = known_hosts::KnownHosts::load(known_hosts_file)
        .map_err(|source| SshError::Record { path: file.clone(), source })?;
    let token = known_hosts::host_token(address, port);
    match hosts.check(address, port, &presented.key) {
        known_hosts::Verdict::Known => Ok(Trusted::AlreadyKnown),
        known_hosts::Verdict::Unknown => {
            record_key(known_hosts_file, &presented.known_hosts_line).map(|()| Trusted::Recorded)
        }
        known_hosts::Verdict::Changed { lines } => Err(SshError::Refused(format!(
            "{file} holds a different {} key for {token} (line {}): if the host was really reinstalled, remove it \
             with `ssh-keygen -R '{token}' -f {file}` and run trust again; otherwise this may be a man-in-the-middle",
            presented.algorithm,
            lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
        ))),
        known_hosts::Verdict::Revoked { line } => {
            Err(SshError::Refused(format!("{file} revokes this key for {token} (line {line}); not recorded")))
        }
    }
}

/// Appends a line from [`PresentedKey::known_hosts_line`] to `known_hosts_file` (created if missing; a line
/// already present is not added twice), under a lock shared with the backend's accept-new recording. Blocking.
pub fn record_key(known_hosts_file: &Path, line: &str) -> Result<(), SshError> {
    known_hosts::append(known_hosts_file, line)
        .map_err(|source| SshError::Record { path: known_hosts_file.display().to_string(), source })
}
