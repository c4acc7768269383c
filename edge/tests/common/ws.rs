//! A minimal WebSocket client built on `wire`'s client-side encoder and decoder.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use wire::frame::deflate::{Deflater, Inflater, inflate_message};
use wire::frame::{
    Decoder, Incoming, Limits, Opcode, encode_client_frame, encode_compressed_client_frame,
};

/// A minimal WebSocket client built on `wire`'s client-side encoder and decoder, over
/// TCP (or any stream: a TLS session, for `wss://`).
pub struct Ws<S = TcpStream> {
    pub s: S,
    dec: Decoder,
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the server answered with, if any (with
    /// `permessage-deflate` in it, compressed messages are inflated).
    pub extensions: Option<String>,
    /// Compressed messages received.
    pub compressed: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    Eof,
}

impl Ws<TcpStream> {
    pub fn connect(addr: SocketAddr, path: &str) -> Result<Self, String> {
        Self::connect_with(addr, path, None)
    }

    /// Connect offering subprotocol `protocol`.
    pub fn connect_with(
        addr: SocketAddr,
        path: &str,
        protocol: Option<&str>,
    ) -> Result<Self, String> {
        Self::connect_headers(addr, path, protocol, "")
    }

    /// Connect offering subprotocol `protocol`, with `headers` (each line ending in
    /// CRLF) added to the request; `Err` holds the response head of a refusal.
    pub fn connect_headers(
        addr: SocketAddr,
        path: &str,
        protocol: Option<&str>,
        headers: &str,
    ) -> Result<Self, String> {
        Self::handshake(TcpStream::connect(addr).unwrap(), path, protocol, headers)
    }

    /// [`Ws::connect_headers`] from source address `from` (any 127.x.y.z on
    /// loopback): per-address limits see it as another client.
    pub fn connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
        path: &str,
        headers: &str,
    ) -> Result<Self, String> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(from, 0).into()).unwrap();
        s.connect(&addr.into()).unwrap();
        Self::handshake(s.into(), path, None, headers)
    }

    fn handshake(
        s: TcpStream,
        path: &str,
        protocol: Option<&str>,
        headers: &str,
    ) -> Result<Self, String> {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Ws::upgrade(s, path, protocol, headers)
    }
}

impl<S: Read + Write> Ws<S> {
    /// The WebSocket handshake on `s` (its read timeout already set).
    pub fn upgrade(
        mut s: S,
        path: &str,
        protocol: Option<&str>,
        headers: &str,
    ) -> Result<Self, String> {
        let offer = protocol
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}{headers}\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).unwrap() == 0 {
                return Err(String::from_utf8_lossy(&head).into_owned());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        // Header names are case-insensitive (HAProxy lowercases them).
        let accept = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim())
        });
        assert_eq!(accept, Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        let mut dec = Decoder::client(Limits::default());
        if extensions
            .as_deref()
            .is_some_and(|e| e.starts_with("permessage-deflate"))
        {
            dec.enable_deflate();
        }
        Ok(Self {
            s,
            dec,
            buf: Vec::new(),
            extensions,
            compressed: 0,
        })
    }

    pub fn send(&mut self, fin: bool, op: Opcode, payload: &[u8]) {
        let mut out = Vec::new();
        encode_client_frame(&mut out, fin, op, payload, [1, 2, 3, 4]);
        // A connection that is gone shows on the next receive.
        let _ = self.s.write_all(&out);
    }

    /// Send one message compressed (RSV1 set), deflated without context takeover.
    pub fn send_compressed(&mut self, op: Opcode, payload: &[u8]) {
        let mut z = Vec::new();
        Deflater::new(6).deflate_end(payload, &mut z);
        self.send_deflated(op, &z);
    }

    /// Send `deflated` as one compressed message, as it is.
    pub fn send_deflated(&mut self, op: Opcode, deflated: &[u8]) {
        let mut out = Vec::new();
        encode_compressed_client_frame(&mut out, op, deflated, [1, 2, 3, 4]);
        let _ = self.s.write_all(&out);
    }

    pub fn recv(&mut self) -> Msg {
        loop {
            let got = match self.dec.decode(&mut self.buf).unwrap() {
                Some((item, used)) => {
                    let m = match item {
                        Incoming::Compressed { text, payload } => {
                            self.compressed += 1;
                            let mut m = Vec::new();
                            // With the window the server agreed to keep to: a message
                            // reaching further back does not inflate.
                            let window = self
                                .extensions
                                .as_deref()
                                .and_then(|e| e.split("server_max_window_bits=").nth(1))
                                .and_then(|b| b.trim().parse().ok())
                                .unwrap_or(15);
                            let mut inflater = Inflater::with_window(window);
                            inflate_message(&mut inflater, text, payload, 1 << 30, &mut m).unwrap();
                            Some(if text {
                                Msg::Text(String::from_utf8(m).unwrap())
                            } else {
                                Msg::Binary(m)
                            })
                        }
                        Incoming::Text(t) => Some(Msg::Text(t.to_owned())),
                        Incoming::Binary(b) => Some(Msg::Binary(b.to_vec())),
                        Incoming::Ping(p) => Some(Msg::Ping(p.to_vec())),
                        Incoming::Pong(p) => Some(Msg::Pong(p.to_vec())),
                        Incoming::Close(c) => Some(Msg::Close(c.map(|c| c.code.0))),
                        Incoming::Fragment | Incoming::AfterClose => None,
                    };
                    Some((m, used))
                }
                None => None,
            };
            match got {
                Some((m, used)) => {
                    self.buf.drain(..used);
                    if let Some(m) = m {
                        return m;
                    }
                }
                None => {
                    let mut chunk = [0u8; 65536];
                    match self.s.read(&mut chunk) {
                        Ok(0) | Err(_) => return Msg::Eof,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
    }
}
