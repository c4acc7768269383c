//! A minimal blocking WebSocket client for the load tools (handshake, masked text
//! frames out, unmasked frames in), on `wire`'s frame codec.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use wire::frame::{Decoder, Incoming, Limits, Opcode, encode_client_frame};

/// A client's upgrade request for `path` on `host`, offering `protocol` if any (a
/// fixed key: the tools check the status line, not the accept value).
pub fn upgrade_request(host: &str, path: &str, protocol: Option<&str>) -> String {
    let offer = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
}

/// Read the answer to an upgrade request, byte by byte (nothing after it is taken);
/// `Err` unless it is `101 Switching Protocols`.
pub fn read_switching_protocols(s: &mut impl Read) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::Error::other("closed during the handshake"));
        }
        head.push(b[0]);
    }
    if head.starts_with(b"HTTP/1.1 101") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ))
    }
}

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    s: TcpStream,
    dec: Decoder,
    buf: Vec<u8>,
}

impl WsClient {
    /// Connect and upgrade on `path`, offering `protocol` if any.
    pub fn connect(addr: SocketAddr, path: &str, protocol: Option<&str>) -> std::io::Result<Self> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(upgrade_request("x", path, protocol).as_bytes())?;
        read_switching_protocols(&mut s)?;
        Ok(Self {
            s,
            dec: Decoder::client(Limits::default()),
            buf: Vec::new(),
        })
    }

    /// A second handle on the same socket (one thread reads, another writes).
    pub fn writer(&self) -> std::io::Result<TcpStream> {
        self.s.try_clone()
    }

    /// Send one text message.
    pub fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        send_text(&mut self.s, text)
    }

    /// The next text message; `None` once the connection ends.
    pub fn recv_text(&mut self) -> Option<String> {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some((item, used))) => {
                    let text = match item {
                        Incoming::Text(t) => Some(t.to_owned()),
                        Incoming::Close(_) => return None,
                        _ => None,
                    };
                    self.buf.drain(..used);
                    if text.is_some() {
                        return text;
                    }
                }
                Ok(None) => {
                    let mut chunk = [0u8; 65536];
                    match self.s.read(&mut chunk) {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// Send one text message on a writer handle from [`WsClient::writer`].
pub fn send_text(s: &mut TcpStream, text: &str) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(text.len() + 14);
    encode_client_frame(&mut out, true, Opcode::Text, text.as_bytes(), [9, 8, 7, 6]);
    s.write_all(&out)
}
