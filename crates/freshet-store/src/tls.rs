//! Redis over TLS (`rediss://`, and `rediss+cluster://` for a cluster), for every client
//! of the store: the redis crate's connections and [`crate::BatchConnection`]'s.
//!
//! A server's certificate is checked against the system's certificate authorities, or,
//! once [`set_ca_certificate`] was called (a service's `--redis-ca-cert`), against the
//! authorities of that PEM file only: a private CA, as managed Redis services and
//! self-run servers use. The setting is one per process, made at start, so every client
//! made anywhere in the process (writers, readers, the near cache's invalidation
//! connection) checks the same way.

use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::{Arc, OnceLock};

static CA_PEM: OnceLock<Vec<u8>> = OnceLock::new();
static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the Redis CA certificate {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the Redis CA certificate {path} holds no PEM certificate: {reason}")]
    NotPem { path: String, reason: String },
    #[error("the Redis CA certificate is already set for this process")]
    AlreadySet,
}

/// Trust only the certificate authorities of the PEM file at `path` for `rediss://`
/// servers, from now on, for the whole process.
pub fn set_ca_certificate(path: &std::path::Path) -> Result<(), TlsError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NotPem {
            path: shown,
            reason: "no BEGIN CERTIFICATE block".into(),
        });
    }
    CA_PEM.set(pem).map_err(|_| TlsError::AlreadySet)
}

/// rustls needs one cryptography provider for the process; the build has aws-lc-rs (it
/// also serves the HTTPS clients), installed here unless one already is.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The certificates to send a `rediss://` client, for the redis crate.
pub(crate) fn certificates() -> Option<TlsCertificates> {
    CA_PEM.get().map(|pem| TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    })
}

/// A redis client for `info`, checking a TLS server's certificate as this module says.
pub fn client(info: impl IntoConnectionInfo) -> redis::RedisResult<redis::Client> {
    install_crypto_provider();
    let info = info.into_connection_info()?;
    match (info.addr(), certificates()) {
        (ConnectionAddr::TcpTls { .. }, Some(certificates)) => {
            redis::Client::build_with_tls(info, certificates)
        }
        _ => redis::Client::open(info),
    }
}

/// `info` pointed at another node (`host:port`), over TLS when `info` is.
pub fn at_node(info: &redis::ConnectionInfo, host: &str, port: u16) -> redis::ConnectionInfo {
    let addr = match info.addr() {
        ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: None,
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    info.clone().set_addr(addr)
}

/// A cluster client builder for `nodes`, with TLS as this module says when they are
/// `rediss://` nodes.
pub(crate) fn cluster_builder(nodes: Vec<String>) -> redis::cluster::ClusterClientBuilder {
    install_crypto_provider();
    let tls = nodes.iter().any(|n| n.starts_with("rediss://"));
    let builder = redis::cluster::ClusterClient::builder(nodes);
    match (tls, certificates()) {
        (true, Some(certificates)) => builder.certs(certificates),
        _ => builder,
    }
}

/// The rustls configuration of [`crate::BatchConnection`]'s TLS connections: the same
/// authorities the redis crate's connections trust.
pub(crate) fn rustls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    CONFIG
        .get_or_init(|| {
            install_crypto_provider();
            let mut roots = rustls::RootCertStore::empty();
            match CA_PEM.get() {
                Some(pem) => {
                    for certificate in CertificateDer::pem_slice_iter(pem) {
                        let certificate = certificate.map_err(|e| e.to_string())?;
                        roots.add(certificate).map_err(|e| e.to_string())?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    for certificate in native.certs {
                        // A system certificate rustls cannot use is skipped, as the
                        // redis crate's own loader would fail on none of the others.
                        let _ = roots.add(certificate);
                    }
                }
            }
            Ok(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        })
        .clone()
}
