//! Who a connection is and what it may touch. [`token`] verifies a client's JWT (the
//! `/ws` upgrade's `Authorization: Bearer`, checked in `worker/conn/http.rs`) into an
//! [`Identity`](token::Identity): subject, expiry and a [`Grant`](grant::Grant)
//! compiled from its permission patterns, which every request is checked against
//! before it is routed (`worker/conn/ws.rs`). [`origin`] is the browser handshakes'
//! `Origin` allow-list. Still to come (issue 15): the token in
//! a first message, refresh and expiry, the anonymous grant, JWKS reload.

pub mod grant;
pub mod origin;
pub mod token;
