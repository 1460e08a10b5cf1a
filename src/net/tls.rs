//! TLS server configuration (rustls): the configured certificate, or a self-signed one made on
//! first run for the embedded default so STARTTLS works out of the box.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::config::Config;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Pem { path: PathBuf, msg: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Paths of the certificate and key in use: configured, or generated under the data dir.
pub fn cert_paths(config: &Config) -> (PathBuf, PathBuf) {
    match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.data_dir().join("tls");
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
    }
}

/// Loads the server's TLS configuration, generating a self-signed certificate for the hosted
/// domains when none is configured and none was generated before.
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = cert_paths(config);
    if config.tls.cert.is_none() && !cert_path.exists() {
        generate_self_signed(&config.domains, &cert_path, &key_path)?;
        tracing::info!(cert = %cert_path.display(), "made a self-signed certificate for {:?}", config.domains);
    }
    let (certs, key) = load_cert_key(&cert_path, &key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // Clients resume sessions cheaply; keep the cache small (memory per server, not per conn).
    sc.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
    Ok(Arc::new(sc))
}

/// Reads a PEM certificate chain and its private key.
pub fn load_cert_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_owned(),
            msg: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_owned(),
            msg: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.to_owned(),
            msg: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
        path: key_path.to_owned(),
        msg: e.to_string(),
    })?;
    Ok((certs, key))
}

/// Writes a self-signed certificate (SANs: the hosted domains) and its key (mode 0600).
pub fn generate_self_signed(domains: &[String], cert: &Path, key: &Path) -> Result<(), TlsError> {
    let ck = rcgen::generate_simple_self_signed(domains.to_vec())?;
    if let Some(dir) = cert.parent() {
        crate::store::private_dir(dir).map_err(io(dir))?;
    }
    write_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    write_private(cert, ck.cert.pem().as_bytes())?;
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}
