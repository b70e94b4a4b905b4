//! Mutual TLS on the `--listen` port (`--internode-ca`, `--internode-cert`,
//! `--internode-key`): every internode connection, dialed or accepted,
//! runs inside TLS 1.3, each side presenting a certificate the other
//! verifies against the cluster's CA bundle. The quorumkv handshake
//! ([`super::handshake`]) then runs inside it, and the node id a peer
//! claims there must be a DNS name of its certificate ([`check_name`]),
//! so that holding some certificate of the CA does not let a process
//! pose as another node (docs/SECURITY.md).
//!
//! The dialer does not know the id of the node behind an address before
//! the handshake, so the TLS layer verifies only the chain (and the
//! usage: `serverAuth` for the listener, `clientAuth` for the dialer); the
//! name is checked against the claimed id once the peer has claimed one.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::Refusal;
use super::refusals::{MAX_TEXT, bounded};
use crate::pem::{self, PemError};

/// Why the internode CA, certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that cannot be read or holds nothing usable.
    #[error(transparent)]
    File(#[from] PemError),
    /// rustls refused the combination (e.g. a key that is not the
    /// certificate's).
    #[error("cannot run internode TLS with {cert} and {key}: {reason}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls' reason.
        reason: String,
    },
}

/// Both sides of internode TLS, built once at start.
#[derive(Clone)]
pub struct InternodeTls {
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for InternodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternodeTls")
    }
}

impl InternodeTls {
    /// Reads the PEM files of `--internode-ca` (the CA bundle peers'
    /// certificates must chain to), `--internode-cert` (this node's
    /// chain, its own certificate first) and `--internode-key`; every
    /// reason one cannot be used names its flag.
    pub fn load(ca_file: &Path, cert: &Path, key: &Path) -> Result<InternodeTls, TlsError> {
        let ca = pem::certs("--internode-ca", ca_file)?;
        let chain = pem::certs("--internode-cert", cert)?;
        let private = pem::key("--internode-key", key)?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| PemError::new("--internode-ca", ca_file, e))?;
        }
        InternodeTls::new(roots, chain, private).map_err(|reason| TlsError::Config {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason,
        })
    }

    /// Both configurations from the CA roots, this node's chain and key.
    pub fn new(
        roots: RootCertStore,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<InternodeTls, String> {
        let provider = pem::ring_provider();
        let roots = Arc::new(roots);
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| e.to_string())?;
        let servers = Arc::new(ChainOnly {
            roots,
            provider: provider.clone(),
        });
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(servers)
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok(InternodeTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// The dialer's TLS handshake on a fresh connection.
    pub async fn connect(&self, tcp: TcpStream) -> Result<Stream, super::NetError> {
        // Any name: the listener's is checked against the id it claims
        // (`check_name`), which the dialer does not know yet.
        let name = ServerName::try_from("quorumkv-peer")
            .unwrap_or_else(|_| unreachable!("a valid DNS name"));
        let tls = self.connector.connect(name, tcp).await.map_err(refusal)?;
        Ok(Either::Right(Box::new(tls.into())))
    }

    /// The listener's TLS handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Stream, super::NetError> {
        let tls = self.acceptor.accept(tcp).await.map_err(refusal)?;
        Ok(Either::Right(Box::new(tls.into())))
    }
}

/// A failed TLS handshake: a refusal when TLS said why (another CA, no
/// certificate), else the socket error.
fn refusal(e: std::io::Error) -> super::NetError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(why) => super::NetError::Refused(Refusal::Tls(bounded(&why.to_string(), MAX_TEXT))),
        None => super::NetError::Io(e),
    }
}

/// Verifies a listener's chain against the CA, whatever names it holds.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Refuses a peer whose certificate does not name the node id it claims:
/// the id must be one of the certificate's DNS subject alternative names
/// (compared as DNS names are, without regard to case).
pub fn check_name(cert: &CertificateDer<'_>, claimed: &str) -> Result<(), Refusal> {
    let refused = || Refusal::NotCertified(bounded(claimed, MAX_TEXT));
    let name = ServerName::try_from(claimed).map_err(|_| refused())?;
    let parsed = ParsedCertificate::try_from(cert).map_err(|_| refused())?;
    rustls::client::verify_server_name(&parsed, &name).map_err(|_| refused())
}

/// A connection of the transport: plain TCP without `--internode-ca`
/// (`Left`), or TLS over it with it (`Right`: the peer's certificate is
/// verified).
pub type Stream = Either<TcpStream, Box<tokio_rustls::TlsStream<TcpStream>>>;

/// What the handshake needs of a connection besides bytes: the
/// certificate the peer presented, if it runs over TLS.
pub trait Certified: AsyncRead + AsyncWrite + Unpin {
    /// The peer's own certificate (`None` without TLS).
    fn peer_certificate(&self) -> Option<&CertificateDer<'static>>;
}

impl Certified for TcpStream {
    fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        None
    }
}

impl Certified for Stream {
    fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        match self {
            Either::Left(_) => None,
            Either::Right(s) => s.get_ref().1.peer_certificates()?.first(),
        }
    }
}
