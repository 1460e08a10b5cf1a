//! TLS for server-to-server links: the client side (our outgoing streams) and the check of a
//! peer's certificate against the system trust store plus `[s2s] ca_file`.
//!
//! The handshake itself accepts any certificate: an unverifiable one still encrypts, and the
//! peer may then authenticate by dialback (XEP-0220) where policy allows. Whether the
//! certificate is valid for the peer's domain is decided after the handshake
//! ([`Trust::valid_for`]) and recorded on the link; handshake signatures are always checked.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::Config;
use crate::net::tls::{Certs, TlsError};

/// What the outgoing side needs: the client configuration and the trust anchors.
pub struct Trust {
    pub client: Arc<ClientConfig>,
    /// `None` when no trust anchor could be loaded: then no certificate is valid.
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Trust {
    pub fn load(config: &Config) -> Result<Trust, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!("s2s: reading the system trust store: {e}");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &config.s2s.ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    msg: e.to_string(),
                })?;
            let (ok, bad) = roots.add_parsable_certificates(certs);
            if ok == 0 || bad > 0 {
                return Err(TlsError::Pem {
                    path: ca.clone(),
                    msg: format!("{ok} CA certificates read, {bad} unusable"),
                });
            }
        }
        tracing::debug!(system = added, total = roots.len(), "s2s trust anchors");
        let verifier = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        };
        let accept = Arc::new(AcceptAny {
            algs: provider.signature_verification_algorithms,
        });
        let base = || -> Result<_, TlsError> {
            Ok(ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(accept.clone()))
        };
        // The client certificate is set per link (`client_for`).
        let client = base()?.with_no_client_auth();
        Ok(Trust {
            client: Arc::new(client),
            verifier,
        })
    }

    /// The client configuration presenting `cert` (our domain's certificate, for peers that
    /// authenticate us by it: SASL EXTERNAL).
    pub fn client_for(&self, cert: Arc<CertifiedKey>) -> Arc<ClientConfig> {
        let mut c = (*self.client).clone();
        c.client_auth_cert_resolver = Arc::new(Fixed(cert));
        Arc::new(c)
    }

    /// Whether `chain` (end entity first) is valid for `domain` under our trust anchors.
    pub fn valid_for(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        let (Some(verifier), Some((end, rest))) = (&self.verifier, chain.split_first()) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_owned()) else {
            return false;
        };
        verifier
            .verify_server_cert(end, rest, &name, &[], UnixTime::now())
            .is_ok()
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The incoming links' server configuration: the server's certificates (by SNI), and the
/// peer's certificate asked for but not required (checked after the handshake, for SASL
/// EXTERNAL and the dialback shortcut).
pub fn server_config(certs: &Arc<Certs>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AnyClient { algs }))
        .with_cert_resolver(certs.clone());
    Ok(Arc::new(sc))
}

#[derive(Debug)]
struct AnyClient {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Accepts every certificate in the handshake (see the file comment); signatures are checked.
#[derive(Debug)]
struct AcceptAny {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
