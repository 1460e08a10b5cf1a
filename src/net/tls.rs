//! TLS server configuration (rustls): the configured certificate, or a self-signed one made on
//! first run for the embedded default so STARTTLS works out of the box.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;
use std::sync::RwLock;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// The server's certificates: the default one (`[tls] cert`/`key`, or self-signed) and one per
/// domain (`[[tls.certificates]]`, `[tls] certificates_dir`). A TLS handshake gets the one
/// for the name the peer asked for (SNI), else the default; [`Certs::reload`] swaps them in
/// place (SIGHUP), so open sessions keep theirs and new handshakes get the new ones.
#[derive(Debug)]
pub struct Certs {
    inner: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    default: Arc<CertifiedKey>,
    by_domain: HashMap<String, Arc<CertifiedKey>>,
}

impl Certs {
    /// Loads every configured certificate, generating the self-signed default for the hosted
    /// domains when none is configured and none was generated before.
    pub fn load(config: &Config) -> Result<Certs, TlsError> {
        Ok(Certs {
            inner: RwLock::new(Loaded::read(config)?),
        })
    }

    /// Reads the files again; on an error the old certificates stay. Returns how many
    /// per-domain certificates are loaded.
    pub fn reload(&self, config: &Config) -> Result<usize, TlsError> {
        let loaded = Loaded::read(config)?;
        let n = loaded.by_domain.len();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(n)
    }

    /// The certificate for `domain` (or a wildcard covering it), else the default.
    pub fn for_domain(&self, domain: &str) -> Arc<CertifiedKey> {
        let l = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let domain = domain.to_ascii_lowercase();
        if let Some(c) = l.by_domain.get(&domain) {
            return c.clone();
        }
        if let Some((_, parent)) = domain.split_once('.')
            && let Some(c) = l.by_domain.get(&format!("*.{parent}"))
        {
            return c.clone();
        }
        l.default.clone()
    }
}

impl Loaded {
    fn read(config: &Config) -> Result<Loaded, TlsError> {
        let (cert_path, key_path) = cert_paths(config);
        if config.tls.cert.is_none() && !cert_path.exists() {
            generate_self_signed(&config.domains, &cert_path, &key_path)?;
            tracing::info!(cert = %cert_path.display(), "made a self-signed certificate for {:?}", config.domains);
        }
        let default = certified(&cert_path, &key_path)?;
        let mut by_domain = HashMap::new();
        if let Some(dir) = &config.tls.certificates_dir {
            let entries = fs::read_dir(dir).map_err(io(dir))?;
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let pair = if path.is_dir() {
                    Some((
                        name.clone(),
                        path.join("fullchain.pem"),
                        path.join("privkey.pem"),
                    ))
                } else {
                    name.strip_suffix(".crt")
                        .map(|d| (d.to_owned(), path.clone(), dir.join(format!("{d}.key"))))
                };
                let Some((domain, cert, key)) = pair else {
                    continue;
                };
                if !cert.exists() || !key.exists() {
                    continue;
                }
                by_domain.insert(domain.to_ascii_lowercase(), certified(&cert, &key)?);
            }
        }
        for c in &config.tls.certificates {
            by_domain.insert(c.domain.to_ascii_lowercase(), certified(&c.cert, &c.key)?);
        }
        Ok(Loaded { default, by_domain })
    }
}

fn certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let (certs, key_der) = load_cert_key(cert, key)?;
    CertifiedKey::from_der(certs, key_der, &rustls::crypto::ring::default_provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            msg: e.to_string(),
        })
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match hello.server_name() {
            Some(name) => self.for_domain(name),
            None => self.for_domain(""),
        })
    }
}

/// The client streams' TLS configuration over `certs`.
pub fn server_config(certs: &Arc<Certs>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
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
