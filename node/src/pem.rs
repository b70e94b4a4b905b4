//! The PEM files and crypto provider that both TLS ports use: HTTPS on
//! `--http` (http/tls.rs) and mutual TLS on `--listen`
//! (transport/tcp/tls.rs). A leaf module, so that neither port's TLS
//! imports the other.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be read or holds nothing usable.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {flag} {path}: {reason}")]
pub struct PemError {
    /// The flag that named the file (`--tls-cert`, `--internode-ca`, …).
    pub flag: &'static str,
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl PemError {
    /// The error for the file `path`, given as `flag`.
    pub fn new(flag: &'static str, path: &Path, reason: impl ToString) -> PemError {
        PemError {
            flag,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The certificates of the PEM file `path`, given as `flag`; a file
/// without one is refused.
pub(crate) fn certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| PemError::new(flag, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::new(flag, path, e))?;
    if certs.is_empty() {
        return Err(PemError::new(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key of the PEM file `path`, given as `flag`.
pub(crate) fn key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| PemError::new(flag, path, e))
}

/// rustls' crypto provider, for HTTPS and internode TLS alike.
pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    // ring rather than aws-lc-rs: no C toolchain beyond a compiler (no
    // cmake) to build it. ring's provider has no post-quantum key
    // exchange, which rustls now marks by deprecating it.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}
