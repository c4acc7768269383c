//! The TLS client config of the store links (`link_tls_ca_file`): the stores'
//! certificates are checked against the CA certificates in that PEM file, for the
//! store's id in the cluster map as its name (a store's certificate names its id).
//! TLS 1.2 and 1.3, the `ring` provider's defaults; no client certificate (a link
//! proves its membership with the cluster secret, inside the session).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The links' client config, trusting the CA certificates in `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", ca_file.display()));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let config = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
