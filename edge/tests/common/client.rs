//! A `/ws` protocol client for tests, in either form, on the minimal WebSocket client.
//!
//! A frame that does not decode as a protocol message fails the test: a client that
//! skipped it would hide exactly what a test is there to see.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::net::SocketAddr;

use wire::client::{ChangeOp, Request, Response, Target, fb, json};
use wire::frame::Opcode;

use super::ws::{Msg, Ws};

/// A `/ws` client speaking JSON or flatbuffers.
pub struct Client {
    pub ws: Ws,
    pub binary: bool,
}

/// What the next read brought (see [`Client::next`]).
#[derive(Debug)]
pub enum Event {
    /// A protocol message.
    Msg(Response<'static>),
    /// Nothing within the socket's read timeout; the connection is still open.
    Silent,
    /// A close frame, with its code (`None`: a close frame without one).
    Close(Option<u16>),
    /// The connection ended without a close frame (EOF or reset).
    Ended,
}

impl Client {
    pub fn json(addr: SocketAddr) -> Self {
        Self::try_json(addr).expect("connect")
    }

    /// A JSON client, or `None` if the connection or handshake failed.
    pub fn try_json(addr: SocketAddr) -> Option<Self> {
        let ws = Ws::connect_with(addr, "/ws", Some("ringline.v1.json")).ok()?;
        Some(Self { ws, binary: false })
    }

    /// A JSON client whose upgrade carries `Authorization: Bearer <token>`; `Err`
    /// holds the response head of a refusal.
    pub fn json_with_token(addr: SocketAddr, token: &str) -> Result<Self, String> {
        let auth = format!("Authorization: Bearer {token}\r\n");
        let ws = Ws::connect_headers(addr, "/ws", Some("ringline.v1.json"), &auth)?;
        Ok(Self { ws, binary: false })
    }

    pub fn fb(addr: SocketAddr) -> Self {
        let ws = Ws::connect_with(addr, "/ws", Some("ringline.v1.fb")).unwrap();
        Self { ws, binary: true }
    }

    pub fn send(&mut self, req: &Request<'_>) {
        let mut out = Vec::new();
        if self.binary {
            fb::encode_request(req, &mut out);
            self.ws.send(true, Opcode::Binary, &out);
        } else {
            json::encode_request(req, &mut out);
            self.ws.send(true, Opcode::Text, &out);
        }
    }

    /// Decode a data frame as a protocol message of this connection's form; a frame
    /// that fails to decode (or comes in the other form) fails the test.
    fn decode(&self, m: Msg) -> Option<Response<'static>> {
        match m {
            Msg::Text(t) => {
                assert!(!self.binary, "text frame on a binary connection: {t:?}");
                match json::decode_response(t.as_bytes()) {
                    Ok(r) => Some(r.into_owned()),
                    Err(e) => panic!("a text frame that is no protocol message ({e}): {t:?}"),
                }
            }
            Msg::Binary(b) => {
                assert!(self.binary, "binary frame on a JSON connection: {b:?}");
                match fb::decode_response(&b) {
                    Ok(r) => Some(r.into_owned()),
                    Err(e) => panic!(
                        "a binary frame that is no protocol message ({e}): {} bytes {:?}",
                        b.len(),
                        &b[..b.len().min(64)]
                    ),
                }
            }
            _ => None,
        }
    }

    pub fn recv(&mut self) -> Response<'static> {
        loop {
            match self.ws.recv() {
                m @ (Msg::Text(_) | Msg::Binary(_)) => return self.decode(m).unwrap(),
                Msg::Ping(_) | Msg::Pong(_) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// The next message, a close, the connection's end, or silence for the socket's
    /// read timeout, told apart. A frame that fails to decode fails the test.
    pub fn next(&mut self) -> Event {
        loop {
            match self.ws.recv() {
                m @ (Msg::Text(_) | Msg::Binary(_)) => {
                    return Event::Msg(self.decode(m).unwrap());
                }
                Msg::Ping(_) | Msg::Pong(_) => {}
                Msg::Close(code) => return Event::Close(code),
                // `Ws` reports a read timeout as an end too: look at the socket.
                Msg::Eof => {
                    return if self.is_open() {
                        Event::Silent
                    } else {
                        Event::Ended
                    };
                }
            }
        }
    }

    /// Whether the socket is still open (nothing to read yet, or bytes waiting), as
    /// opposed to closed by the peer (EOF) or reset.
    fn is_open(&self) -> bool {
        let s = &self.ws.s;
        s.set_nonblocking(true).unwrap();
        let open = match s.peek(&mut [0u8; 1]) {
            Ok(n) => n > 0,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        s.set_nonblocking(false).unwrap();
        open
    }

    /// The next message, or `None` once the connection has ended (or been silent for
    /// its read timeout). A frame that fails to decode fails the test; use
    /// [`Client::next`] to tell a close (and its code) from silence.
    pub fn try_recv(&mut self) -> Option<Response<'static>> {
        match self.next() {
            Event::Msg(r) => Some(r),
            Event::Silent | Event::Close(_) | Event::Ended => None,
        }
    }

    /// Send `req` and return the next message (its answer when nothing else is due).
    pub fn call(&mut self, req: &Request<'_>) -> Response<'static> {
        self.send(req);
        self.recv()
    }

    pub fn sub(&mut self, id: u64, key: &str, from: Option<&str>) {
        self.send(&Request::Sub {
            id,
            target: Target::Key(key.into()),
            from: from.map(Cow::Borrowed),
            mode: wire::client::SubMode::Stream,
            durable: None,
        });
    }

    pub fn put(&mut self, id: u64, key: &str, value: &str) -> Response<'static> {
        self.call(&Request::Put {
            id,
            key: key.into(),
            value: Cow::Borrowed(value.as_bytes()),
            if_version: None,
            msg_id: None,
        })
    }
}

/// (value, version, token) of a put change.
pub fn change(r: &Response<'_>) -> (String, u64, String) {
    match r {
        Response::Change {
            op: ChangeOp::Put { value, version },
            token,
            ..
        } => (
            String::from_utf8(value.to_vec()).unwrap(),
            *version,
            token.to_string(),
        ),
        other => panic!("expected a put change, got {other:?}"),
    }
}
