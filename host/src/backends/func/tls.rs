//! Mutual TLS to funcd the way certmaster sets it up: the server's chain must lead to the certmaster CA, and its
//! host name is in the subject CN only (certmaster puts no subjectAltName in its certificates, and rustls/webpki
//! match names against subjectAltName alone). So the chain is verified by webpki as usual, its name check (the only
//! part that looks at names) is set aside, and the leaf's CN is compared with the inventory host's name instead.

use std::{path::Path, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// What every connection shares: the CA's verifier, our certificate and key.
#[derive(Debug)]
pub struct Identity {
    chain: Arc<WebPkiServerVerifier>,
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Identity {
    /// Reads the CA, certificate and key files; the error says which file and what is wrong with it.
    pub fn load(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<Identity, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = read_certs(ca_file, "ca_file")?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| format!("ca_file {}: not a usable CA certificate: {e}", ca_file.display()))?;
        }
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
        let certs = read_certs(cert_file, "cert_file")?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| format!("key_file {}: no PEM private key: {e}", key_file.display()))?;
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| format!("key_file {}: unusable key: {e}", key_file.display()))?;
        rustls::sign::CertifiedKey::new(certs.clone(), signing).keys_match().map_err(|e| {
            format!("key_file {} does not belong to cert_file {}: {e}", key_file.display(), cert_file.display())
        })?;
        Ok(Identity { chain, certs, key: Arc::new(key), provider })
    }

    /// A client configuration that accepts only a server whose certificate chains to the CA and has CN `name`.
    pub fn client_for(&self, name: &str) -> Result<Arc<ClientConfig>, String> {
        let verifier = Arc::new(CnVerifier { chain: self.chain.clone(), expected: name.to_owned() });
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| format!("the client certificate cannot be used: {e}"))?;
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The subject CN of a DER certificate.
pub fn subject_cn(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| format!("bad certificate: {e}"))?;
    let cn = parsed.subject().iter_common_name().next().ok_or("the certificate has no subject CN")?;
    cn.as_str().map(str::to_owned).map_err(|e| format!("the certificate's CN is not text: {e}"))
}

#[derive(Debug)]
struct CnVerifier {
    chain: Arc<WebPkiServerVerifier>,
    expected: String,
}

impl ServerCertVerifier for CnVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (signatures, validity, usage) first and the name last, so a name error means
        // the chain itself was good.
        match self.chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let presented = subject_cn(end_entity).map_err(rustls::Error::General)?;
        if presented != self.expected {
            return Err(rustls::Error::General(format!(
                "the server's certificate is for CN {presented:?}, expected {:?} (the inventory name)",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
