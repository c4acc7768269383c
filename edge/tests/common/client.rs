//! A `/ws` protocol client for tests, in either form, on the minimal WebSocket client.
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

impl Client {
    pub fn json(addr: SocketAddr) -> Self {
        Self::try_json(addr).expect("connect")
    }

    /// A JSON client, or `None` if the connection or handshake failed.
    pub fn try_json(addr: SocketAddr) -> Option<Self> {
        let ws = Ws::connect_with(addr, "/ws", Some("ringline.v1.json")).ok()?;
        Some(Self { ws, binary: false })
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

    pub fn recv(&mut self) -> Response<'static> {
        loop {
            match self.ws.recv() {
                Msg::Text(t) => {
                    assert!(!self.binary, "text frame on a binary connection");
                    return json::decode_response(t.as_bytes()).unwrap().into_owned();
                }
                Msg::Binary(b) => {
                    assert!(self.binary, "binary frame on a JSON connection");
                    return fb::decode_response(&b).unwrap().into_owned();
                }
                Msg::Ping(_) | Msg::Pong(_) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// The next message, or `None` once the connection has ended (or been silent for
    /// its read timeout).
    pub fn try_recv(&mut self) -> Option<Response<'static>> {
        loop {
            match self.ws.recv() {
                Msg::Text(t) => {
                    return json::decode_response(t.as_bytes())
                        .ok()
                        .map(Response::into_owned);
                }
                Msg::Binary(b) => return fb::decode_response(&b).ok().map(Response::into_owned),
                Msg::Ping(_) | Msg::Pong(_) => {}
                _ => return None,
            }
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
        });
    }

    pub fn put(&mut self, id: u64, key: &str, value: &str) -> Response<'static> {
        self.call(&Request::Put {
            id,
            key: key.into(),
            value: Cow::Borrowed(value.as_bytes()),
            if_version: None,
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
