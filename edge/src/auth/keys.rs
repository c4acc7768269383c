//! The verifier every worker checks tokens against, replaced when its key file (the
//! JWKS, or the HS256 secret) changes on disk: a thread reads the file once a second;
//! when its bytes changed and still load, the new verifier replaces the old (open
//! connections go on: what they proved is not asked again until they refresh); when
//! they do not load, the old one stays and the log says why. Workers look at a
//! generation number each tick (no lock) and take the new verifier only when it moved.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::{info, warn};

use super::token::Verifier;
use crate::config::Config;

/// How often the key file is read.
const POLL: Duration = Duration::from_secs(1);

/// The current verifier, shared by the workers.
#[derive(Debug)]
pub struct Keys {
    current: Mutex<Arc<Verifier>>,
    generation: AtomicU64,
}

impl Keys {
    /// Start with `v` (generation 0).
    pub fn new(v: Verifier) -> Self {
        Self {
            current: Mutex::new(Arc::new(v)),
            generation: AtomicU64::new(0),
        }
    }

    /// Bumped on every replacement.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The verifier now.
    pub fn current(&self) -> Arc<Verifier> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, v: Verifier) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(v);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// The file the configured keys come from (the HS256 secret or the JWKS); `None`
/// when auth is off.
pub fn key_file(cfg: &crate::config::Config) -> Result<Option<&std::path::Path>, String> {
    use crate::config::AuthMode;
    if cfg.auth == AuthMode::Off {
        return Ok(None);
    }
    match (&cfg.auth_secret_file, &cfg.auth_jwks_file) {
        (Some(path), None) | (None, Some(path)) => Ok(Some(path)),
        _ => Err("auth needs exactly one of auth_secret_file and auth_jwks_file".into()),
    }
}

/// The verifier for the key file's contents `bytes`, with the configuration's
/// audience, issuer and skew.
pub fn from_key_file(cfg: &crate::config::Config, bytes: &[u8]) -> Result<Verifier, String> {
    let v = if cfg.auth_jwks_file.is_some() {
        let json = std::str::from_utf8(bytes).map_err(|_| "auth JWKS: not UTF-8".to_owned())?;
        Verifier::with_jwks(json).map_err(|e| format!("auth JWKS: {e}"))?
    } else {
        Verifier::with_secret(bytes.trim_ascii_end()).map_err(|e| format!("auth secret: {e}"))?
    };
    Ok(v.audience(cfg.auth_audience.clone())
        .issuer(cfg.auth_issuer.clone())
        .skew(cfg.auth_skew.as_secs()))
}

/// The keys the configuration asks for (`None`: auth is off), and the key file's
/// bytes they came from. Any problem stops the edge from starting.
pub fn load(cfg: &Config) -> Result<Option<(Keys, Vec<u8>)>, String> {
    let Some(path) = key_file(cfg)? else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| format!("auth keys {}: {e}", path.display()))?;
    let v = from_key_file(cfg, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some((Keys::new(v), bytes)))
}

/// Read the configured key file every second until `stop`, and replace `keys`'
/// verifier when the file's bytes change and load. `initial` is what `keys` was
/// built from.
pub fn watch(cfg: Arc<Config>, keys: Arc<Keys>, initial: Vec<u8>, stop: Arc<AtomicBool>) {
    let Ok(Some(path)) = key_file(&cfg) else {
        return;
    };
    let path = path.to_owned();
    let mut last = initial;
    // Warned that the file cannot be read (once, until it can again).
    let mut unreadable = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                if !unreadable {
                    warn!(file = %path.display(), error = %e, "auth keys unreadable: the loaded keys stay");
                }
                unreadable = true;
                continue;
            }
        };
        unreadable = false;
        if bytes == last {
            continue;
        }
        match from_key_file(&cfg, &bytes) {
            Ok(v) => {
                info!(file = %path.display(), verifier = ?v, "auth keys reloaded");
                keys.replace(v);
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "auth keys changed but do not load: the loaded keys stay")
            }
        }
        last = bytes;
    }
}
