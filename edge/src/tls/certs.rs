//! The certificates TLS connections are served with. PEM files named in the config
//! (each a certificate chain and its private key) are read into one rustls
//! `ServerConfig`: TLS 1.2 and 1.3 with rustls's default cipher suites (the `ring`
//! provider), ALPN `http/1.1`, stateless session tickets (resumption without the
//! certificate's signature), and the certificate picked by the client's SNI (the first
//! whose names match; the first of all when none does or the client sent no name).
//!
//! A thread reads the files once a second (and at once on SIGHUP); when their bytes
//! changed and still load, the new config replaces the old for the handshakes that
//! follow (open connections keep their sessions); when they do not load, the old one
//! stays and the log says why. Workers look at a generation number each tick (no lock)
//! and take the new config only when it moved, as they do for the token keys.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tracing::{info, warn};

/// How often the files are read.
const POLL: Duration = Duration::from_secs(1);

/// One certificate: its chain's PEM file and its key's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The current TLS config, shared by the workers.
#[derive(Debug)]
pub struct Certs {
    files: Vec<CertFiles>,
    current: Mutex<Arc<ServerConfig>>,
    generation: AtomicU64,
    /// The files' bytes last read (loaded or refused), so a bad file is reported once.
    seen: Mutex<Vec<u8>>,
    /// Warned that a file cannot be read (once, until it can again).
    unreadable: AtomicBool,
}

impl Certs {
    /// Read `files` (at least one); an error says which file and why.
    pub fn load(files: Vec<CertFiles>) -> Result<Self, String> {
        let bytes = read_all(&files)?;
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: Mutex::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            seen: Mutex::new(bytes),
            unreadable: AtomicBool::new(false),
        })
    }

    /// Bumped on every replacement.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The config now.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read the files again; replace the config when their bytes changed and load
    /// (`force`: even when unchanged, as SIGHUP asks). Returns whether it was replaced.
    pub fn reload(&self, force: bool) -> bool {
        let bytes = match read_all(&self.files) {
            Ok(b) => b,
            Err(e) => {
                // Once until they can be read again (a file being replaced, say).
                if !self.unreadable.swap(true, Ordering::Relaxed) || force {
                    warn!(error = %e, "TLS certificates unreadable; the loaded ones stay");
                }
                return false;
            }
        };
        self.unreadable.store(false, Ordering::Relaxed);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == bytes && !force {
                return false;
            }
            *seen = bytes;
        }
        match server_config(&self.files) {
            Ok(c) => {
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(c);
                self.generation.fetch_add(1, Ordering::Release);
                info!(certificates = self.files.len(), "TLS certificates reloaded");
                true
            }
            Err(e) => {
                warn!(error = %e, "TLS certificates not reloaded; the old ones stay");
                false
            }
        }
    }
}

/// Reload `certs` whenever its files change, until `stop`.
pub fn watch(certs: Arc<Certs>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        certs.reload(false);
    }
}

/// Every file's bytes, one after the other (a change anywhere shows).
fn read_all(files: &[CertFiles]) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    for f in files {
        for path in [&f.cert, &f.key] {
            let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            all.extend_from_slice(&(b.len() as u64).to_le_bytes());
            all.extend_from_slice(&b);
        }
    }
    Ok(all)
}

/// The server config for `files`: each chain with its key, checked to match.
fn server_config(files: &[CertFiles]) -> Result<ServerConfig, String> {
    if files.is_empty() {
        return Err("no TLS certificate configured".into());
    }
    let provider = super::provider();
    let mut keys = Vec::with_capacity(files.len());
    for f in files {
        keys.push(Arc::new(certified_key(f, &provider)?));
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless session tickets (sealed with a key of this process, rotated every
    // 6 h): a client that reconnects to this edge resumes without the certificate's
    // signature, however many clients there are (rustls's default, a stateful cache,
    // remembers 256 sessions).
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
    Ok(config)
}

fn certified_key(
    f: &CertFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(&f.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", f.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", f.cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&f.key).map_err(|e| format!("{}: {e}", f.key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} with {}: {e}", f.cert.display(), f.key.display()))
}

/// Picks a certificate by the client's SNI.
#[derive(Debug)]
struct BySni {
    /// Never empty.
    keys: Vec<Arc<CertifiedKey>>,
}

impl BySni {
    /// The first certificate valid for `name`.
    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = ServerName::try_from(name).ok()?;
        self.keys.iter().find(|k| {
            k.end_entity_cert().is_ok_and(|der| {
                webpki::EndEntityCert::try_from(der)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            })
        })
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = match (self.keys.len(), hello.server_name()) {
            (2.., Some(name)) => self.find(name),
            _ => None,
        };
        picked.or(self.keys.first()).cloned()
    }
}
