//! TLS termination's shared half: the certificates the `listen_tls` listener serves
//! ([`certs`]: PEM files in, one rustls `ServerConfig` out, picked by SNI, reloaded
//! when the files change or on SIGHUP). Each connection's own TLS session, the
//! sans-IO layer between its receive buffers and the WebSocket framer, is
//! [`worker::conn::tls`](crate::worker::conn::tls).

pub mod certs;

/// Whether the kernel offers kTLS (the `tls` upper-layer protocol is registered). When it
/// does not, records are sealed and opened in user space (every connection encrypts its
/// own copy of a shared frame); the log says which path runs.
pub fn kernel_tls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"))
}
