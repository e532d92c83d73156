//! Opening one SSH connection: TCP connect, key exchange with the host key checked against the known-hosts file,
//! public-key authentication — all under one deadline.
//!
//! The host key is checked inside the key exchange (russh calls [`Verifier::check_server_key`] before it finishes),
//! so a host whose key is unknown or changed never sees our user name, our public key or a command.

use std::{path::PathBuf, sync::Arc, time::Duration};

use russh::{
    client,
    keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate},
};
use tokio::net::TcpStream;

use super::known_hosts::{self, KnownHosts, Verdict};
use crate::backends::config::HostKeyPolicy;

/// Where one connection goes; the pool keeps one connection per target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub user: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.address, self.port)
    }
}

/// How presented host keys are judged.
#[derive(Debug, Clone)]
pub struct Trust {
    pub known_hosts_file: PathBuf,
    pub policy: HostKeyPolicy,
}

/// Why no connection was made. Only [`ConnectError::Unreachable`] makes a host `unreachable`; the others mean the
/// host answered and refused us (or we refused it), which a retry will not fix: `failed`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    HostKey(String),
    /// The host answered but did not accept our key: a configuration problem on one side, not reachability.
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Protocol(String),
}

/// The russh client configuration shared by every connection, with keepalives every `keepalive` (none if zero).
pub fn client_config(keepalive: Duration) -> Arc<client::Config> {
    Arc::new(client::Config {
        // A peer that stops answering (cable pulled, host frozen) is noticed after ~4 keepalive intervals even
        // while a command is silent; without this a dead pooled connection would hang its next command until the
        // command timeout.
        keepalive_interval: (!keepalive.is_zero()).then_some(keepalive),
        keepalive_max: 3,
        // Commands are small request/answer exchanges: Nagle's delay would only add latency.
        nodelay: true,
        ..client::Config::default()
    })
}

/// Connects, checks the host key, authenticates, all within `timeout`.
pub async fn connect(
    config: Arc<client::Config>,
    target: &Target,
    host_name: &str,
    key: Arc<PrivateKey>,
    identity_file: &std::path::Path,
    trust: &Trust,
    timeout: Duration,
) -> Result<client::Handle<Verifier>, ConnectError> {
    let verifier = Verifier {
        host_name: host_name.to_owned(),
        address: target.address.clone(),
        port: target.port,
        trust: Some(trust.clone()),
        presented: None,
    };
    let work = async {
        let stream = tcp(&target.address, target.port).await?;
        let mut handle =
            client::connect_stream(config, stream, verifier).await.map_err(HandshakeError::into_connect)?;
        // RSA keys sign with SHA-2 where the server says it can (OpenSSH has refused SHA-1 `ssh-rsa` since 8.8).
        let hash = if key.algorithm().is_rsa() {
            handle.best_supported_rsa_hash().await.ok().flatten().unwrap_or(Some(HashAlg::Sha256))
        } else {
            None
        };
        let auth = handle
            .authenticate_publickey(target.user.clone(), PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(classify)?;
        if !auth.success() {
            return Err(ConnectError::Auth(format!(
                "{target} did not accept the key {}: add its public key to the authorized_keys of {} on the host, \
                 or set the host's user",
                identity_file.display(),
                target.user
            )));
        }
        Ok(handle)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Unreachable(format!(
            "no SSH session with {}:{} within {}s (TCP connect, handshake and authentication)",
            target.address,
            target.port,
            timeout.as_secs_f32()
        ))),
    }
}

/// The key a host presents, without authenticating or trusting it (for `omserver hosts trust`).
pub async fn presented_key(address: &str, port: u16, timeout: Duration) -> Result<PublicKey, ConnectError> {
    let verifier =
        Verifier { host_name: String::new(), address: address.to_owned(), port, trust: None, presented: None };
    let presented = Arc::new(std::sync::Mutex::new(None));
    let work = async {
        let stream = tcp(address, port).await?;
        let capture = Capture { inner: verifier, seen: presented.clone() };
        // Capture rejects the key after recording it, so the handshake always ends in an error here.
        let result = client::connect_stream(client_config(Duration::ZERO), stream, capture).await;
        let seen = presented.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (seen, result) {
            (Some(key), _) => Ok(key),
            (None, Err(e)) => Err(e.into_connect()),
            (None, Ok(_)) => Err(ConnectError::Protocol("the host presented no key".to_owned())),
        }
    };
    tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
        Err(ConnectError::Unreachable(format!(
            "no SSH handshake with {address}:{port} within {}s",
            timeout.as_secs_f32()
        )))
    })
}

async fn tcp(address: &str, port: u16) -> Result<TcpStream, ConnectError> {
    TcpStream::connect((address, port))
        .await
        .map_err(|e| ConnectError::Unreachable(format!("cannot connect to {address}:{port}: {e}")))
}

/// What went wrong inside russh's handshake: our own host-key verdict, or russh's error.
#[derive(Debug)]
pub enum HandshakeError {
    HostKey(String),
    Ssh(russh::Error),
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Ssh(e)
    }
}

impl HandshakeError {
    fn into_connect(self) -> ConnectError {
        match self {
            HandshakeError::HostKey(message) => ConnectError::HostKey(message),
            HandshakeError::Ssh(e) => classify(e),
        }
    }
}

/// Connection-level errors (refused, reset, closed, timed out) mean "could not be reached"; the rest are a host
/// that speaks SSH but not acceptably.
pub fn classify(e: russh::Error) -> ConnectError {
    use russh::Error as E;
    match e {
        E::IO(io) => ConnectError::Unreachable(format!("connection lost during the SSH handshake: {io}")),
        E::Disconnect | E::HUP => {
            ConnectError::Unreachable("the host closed the connection during the SSH handshake".to_owned())
        }
        E::ConnectionTimeout | E::KeepaliveTimeout | E::InactivityTimeout | E::Elapsed(_) => {
            ConnectError::Unreachable(format!("the SSH connection timed out ({e})"))
        }
        other => ConnectError::Protocol(format!("SSH handshake failed: {other}")),
    }
}

/// The client side of one connection: judges the host key.
pub struct Verifier {
    host_name: String,
    address: String,
    port: u16,
    /// `None` only inside [`presented_key`], which never trusts.
    trust: Option<Trust>,
    presented: Option<PublicKey>,
}

impl client::Handler for Verifier {
    type Error = HandshakeError;

    async fn check_server_key(&mut self, presented: &PublicKeyOrCertificate) -> Result<bool, HandshakeError> {
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(_) => {
                return Err(HandshakeError::HostKey(format!(
                    "{}:{} presented a host certificate; only plain host keys in the known-hosts file are supported",
                    self.address, self.port
                )))
            }
        };
        self.presented = Some(key.clone());
        let Some(trust) = self.trust.clone() else {
            return Ok(false);
        };
        verify(&trust, &self.host_name, &self.address, self.port, key).await.map_err(HandshakeError::HostKey)?;
        Ok(true)
    }
}

/// Records the presented key for [`presented_key`] and refuses it.
struct Capture {
    inner: Verifier,
    seen: Arc<std::sync::Mutex<Option<PublicKey>>>,
}

impl client::Handler for Capture {
    type Error = HandshakeError;

    async fn check_server_key(&mut self, presented: &PublicKeyOrCertificate) -> Result<bool, HandshakeError> {
        let verdict = self.inner.check_server_key(presented).await;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = self.inner.presented.take();
        verdict.map(|_| false)
    }
}

/// Judges `key` for `address:port` against the known-hosts file (read afresh, so `hosts trust` applies at once).
async fn verify(trust: &Trust, host_name: &str, address: &str, port: u16, key: PublicKey) -> Result<(), String> {
    let path = trust.known_hosts_file.clone();
    let file = path.display().to_string();
    let known = tokio::task::spawn_blocking(move || KnownHosts::load(&path))
        .await
        .map_err(|e| format!("reading {file}: {e}"))?
        .map_err(|e| format!("cannot read known_hosts_file {file}: {e}"))?;
    let token = known_hosts::host_token(address, port);
    let fingerprint = known_hosts::fingerprint(&key);
    let kind = key.algorithm().to_string();
    let fix = format!("if it is really the host's key, run `omserver hosts trust {host_name}`");
    match known.check(address, port, &key) {
        Verdict::Known => Ok(()),
        Verdict::Unknown if trust.policy == HostKeyPolicy::AcceptNew => {
            let line = known_hosts::line_for(address, port, &key);
            let path = trust.known_hosts_file.clone();
            tokio::task::spawn_blocking(move || known_hosts::append(&path, &line))
                .await
                .map_err(|e| format!("recording the key of {token}: {e}"))?
                .map_err(|e| format!("cannot record the new key of {token} in {file}: {e}"))?;
            tracing::info!(host = host_name, %token, %fingerprint, "accept-new: recorded a new host key");
            Ok(())
        }
        Verdict::Unknown => Err(format!(
            "host key of {token} is unknown: it presented {kind} key {fingerprint}, which {file} does not list \
             (host_key_policy is strict); {fix}"
        )),
        Verdict::Changed { lines } => Err(format!(
            "host key of {token} has CHANGED: it presented {kind} key {fingerprint}, but {file} (line {}) records \
             a different {kind} key. Someone may be intercepting the connection (man-in-the-middle). Nothing was \
             sent. If the host was re-installed or re-keyed, remove that line and {fix}",
            join(&lines)
        )),
        Verdict::Revoked { line } => Err(format!(
            "host key of {token} ({kind} {fingerprint}) is marked @revoked in {file} (line {line}); nothing was sent"
        )),
    }
}

fn join(lines: &[usize]) -> String {
    lines.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}
