//! Who a connection is and what it may touch. [`token`] verifies a client's JWT (from
//! the `/ws` upgrade, checked in `worker/conn/http.rs`, or from an `auth` message,
//! `worker/conn/auth.rs`) into an [`Identity`](token::Identity): subject, expiry and a
//! [`Grant`](grant::Grant) compiled from its permission patterns, which every request
//! is checked against before it is routed. [`origin`] is the browser handshakes'
//! `Origin` allow-list. [`keys`] holds the verifier the workers share and replaces it
//! when the key file changes on disk.

pub mod grant;
pub mod keys;
pub mod origin;
pub mod token;
