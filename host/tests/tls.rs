//! HTTPS from `tls_cert_file` / `tls_key_file`: the binary serves TLS only, with a certificate issued in the test
//! by a certificate authority of its own.

mod common;

use std::{fs, path::Path, process::Command, time::Duration};

use common::{Options, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use reqwest::{
    blocking::{Client, ClientBuilder},
    Certificate, StatusCode,
};

/// Writes `cert.pem` (for 127.0.0.1 and localhost) and `key.pem` into `dir`; returns the CA's PEM.
fn issue(dir: &Path) -> String {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "omserver test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn client() -> ClientBuilder {
    Client::builder().timeout(Duration::from_secs(30))
}

#[test]
fn with_both_files_the_server_speaks_https_only() {
    let pki = tempfile::tempdir().unwrap();
    let ca = issue(pki.path());
    let server = Server::start_with(Options {
        extra_config: format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            pki.path().join("cert.pem").display(),
            pki.path().join("key.pem").display()
        ),
        ..Options::default()
    });
    let port = server.port();
    assert_eq!(server.base, format!("https://127.0.0.1:{port}"), "the line tests and scripts read");

    let trusting =
        client().tls_built_in_root_certs(false).add_root_certificate(Certificate::from_pem(ca.as_bytes()).unwrap());
    let trusting = trusting.build().unwrap();
    let response = trusting.get(format!("{}/healthz", server.base)).send().expect("HTTPS with the CA");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-frame-options"], "DENY", "the same router and layers as plain HTTP");
    let response = trusting.get(format!("{}/api/jobs", server.base)).bearer_auth(&server.token).send().unwrap();
    assert_eq!((response.status(), response.text().unwrap()), (StatusCode::OK, "[]".to_owned()));
    assert_eq!(trusting.get(format!("{}/api/jobs", server.base)).send().unwrap().status(), StatusCode::UNAUTHORIZED);

    // The peer address reaches the original agent's route (it authenticates by it): localhost is 127.0.0.1.
    let legacy = "/omaudit/omaudit_pull/?history_id=1&history_ip=127.0.0.1&history_user=root\
                  &history_datetime=2014-06-07%2022:05:56&history_command=uptime";
    let response = trusting.get(format!("{}{legacy}", server.base)).send().unwrap();
    assert_eq!((response.status(), response.text().unwrap()), (StatusCode::OK, "OK".to_owned()));

    // A client that does not know the CA refuses the server; plain HTTP gets no answer at all.
    let stranger = client().build().unwrap();
    let err = stranger.get(format!("{}/healthz", server.base)).send().expect_err("an unknown issuer");
    assert!(format!("{err:?}").to_lowercase().contains("certificate"), "{err:?}");
    let plain = stranger.get(format!("http://127.0.0.1:{port}/healthz")).send();
    assert!(plain.is_err(), "plain HTTP on the HTTPS port: {plain:?}");

    // The server still serves after the refused connections.
    assert_eq!(trusting.get(format!("{}/healthz", server.base)).send().unwrap().status(), StatusCode::OK);
}

/// Graceful shutdown lets requests finish but must not wait for a live stream, which never ends by itself: on
/// plain HTTP and on HTTPS the server stops within its drain time (5 s) with a stream open, at once without.
#[test]
fn shutdown_does_not_wait_for_live_streams() {
    let pki = tempfile::tempdir().unwrap();
    let ca = issue(pki.path());
    let tls = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        pki.path().join("cert.pem").display(),
        pki.path().join("key.pem").display()
    );
    for extra_config in [String::new(), tls] {
        let https = !extra_config.is_empty();
        let start = || Server::start_with(Options { extra_config: extra_config.clone(), ..Options::default() });
        let client =
            client().timeout(None).add_root_certificate(Certificate::from_pem(ca.as_bytes()).unwrap()).build().unwrap();

        let mut idle = start();
        assert_eq!(client.get(format!("{}/healthz", idle.base)).send().unwrap().status(), StatusCode::OK);
        let took = idle.terminate(Duration::from_secs(4)).expect("an idle server stops at once");
        assert!(took < Duration::from_secs(3), "https: {https}: {took:?}");

        let mut streaming = start();
        let stream =
            client.get(format!("{}/api/audit/stream", streaming.base)).bearer_auth(&streaming.token).send().unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let took = streaming.terminate(Duration::from_secs(15));
        // At least most of the drain time: the stream was open and was waited for, then dropped.
        let drained = took.is_some_and(|t| t > Duration::from_secs(4) && t < Duration::from_secs(10));
        assert!(drained, "https: {https}: {took:?}\n{}", streaming.log());
        drop(stream);
        assert!(streaming.log().contains("stopped"), "it went on to finish its jobs and close the store");
    }
}

/// Runs `omserver serve` with `config` and returns its exit status and stderr; it must stop by itself.
fn serve_with(config: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omserver.toml");
    let base = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}\"\nplugins_dir = \"{}\"\nstate_dir = \"{}\"\n",
        dir.path().join("omserver.db").display(),
        dir.path().join("plugins.d").display(),
        dir.path().join("state").display()
    );
    fs::write(&path, format!("{base}{config}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_omserver"))
        .args(["--config", path.to_str().unwrap(), "serve"])
        .env_remove("AUTO_PLATFORM")
        .env_remove("SECRET_KEY")
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn half_a_tls_configuration_or_a_bad_file_stops_start_up() {
    let pki = tempfile::tempdir().unwrap();
    issue(pki.path());
    let (cert, key) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));

    let (status, stderr) = serve_with(&format!("tls_cert_file = \"{}\"\n", cert.display()));
    assert!(!status.success() && stderr.contains("but tls_key_file is not"), "{status}: {stderr}");
    let (status, stderr) = serve_with(&format!("tls_key_file = \"{}\"\n", key.display()));
    assert!(!status.success() && stderr.contains("but tls_cert_file is not"), "{status}: {stderr}");

    // The key file given as the certificate: no certificate in it.
    let (status, stderr) =
        serve_with(&format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", key.display(), key.display()));
    assert!(!status.success() && stderr.contains("no CERTIFICATE"), "{status}: {stderr}");
    // A key that is not the certificate's.
    let other = tempfile::tempdir().unwrap();
    issue(other.path());
    let (status, stderr) = serve_with(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        other.path().join("key.pem").display()
    ));
    assert!(!status.success() && stderr.contains("does not fit the key"), "{status}: {stderr}");
}
