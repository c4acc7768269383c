//! A test certificate authority (generated with `rcgen`), certificates it signs, and a
//! rustls client that trusts only it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A TLS stream to the edge.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A certificate authority for one test, its files in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what clients trust.
    pub ca_pem: PathBuf,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate the CA signed: its files and its key's SPKI hash (base64 of SHA-256,
/// what Chromium's `--ignore-certificate-errors-spki-list` takes).
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub spki_sha256: String,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ringline test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        Self {
            dir,
            ca_pem,
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as
    /// `<stem>.pem` (leaf, then the CA) and `<stem>-key.pem`.
    pub fn leaf(&self, names: &[&str], stem: &str) -> Leaf {
        self.leaf_with(names, stem, &KeyPair::generate().unwrap())
    }

    /// [`TestCa::leaf`] with a given key.
    pub fn leaf_with(&self, names: &[&str], stem: &str, key: &KeyPair) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.use_authority_key_identifier_extension = true;
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let cert = params.signed_by(key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{stem}.pem")),
            self.dir.path().join(format!("{stem}-key.pem")),
        );
        let chain = format!("{}{}", cert.pem(), pem_of(&self.ca_der));
        std::fs::write(&cert_path, chain).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            cert: cert_path,
            key: key_path,
            spki_sha256: spki_sha256(key),
        }
    }

    /// A client config that trusts this CA only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(ring_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A finished TLS session to `addr` for server name `name`.
    pub fn connect(&self, addr: SocketAddr, name: &str) -> Result<TlsStream, String> {
        connect_with(self.client_config(), addr, name)
    }
}

#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A finished TLS session to `addr` for `name` with `config`; `Err` says why not.
pub fn connect_with(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<TlsStream, String> {
    handshake(config, TcpStream::connect(addr).unwrap(), name)
}

/// A TLS handshake on `tcp` for `name`.
fn handshake(config: Arc<ClientConfig>, tcp: TcpStream, name: &str) -> Result<TlsStream, String> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// The certificate the server presented on `s`.
pub fn peer_cert(s: &TlsStream) -> CertificateDer<'static> {
    s.conn.peer_certificates().unwrap()[0].clone().into_owned()
}

/// The DER of the leaf in the PEM file at `path`.
pub fn leaf_der(path: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

fn spki_sha256(key: &KeyPair) -> String {
    use base64::Engine;
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.subject_public_key_info());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// An edge with a TLS listener serving `leaves`, its log kept.
pub struct TlsEdge {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub tls: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TlsEdge {
    pub fn start(leaves: &[&Leaf], extra: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge"));
        cmd.args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
            .args(["--pin", "false", "--workers", "2"]);
        for l in leaves {
            cmd.arg("--tls-cert")
                .arg(&l.cert)
                .arg("--tls-key")
                .arg(&l.key);
        }
        cmd.args(extra);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = super::spawn_logged(
            &mut cmd,
            "edge listening",
            "EDGE_LOG",
            Some(Arc::clone(&log)),
        );
        let tls = log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| {
                l.split("listen_tls=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("listen_tls in the log");
        Self {
            child,
            addr,
            tls,
            log,
        }
    }

    pub fn metric(&self, name: &str) -> u64 {
        super::metric_sum(&super::http_get(self.addr, "/metrics").1, name)
    }

    pub fn logged(&self, what: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }
}

impl Drop for TlsEdge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`TestCa::connect`] from source address `from` (any 127.x.y.z on loopback), for
/// server name `name`.
pub fn connect_from(
    ca: &TestCa,
    from: std::net::IpAddr,
    addr: SocketAddr,
    name: &str,
) -> Result<TlsStream, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&addr.into()).map_err(|e| e.to_string())?;
    handshake(ca.client_config(), s.into(), name)
}

impl Leaf {
    /// One PEM file with the chain, then the key (what HAProxy's `crt` takes).
    pub fn combined(&self) -> PathBuf {
        let path = self.cert.with_extension("combined.pem");
        let mut all = std::fs::read(&self.cert).unwrap();
        all.extend(std::fs::read(&self.key).unwrap());
        std::fs::write(&path, all).unwrap();
        path
    }
}
