//! The admin port: plain HTTP/1.1 on its own thread, away from the link server and
//! the core. `GET /metrics` answers the Prometheus text of [`Metrics`]; `GET /health`
//! answers `ok`. Anything else is a 404 or 405; a request head that is malformed or over
//! 8 KiB gets a 400, one that does not arrive within 5 s is closed. One short-lived
//! thread per connection: scrapes are rare.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
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
        ("GET", "/health") => respond(&mut s, "200 OK", "ok\n", text),
        (_, "/metrics" | "/health") => {
            respond(&mut s, "405 Method Not Allowed", "GET only\n", text)
        }
        _ => respond(&mut s, "404 Not Found", "not found\n", text),
    }
}
