//! TLS listeners (rustls): server certificate and key from PEM files, optional client
//! certificates checked against a CA file, TLS 1.2 and 1.3 (or one of them), and the client
//! certificate's CN or subject as the MQTT user name (Mosquitto's `use_identity_as_username` /
//! `use_subject_as_username`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Which protocol versions a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3.
    #[default]
    Both,
    Tls12,
    Tls13,
}

/// What a TLS listener needs, as Mosquitto names it.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    /// CA certificates that client certificates must chain to.
    pub cafile: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `cafile`).
    pub require_certificate: bool,
    /// Certificate revocation lists (PEM): a revoked client certificate is refused (Mosquitto:
    /// crlfile). Re-read on SIGHUP with the certificates.
    pub crlfile: Option<PathBuf>,
    /// The certificate's Common Name becomes the user name; no password is checked.
    pub use_identity_as_username: bool,
    /// The certificate's whole subject (RFC 4514 string) becomes the user name.
    pub use_subject_as_username: bool,
    pub versions: TlsVersions,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {problem}")]
    File { file: String, problem: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &std::path::Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File { file: path.display().to_string(), problem: problem.to_string() }
}

/// A listener's TLS: the acceptor and how to name its clients. The acceptor can be rebuilt
/// from the same files while the broker runs (SIGHUP after a certificate renewal); handshakes
/// already done keep their session.
pub struct Tls {
    acceptor: std::sync::RwLock<TlsAcceptor>,
    pub settings: TlsSettings,
}

impl Tls {
    /// Loads the files and builds the rustls configuration; every problem names its file.
    pub fn load(settings: TlsSettings) -> Result<Tls, TlsError> {
        let acceptor = Tls::acceptor_for(&settings)?;
        Ok(Tls { acceptor: std::sync::RwLock::new(acceptor), settings })
    }

    /// Reads the files again; on error the acceptor in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = Tls::acceptor_for(&self.settings)?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn acceptor_for(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.certfile)
            .map_err(|e| file_error(&settings.certfile, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(&settings.certfile, e))?;
        if certs.is_empty() {
            return Err(file_error(&settings.certfile, "no certificate in the file"));
        }
        let key =
            PrivateKeyDer::from_pem_file(&settings.keyfile).map_err(|e| file_error(&settings.keyfile, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.versions {
            TlsVersions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls12 => &[&rustls::version::TLS12],
            TlsVersions::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &settings.cafile {
            Some(cafile) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(cafile).map_err(|e| file_error(cafile, e))? {
                    roots.add(cert.map_err(|e| file_error(cafile, e))?).map_err(|e| file_error(cafile, e))?;
                }
                let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if let Some(crlfile) = &settings.crlfile {
                    let crls = CertificateRevocationListDer::pem_file_iter(crlfile)
                        .map_err(|e| file_error(crlfile, e))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| file_error(crlfile, e))?;
                    if crls.is_empty() {
                        return Err(file_error(crlfile, "no CRL in the file"));
                    }
                    verifier = verifier.with_crls(crls);
                }
                let verifier = match settings.require_certificate {
                    true => verifier,
                    false => verifier.allow_unauthenticated(),
                };
                builder
                    .with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
            }
            None if settings.require_certificate => {
                return Err(TlsError::Config("require_certificate needs a cafile".into()));
            }
            None if settings.crlfile.is_some() => {
                return Err(TlsError::Config("crlfile needs a cafile".into()));
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| file_error(&settings.keyfile, e))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The user name the client certificate stands for, if the listener takes it from there.
    pub fn username(&self, peer_certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
        let settings = &self.settings;
        if !settings.use_identity_as_username && !settings.use_subject_as_username {
            return None;
        }
        let leaf = peer_certs?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let subject = cert.subject();
        if settings.use_subject_as_username {
            return Some(subject.to_string());
        }
        let common_name = subject.iter_common_name().next()?.as_str().ok().map(str::to_string);
        common_name
    }

    /// Whether this listener names clients by certificate (so no password is checked).
    pub fn names_clients(&self) -> bool {
        self.settings.use_identity_as_username || self.settings.use_subject_as_username
    }
}
