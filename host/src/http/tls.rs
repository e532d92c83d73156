//! HTTPS on the `listen` socket when `tls_cert_file` and `tls_key_file` are set: rustls (ring) for the
//! handshake, hyper-util's automatic HTTP/1.1-or-HTTP/2 connection for the rest, the same router as plain HTTP.
//!
//! Our own accept loop rather than axum-server: about as long as wiring axum-server's handle to our
//! cancellation token, no second TLS stack configuration, and the two things that matter are explicit here: a
//! bounded handshake in each connection's own task (a client that never finishes it blocks no one), and the
//! peer address put into every request as axum's `ConnectInfo`, which the original agent's route needs.

use std::{fs, io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::{extract::ConnectInfo, Router};
use hyper::{body::Incoming, Request};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::TlsFiles;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("the certificate in {cert} does not fit the key in {key}: {reason}")]
    Mismatch { cert: String, key: String, reason: String },
}

/// The server's TLS settings from the PEM files: the chain as it is in the file (leaf first), the first private
/// key, TLS 1.2 and 1.3, ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = (files.cert.display().to_string(), files.key.display().to_string());
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: cert_path.clone(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert_path, reason: "no CERTIFICATE in the file".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| TlsError::Pem { path: key_path.clone(), reason: format!("no private key: {e}") })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| TlsError::Mismatch { cert: cert_path, key: key_path, reason: e.to_string() })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled; then stops accepting and waits for the
/// open connections to finish their requests, as `axum::serve`'s graceful shutdown does for plain HTTP.
pub async fn serve(listener: TcpListener, router: Router, tls: Arc<ServerConfig>, shutdown: CancellationToken) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(err) => {
                    // Out of descriptors and the like: this connection is lost, the next may work (what axum does).
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // As for plain HTTP (app.rs): live streams must not wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, watcher) = (acceptor.clone(), router.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                router.clone().oneshot(request)
            });
            let connection = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %err, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
