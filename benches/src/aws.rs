//! An async WebSocket client for the load generator, on `wire`'s frame codec: connect
//! (optionally from a chosen source address, so that one host can open more than one
//! address's worth of ports to an edge), upgrade, masked text frames out, incoming
//! messages handed to a callback straight from the read buffer (no copy per message),
//! and the server's pings answered as they are read. A connection may offer
//! `permessage-deflate`; compressed messages are inflated by one inflater per thread
//! (nothing per connection) before the callback sees them.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::frame::deflate::{Inflater, inflate_message};
use wire::frame::{Decoder, Incoming, Limits, Opcode, encode_client_frame};

thread_local! {
    /// The thread's inflater and the buffer a compressed message is inflated into.
    static INFLATE: std::cell::RefCell<(Inflater, Vec<u8>)> =
        std::cell::RefCell::new((Inflater::default(), Vec::new()));
}

/// The `Sec-WebSocket-Extensions` offer of a connection that asks for compression.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What a connection received, as the callback of [`Ws::recv`] sees it.
#[derive(Debug)]
pub enum Msg<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// One client connection.
#[derive(Debug)]
pub struct Ws {
    s: TcpStream,
    dec: Decoder,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Bytes read from the socket since the handshake.
    received: u64,
}

/// A TCP connection to `addr` from `source` (port chosen by the kernel) if given.
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Ws {
    /// Connect and upgrade on `path`, offering `protocol` if any.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        protocol: Option<&str>,
        source: Option<IpAddr>,
    ) -> io::Result<Self> {
        Self::connect_offering(addr, path, protocol, source, false).await
    }

    /// [`connect`](Self::connect), offering `permessage-deflate` too if `deflate`.
    pub async fn connect_offering(
        addr: SocketAddr,
        path: &str,
        protocol: Option<&str>,
        source: Option<IpAddr>,
        deflate: bool,
    ) -> io::Result<Self> {
        let mut s = tcp(addr, source).await?;
        let mut req = crate::ws::upgrade_request(&addr.to_string(), path, protocol);
        if deflate {
            req.truncate(req.len() - 2);
            req.push_str(&format!(
                "Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n\r\n"
            ));
        }
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(512);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(io::Error::other("handshake answer too long"));
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::other("closed during the handshake"));
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&buf[..end]);
            return Err(io::Error::other(
                line.lines().next().unwrap_or_default().to_owned(),
            ));
        }
        let agreed = String::from_utf8_lossy(&buf[..end])
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate");
        buf.drain(..end);
        let mut dec = Decoder::client(Limits::default());
        if agreed {
            dec.enable_deflate();
        }
        Ok(Self {
            s,
            dec,
            buf,
            out: Vec::new(),
            received: 0,
        })
    }

    /// Bytes read from the socket since the handshake (frames as sent: compressed
    /// ones compressed).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Send one text message.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.out.clear();
        encode_client_frame(
            &mut self.out,
            true,
            Opcode::Text,
            text.as_bytes(),
            [9, 8, 7, 6],
        );
        self.s.write_all(&self.out).await
    }

    /// Send one binary message.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.clear();
        encode_client_frame(&mut self.out, true, Opcode::Binary, bytes, [9, 8, 7, 6]);
        self.s.write_all(&self.out).await
    }

    /// Wait for at least one message and hand every complete one to `f`, until `f`
    /// returns false or the buffer holds no complete message. Returns false once the
    /// connection has ended (closed, reset, or a protocol error).
    pub async fn recv(&mut self, mut f: impl FnMut(Msg<'_>) -> bool) -> bool {
        let mut delivered = false;
        // Messages are handed over in place; the consumed prefix goes in one drain.
        let mut at = 0;
        let mut pong: Option<Vec<u8>> = None;
        let alive = loop {
            match self.dec.decode(&mut self.buf[at..]) {
                Ok(Some((item, used))) => {
                    let more = match item {
                        Incoming::Text(t) => {
                            delivered = true;
                            f(Msg::Text(t))
                        }
                        Incoming::Binary(b) => {
                            delivered = true;
                            f(Msg::Binary(b))
                        }
                        Incoming::Compressed { text, payload } => {
                            delivered = true;
                            match inflated(text, payload, &mut f) {
                                Some(more) => more,
                                None => break false,
                            }
                        }
                        Incoming::Close(_) => break false,
                        Incoming::Ping(p) => {
                            pong = Some(p.to_vec());
                            true
                        }
                        _ => true,
                    };
                    at += used;
                    // A server's ping is answered at once, as a browser would.
                    if let Some(p) = pong.take() {
                        self.out.clear();
                        encode_client_frame(&mut self.out, true, Opcode::Pong, &p, [1, 2, 3, 4]);
                        if self.s.write_all(&self.out).await.is_err() {
                            break false;
                        }
                    }
                    if !more {
                        break true;
                    }
                }
                Ok(None) if delivered => break true,
                Ok(None) => {
                    self.buf.drain(..at);
                    at = 0;
                    if self.buf.capacity() - self.buf.len() < 4096 {
                        self.buf.reserve(16 * 1024);
                    }
                    match self.s.read_buf(&mut self.buf).await {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => self.received += n as u64,
                    }
                }
                Err(_) => break false,
            }
        };
        self.buf.drain(..at);
        alive
    }

    /// The next text message, owned; `None` once the connection ends.
    pub async fn recv_text(&mut self) -> Option<String> {
        let mut got = None;
        while got.is_none() {
            let alive = self
                .recv(|m| {
                    if let Msg::Text(t) = m {
                        got = Some(t.to_owned());
                        false
                    } else {
                        true
                    }
                })
                .await;
            if !alive {
                return got;
            }
        }
        got
    }
}

/// Inflate compressed message `payload` with the thread's inflater and hand it to `f`;
/// `None` if it does not inflate (the connection is done).
fn inflated(text: bool, payload: &[u8], f: &mut impl FnMut(Msg<'_>) -> bool) -> Option<bool> {
    INFLATE.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (inflater, out) = &mut *guard;
        out.clear();
        inflate_message(inflater, text, payload, 64 << 20, out).ok()?;
        Some(if text {
            f(Msg::Text(std::str::from_utf8(out).ok()?))
        } else {
            f(Msg::Binary(out))
        })
    })
}
