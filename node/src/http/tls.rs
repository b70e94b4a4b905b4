//! HTTPS on the `--http` port: the server side of TLS (rustls, with ring
//! as its crypto provider) from `--tls-cert` (a PEM chain, the node's own
//! certificate first) and `--tls-key` (a PEM private key). The accept loop
//! (`serve`) runs the handshake on each connection before HTTP; this
//! module only reads the files and builds rustls' configuration, so every
//! reason they cannot be used is one line at start.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::pem::{self, PemError};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that cannot be read or holds nothing usable.
    #[error(transparent)]
    File(#[from] PemError),
    /// rustls refused the pair (e.g. a key that is not the certificate's).
    #[error("cannot serve TLS with {cert} and {key}: {reason}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls' reason.
        reason: String,
    },
}

/// The HTTPS acceptor for the certificate chain in `cert` and the key in
/// `key` (both PEM).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = pem::certs("--tls-cert", cert)?;
    let private = pem::key("--tls-key", key)?;
    let config_error = |reason: String| TlsError::Config {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(pem::ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use warp::Filter as _;

    use super::*;
    use crate::http::serve::{Limits, serve};

    /// A CA, and a certificate it signed for 127.0.0.1.
    struct Pki {
        ca: rcgen::Certificate,
        cert_pem: String,
        key_pem: String,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key_ref = &ca_key;
        let ca = ca.self_signed(ca_key_ref).expect("self-signed");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("signed");
        Pki {
            ca,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// Serves "ok" over HTTPS with `pki`'s certificate; returns the address.
    async fn https_server(pki: &Pki, dir: &Path) -> std::net::SocketAddr {
        let cert = write(dir, "cert.pem", &pki.cert_pem);
        let key = write(dir, "key.pem", &pki.key_pem);
        let tls = acceptor(&cert, &key).expect("acceptor");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = Limits {
            max_connections: 16,
            header_timeout: std::time::Duration::from_secs(5),
            tls: Some(tls),
        };
        let filter = warp::any().and_then(|| async {
            Ok::<_, warp::Rejection>(crate::http::respond(200, "text/plain", "ok"))
        });
        let metrics = Arc::new(crate::metrics::Metrics::new());
        tokio::spawn(serve(
            listener,
            filter,
            limits,
            metrics,
            std::future::pending(),
        ));
        addr
    }

    async fn get_over_tls(
        addr: std::net::SocketAddr,
        trusted: &rcgen::Certificate,
    ) -> std::io::Result<String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(trusted.der().clone())
            .expect("a root certificate");
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: qkv\r\nConnection: close\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    #[tokio::test]
    async fn https_is_served_to_a_client_that_trusts_the_ca_and_refused_to_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = pki();
        let addr = https_server(&ours, dir.path()).await;
        let reply = get_over_tls(addr, &ours.ca).await.expect("served");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("ok"), "{reply}");

        // A client that trusts another CA refuses the node's certificate.
        let theirs = pki();
        let refused = get_over_tls(addr, &theirs.ca).await;
        assert!(refused.is_err(), "{refused:?}");

        // Plain HTTP on the HTTPS port gets no HTTP answer.
        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain
            .write_all(b"GET /health HTTP/1.1\r\nHost: qkv\r\n\r\n")
            .await
            .expect("write");
        let mut reply = Vec::new();
        let _ = plain.read_to_end(&mut reply).await;
        assert!(
            !String::from_utf8_lossy(&reply).contains("HTTP/1.1 200"),
            "{reply:?}"
        );
    }

    #[test]
    fn unusable_certificates_and_keys_are_refused_with_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (pki(), pki());
        let cert = write(dir.path(), "cert.pem", &a.cert_pem);
        let key = write(dir.path(), "key.pem", &a.key_pem);
        let other_key = write(dir.path(), "other.pem", &b.key_pem);
        let empty = write(dir.path(), "empty.pem", "");
        let missing = dir.path().join("missing.pem");
        assert!(acceptor(&cert, &key).is_ok());
        for (c, k, says) in [
            (&missing, &key, "--tls-cert"),
            (&empty, &key, "--tls-cert"),
            (&cert, &missing, "--tls-key"),
            (&cert, &empty, "--tls-key"),
            (&cert, &other_key, "cannot serve TLS"),
        ] {
            let Err(err) = acceptor(c, k) else {
                panic!("{c:?} and {k:?} were accepted");
            };
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
