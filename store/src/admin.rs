//! The admin port: plain HTTP/1.1 on its own thread, away from the link server and
//! the core. `GET /metrics` answers the Prometheus text of [`Metrics`]; `GET /health`
//! answers `ok` once the link listener is up (503 `starting` before: a script or an
//! orchestrator waits on it before starting edges). Anything else is a 404 or 405; a request head that is malformed or over
//! 8 KiB gets a 400, one that does not arrive within 5 s is closed. One short-lived
//! thread per connection: scrapes are rare.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use crate::metrics::Metrics;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serve `listener` forever on a new thread.
pub fn spawn(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("store-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        let m = Arc::clone(&metrics);
                        let _ = std::thread::Builder::new()
                            .name("store-admin-conn".into())
                            .spawn(move || serve(s, &m));
                    }
                    Err(e) => warn!(error = %e, "admin accept failed"),
                }
            }
        })?;
    Ok(())
}

fn respond(s: &mut TcpStream, status: &str, body: &str, content_type: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body.as_bytes());
}

fn serve(mut s: TcpStream, metrics: &Metrics) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => {
                respond(&mut s, "400 Bad Request", "bad request\n", "text/plain");
                return;
            }
        }
    };
    let text = "text/plain; charset=utf-8";
    match (method.as_str(), path.split('?').next().unwrap_or_default()) {
        ("GET", "/metrics") => respond(
            &mut s,
            "200 OK",
            &metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        ("GET", "/health") if metrics.serving.load(Ordering::Acquire) => {
            respond(&mut s, "200 OK", "ok\n", text);
        }
        ("GET", "/health") => respond(&mut s, "503 Service Unavailable", "starting\n", text),
        (_, "/metrics" | "/health") => {
            respond(&mut s, "405 Method Not Allowed", "GET only\n", text)
        }
        _ => respond(&mut s, "404 Not Found", "not found\n", text),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn health_says_starting_until_links_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::default());
        spawn(listener, Arc::clone(&metrics)).expect("spawn");
        assert_eq!(get(addr, "/health"), "HTTP/1.1 503 Service Unavailable");
        metrics.serving.store(true, Ordering::Release);
        assert_eq!(get(addr, "/health"), "HTTP/1.1 200 OK");
    }
}
