//! `ringline-client`: the Ringline client for Rust, on tokio. What flows through it:
//! calls of a [`Client`] become requests of the client protocol (`wire::client`, JSON
//! form) on one WebSocket; answers come back as typed results ([`Error`] says who is
//! at fault), and each subscription's messages as a [`Subscription`] stream of
//! [`Event`]s.
//!
//! Correct by default:
//! - the connection is replaced when it drops, dies silently (no ping for two
//!   heartbeats) or the server drains it (1001: at once, elsewhere through the
//!   balancer), with jittered exponential backoff otherwise;
//! - every subscription resumes from the token of the last message it delivered, on
//!   whichever edge answers: it gets exactly what it missed, or [`Event::Reset`] and a
//!   fresh snapshot;
//! - calls made while disconnected wait (up to [`Config::queue_limit`]) and every write
//!   carries a `msg_id`, so a write sent again after an unknown outcome applies once;
//! - a refused or expired token (4401, 4419) is replaced from
//!   [`Config::token_source`] before reconnecting.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringline_client::Error> {
//! use futures_util::StreamExt;
//! let client = ringline_client::Client::connect(ringline_client::Config::new("ws://127.0.0.1:8080/ws"));
//! let mut sub = client.subscribe("room/{42}/title").await?;
//! client.put("room/{42}/title", br#""hello""#).await?;
//! while let Some(event) = sub.next().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! Modules: [`session`] is the protocol state without I/O (tokens, requests waiting,
//! what to send on reconnect); `client` drives it over tokio-tungstenite; `ops` are
//! the typed calls; `error` the failures. Examples: `examples/watch.rs`, `examples/chat.rs`.

#![warn(missing_docs)]

mod client;
mod error;
mod ops;
pub mod session;

pub use client::{Client, Config, State, Subscription, TokenSource};
pub use error::Error;
pub use ops::{MembersPage, WriteOptions, Written};
pub use session::Event;
pub use wire::client::{ChangeOp, Entry, Member, MemberMeta, PresenceEvent, SubMode, Target};
