//! TLS for the client (rustls): a CA file to trust, an optional client certificate, and
//! `mosquitto_pub --insecure`'s choice to check the chain but not the host name.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::{self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// How the client speaks TLS; build it with [`Tls::new`] and set it with [`crate::Options::tls`].
///
/// ```no_run
/// use std::path::Path;
/// // A client certificate too, for brokers that require one.
/// let tls = cauldron_client::Tls::new(Path::new("ca.pem"), Some((Path::new("me.crt"), Path::new("me.key"))), true);
/// ```
#[derive(Clone)]
pub struct Tls {
    pub(crate) config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl Tls {
    /// Trust the CA certificates in `ca_file` (PEM); present `identity` (certificate and key
    /// PEM files) when given; with `verify_hostname` off, accept a valid chain whose
    /// certificate names another host.
    ///
    /// ```no_run
    /// # use std::path::Path;
    /// let tls = cauldron_client::Tls::new(Path::new("ca.crt"), None, true).unwrap();
    /// let options = cauldron_client::Options::new("broker.example:8883", "sensor").tls(tls);
    /// ```
    pub fn new(
        ca_file: &Path,
        identity: Option<(&Path, &Path)>,
        verify_hostname: bool,
    ) -> Result<Tls, String> {
        Tls::trusting(&[ca_file], identity, verify_hostname, TlsVersion::Any)
    }

    /// Like [`Tls::new`], trusting the CA certificates of several PEM files (a bridge's
    /// `bridge_cafile` and the files of its `bridge_capath`) and speaking only `version`.
    ///
    /// ```no_run
    /// # use std::path::Path;
    /// use cauldron_client::{Tls, TlsVersion};
    /// let tls = Tls::trusting(&[Path::new("ca.crt")], None, true, TlsVersion::Tls13).unwrap();
    /// ```
    pub fn trusting(
        ca_files: &[&Path],
        identity: Option<(&Path, &Path)>,
        verify_hostname: bool,
        version: TlsVersion,
    ) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        for ca_file in ca_files {
            for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| file_error(ca_file, e))? {
                roots.add(cert.map_err(|e| file_error(ca_file, e))?).map_err(|e| file_error(ca_file, e))?;
            }
        }
        let ca_file = ca_files.first().copied().unwrap_or(Path::new("(no CA file)"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| file_error(ca_file, e))?;
        let versions: &[&rustls::SupportedProtocolVersion] = match version {
            TlsVersion::Any => rustls::DEFAULT_VERSIONS,
            TlsVersion::Tls12 => &[&rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        let builder = if verify_hostname {
            builder.with_webpki_verifier(verifier)
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
        };
        let config = match identity {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| file_error(cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error(cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| file_error(cert, e))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Tls { config: Arc::new(config) })
    }
}

/// Which TLS versions a connection may use ([`Tls::trusting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 or 1.3, whichever the server prefers.
    #[default]
    Any,
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Checks the chain like the web PKI verifier but forgives a certificate for another name.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
