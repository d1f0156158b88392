//! TLS termination with rustls (ring provider): certificates from PEM files,
//! chosen per handshake by SNI (exact and wildcard names, as the certificate
//! itself declares them), the first one being the default; ALPN `h2` and
//! `http/1.1`; TLS 1.2 and 1.3.
//!
//! Files are read when a configuration is applied, so a reload (SIGHUP or the
//! API) serves renewed certificates to the next handshake while open
//! connections keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::types::{TlsConfig, TlsVersion, UpstreamTls};

pub mod alert_flush;
pub mod tickets;

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: unsupported private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup failed: {0}")]
    Rustls(String),
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
}

struct Entry {
    /// The leaf certificate, to match SNI names against.
    leaf: CertificateDer<'static>,
    key: Arc<CertifiedKey>,
}

/// Picks a certificate by the client's SNI; the first is the default.
pub struct SniResolver {
    entries: Vec<Entry>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("certificates", &self.entries.len())
            .finish()
    }
}

impl SniResolver {
    /// Index of the certificate that serves `sni` (the default when none matches).
    pub fn choose(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni.and_then(|s| DnsName::try_from(s.to_string()).ok()) else {
            return 0;
        };
        let name = ServerName::DnsName(name);
        self.entries
            .iter()
            .position(|e| {
                webpki::EndEntityCert::try_from(&e.leaf)
                    .map(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                    .unwrap_or(false)
            })
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.choose(hello.server_name());
        self.entries.get(i).map(|e| e.key.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Load one certificate chain and its key, checking that they belong together.
pub fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(CertificateDer<'static>, Arc<CertifiedKey>), TlsError> {
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = chain.first().cloned() else {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    };
    let key_pem = read(key)?;
    let key_der: PrivateKeyDer<'static> = match rustls_pemfile::private_key(&mut key_pem.as_slice())
    {
        Ok(Some(k)) => k,
        _ => {
            return Err(TlsError::NoKey {
                path: key.to_path_buf(),
            })
        }
    };
    let signing = provider::sign::any_supported_type(&key_der).map_err(|e| TlsError::BadKey {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let ck = CertifiedKey::new(chain, signing);
    if ck.keys_match().is_err() {
        return Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
    }
    Ok((leaf, Arc::new(ck)))
}

/// Read an OCSP response (DER) to staple. Not parsed: rustls sends it as is,
/// and a stale one is the operator's refresh job (read again on every reload).
pub fn read_ocsp(path: &Path) -> Result<Vec<u8>, TlsError> {
    let der = read(path)?;
    // An OCSPResponse is a DER SEQUENCE; catch a PEM or empty file early.
    if der.first() != Some(&0x30) {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            why: "not a DER OCSP response".into(),
        });
    }
    Ok(der)
}

/// Build the rustls server configuration of a frontend.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut entries = Vec::new();
    for pair in &cfg.certificates {
        let (leaf, mut key) = load_pair(&pair.cert, &pair.key)?;
        if let Some(path) = &pair.ocsp_file {
            let mut ck = CertifiedKey::clone(&key);
            ck.ocsp = Some(read_ocsp(path)?);
            key = Arc::new(ck);
        }
        entries.push(Entry { leaf, key });
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut sc =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { entries }));
    // Resumption by ticket for TLS 1.2 and 1.3 (stateless: any worker, and
    // with shared keys either node of a pair, opens them).
    sc.ticketer =
        match &cfg.ticket_keys_file {
            Some(path) => Arc::new(tickets::SharedTicketer::from_file(path).map_err(|why| {
                TlsError::File {
                    path: path.clone(),
                    why,
                }
            })?),
            None => provider::Ticketer::new().map_err(|e| TlsError::Rustls(e.to_string()))?,
        };
    sc.ignore_client_order = cfg.prefer_server_ciphers;
    sc.alpn_protocols = if cfg.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(sc))
}

/// What a backend needs to open TLS connections to its servers.
pub struct UpstreamTlsRt {
    pub connector: tokio_rustls::TlsConnector,
    /// SNI and verification name; None: the server's IP address.
    pub sni: Option<ServerName<'static>>,
    /// The settings it was built from.
    pub config: UpstreamTls,
    /// ALPN offers h2 (the backend speaks HTTP/2).
    pub h2: bool,
}

impl fmt::Debug for UpstreamTlsRt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTlsRt")
            .field("config", &self.config)
            .finish()
    }
}

/// Accepts any server certificate (`verify = false`), still checking the
/// handshake signatures. Also used by tests that check *which* certificate a
/// server presents.
#[derive(Debug)]
pub struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl NoVerify {
    /// A verifier using the ring provider's signature algorithms.
    pub fn new() -> Self {
        NoVerify(Arc::new(provider::default_provider()))
    }
}

impl Default for NoVerify {
    fn default() -> Self {
        Self::new()
    }
}

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Build the TLS client side of a backend: system roots or the configured CA,
/// or no verification when `verify = false`.
pub fn upstream(cfg: &UpstreamTls, h2: bool) -> Result<UpstreamTlsRt, TlsError> {
    let provider = Arc::new(provider::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut cc = if cfg.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca {
            Some(path) => {
                let pem = read(path)?;
                for c in rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok) {
                    roots
                        .add(c)
                        .map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(TlsError::NoCertificate { path: path.clone() });
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    cc.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let sni = match &cfg.sni {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|e| TlsError::Rustls(format!("bad sni `{name}`: {e}")))?,
        ),
        None => None,
    };
    Ok(UpstreamTlsRt {
        connector: tokio_rustls::TlsConnector::from(Arc::new(cc)),
        sni,
        config: cfg.clone(),
        h2,
    })
}
