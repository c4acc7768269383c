//! An async WebSocket client for the load generator, on `wire`'s frame codec: connect
//! (optionally from a chosen source address, so that one host can open more than one
//! address's worth of ports to an edge), upgrade, masked text frames out, incoming
//! messages handed to a callback straight from the read buffer (no copy per message),
//! and the server's pings answered as they are read.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::frame::{Decoder, Incoming, Limits, Opcode, encode_client_frame};

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
        let mut s = tcp(addr, source).await?;
        let req = crate::ws::upgrade_request(&addr.to_string(), path, protocol);
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
        buf.drain(..end);
        Ok(Self {
            s,
            dec: Decoder::client(Limits::default()),
            buf,
            out: Vec::new(),
        })
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
                        Ok(_) => {}
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
