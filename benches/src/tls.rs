//! TLS for the measuring tools: a client config that checks no certificate (a load
//! tool measures servers, and keeps its own cost low), and throw-away self-signed
//! certificates made by `openssl` (ECDSA P-256 or RSA-2048).
#![allow(clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

/// The load tools' client TLS config: TLS 1.2 and 1.3, ALPN `http/1.1`, no certificate checks.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(ring_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCheck(provider)))
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every handshake a full one (the certificate's signature included).
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    }))
}

#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Accepts any certificate and signature: a load tool measuring servers.
#[derive(Debug)]
pub struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A throw-away self-signed certificate for `localhost` with a `key` (`ecdsa` or
/// `rsa`) key, made by `openssl` in `dir`: (certificate, key).
pub fn make_cert(dir: &std::path::Path, key: &str) -> (PathBuf, PathBuf) {
    let (cert, keyf) = (dir.join("cert.pem"), dir.join("key.pem"));
    let algo: &[&str] = match key {
        "ecdsa" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        "rsa" => &["-newkey", "rsa:2048"],
        other => panic!("--tls takes ecdsa or rsa, not {other}"),
    };
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(algo)
        .arg("-keyout")
        .arg(&keyf)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        ok.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, keyf)
}

/// A blocking `wss://` connection to `addr` (SNI `localhost`), upgraded on `path`: it
/// is held open, idle, by `idle_conns --tls`.
pub fn connect_wss(
    addr: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    use std::io::Write;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(client_config(), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(crate::ws::upgrade_request("x", path, None).as_bytes())?;
    crate::ws::read_switching_protocols(&mut s)?;
    Ok(s)
}
