//! The throwaway PKI of `qkv local up --tls`: a CA made for one local
//! cluster and a certificate per node, written under `DIR/tls/`, and what
//! the rest of `qkv local` needs to talk HTTPS to such nodes (their base
//! URLs, the CA file, a `/health` probe over TLS).
//!
//! Each node certificate names the node id as a DNS name (what internode
//! TLS checks a peer's claimed id against, docs/OPERATIONS.md "TLS"), and
//! `localhost` and `127.0.0.1` for HTTPS; it is usable by a server and a
//! client, as internode TLS is mutual. The CA's key is not kept: nothing
//! else can ever be signed by it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

use super::Error;
use super::process::{connect_for_probe, health_exchange};

/// The directory of the PKI inside the cluster's directory.
pub const TLS_DIR: &str = "tls";

/// `DIR/tls/ca.pem`: the bundle to trust (`qkv --ca-cert`).
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join(TLS_DIR).join("ca.pem")
}

/// Node `id`'s certificate and key files.
pub fn node_files(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let tls = dir.join(TLS_DIR);
    (
        tls.join(format!("{id}.pem")),
        tls.join(format!("{id}-key.pem")),
    )
}

/// The qkvd flags serving HTTPS and internode TLS from the files of
/// [`generate`].
pub fn node_flags(dir: &Path, id: &str) -> Vec<String> {
    let (cert, key) = node_files(dir, id);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let ca = ca_file(dir).display().to_string();
    vec![
        "--tls-cert".into(),
        cert.clone(),
        "--tls-key".into(),
        key.clone(),
        "--internode-ca".into(),
        ca,
        "--internode-cert".into(),
        cert,
        "--internode-key".into(),
        key,
    ]
}

/// Whether a node started with `args` serves HTTPS.
pub fn serves_https(args: &[String]) -> bool {
    args.iter().any(|a| a == "--tls-cert")
}

/// The base URL of a node at `http` started with `args`.
pub fn base_url(http: &str, args: &[String]) -> String {
    let scheme = if serves_https(args) { "https" } else { "http" };
    format!("{scheme}://{http}")
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("cannot make {what}: {e}"))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

/// Makes a new CA and a certificate for each of `ids` under `DIR/tls/`
/// (replacing any from an earlier cluster).
pub fn generate(dir: &Path, ids: &[String]) -> Result<(), Error> {
    let tls = dir.join(TLS_DIR);
    std::fs::create_dir_all(&tls).map_err(|source| Error::Io {
        what: "cannot create",
        path: tls.clone(),
        source,
    })?;
    let ca_key = KeyPair::generate().map_err(|e| failed("the CA key", e))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("the CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "qkv local CA");
    params.distinguished_name = name;
    let ca = params
        .self_signed(&ca_key)
        .map_err(|e| failed("the CA", e))?;
    write(&ca_file(dir), &ca.pem())?;
    for id in ids {
        let key = KeyPair::generate().map_err(|e| failed("a node key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed(id, e))?;
        let dns = |n: &str| {
            n.to_string()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| failed(id, e))
        };
        params.subject_alt_names = vec![
            dns(id)?,
            dns("localhost")?,
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, id.as_str());
        params.distinguished_name = name;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| failed(id, e))?;
        let (cert_file, key_file) = node_files(dir, id);
        write(&cert_file, &cert.pem())?;
        write(&key_file, &key.serialize_pem())?;
        restrict(&key_file)?;
    }
    Ok(())
}

/// Keys are for the owner's eyes only.
fn restrict(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::Io {
            what: "cannot restrict",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Accepts any certificate: the `/health` probe asks a process this
/// machine started whether it serves yet, and trusts the answer with
/// nothing.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
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
        cert: &rustls::pki_types::CertificateDer<'_>,
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

/// The client side of the `/health` probe over TLS, built once: any
/// server certificate is accepted ([`AnyServer`]), no client certificate.
static PROBE_CONFIG: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
});

/// One `GET /health` over HTTPS: `Ok` on a 200 answer, else why not.
pub fn probe_health_tls(addr: &str) -> Result<(), String> {
    let config = PROBE_CONFIG.clone()?;
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .map_err(|e| e.to_string())?
        .to_owned();
    let mut conn =
        rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS to {addr}: {e}"))?;
    let mut tcp = connect_for_probe(addr)?;
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    health_exchange(&mut s, addr, " over TLS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_a_certificate_of_one_ca_and_the_flags_to_use_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = vec!["n1".to_string(), "n2".to_string()];
        generate(dir.path(), &ids).expect("generated");
        assert!(ca_file(dir.path()).is_file());
        for id in &ids {
            let (cert, key) = node_files(dir.path(), id);
            assert!(cert.is_file() && key.is_file(), "{id}");
        }
        let flags = node_flags(dir.path(), "n2");
        assert!(serves_https(&flags));
        assert!(flags.iter().any(|f| f.ends_with("n2-key.pem")), "{flags:?}");
        assert_eq!(base_url("127.0.0.1:8002", &flags), "https://127.0.0.1:8002");
        assert_eq!(base_url("127.0.0.1:8002", &[]), "http://127.0.0.1:8002");
    }
}
