//! The worker's Server-Sent Events streams' positions: per stream connection, each of
//! its subscriptions' last resume token, from which every event that moves a position
//! gets its id ([`wire::api::sse::event_id`]: the token itself for a stream of one
//! subscription, all of them joined for more), so that a browser reconnecting with
//! `Last-Event-ID` resumes every subscription where it was. Messages for a stream come
//! in from the dispatcher and leave as events in the connection's queue.

use std::collections::HashMap;

use wire::api::sse;
use wire::client::Response;
use wire::client::json;

use super::conn::Conn;
use super::slab::Key;

/// Every stream connection's subscriptions' tokens (index: subscription id − 1).
#[derive(Debug, Default)]
pub struct Streams {
    tokens: HashMap<Key, Vec<String>>,
}

impl Streams {
    /// Queue `msg`, a message of subscription `id` of the stream at `key`, as an event.
    pub fn queue(&mut self, key: Key, conn: &mut Conn, msg: &Response<'_>, scratch: &mut Vec<u8>) {
        let (event, token) = sse::event_of(msg);
        let moved = match (msg, token) {
            (_, Some(t)) => Some(t.to_owned()),
            // A reset drops the position: until its fresh snapshot ends, this
            // subscription would start over anyway.
            (Response::Reset { .. }, None) => Some(String::new()),
            _ => None,
        };
        let id = match (moved, msg.id()) {
            (Some(token), Some(sub)) => {
                let tokens = self.tokens.entry(key).or_default();
                let i = usize::try_from(sub.saturating_sub(sse::EVENTS_SUB)).unwrap_or(0);
                if tokens.len() <= i {
                    tokens.resize(i + 1, String::new());
                }
                if let Some(t) = tokens.get_mut(i) {
                    *t = token;
                }
                // A reset gives no id: the browser keeps its last one until the
                // snapshot's.
                (!matches!(msg, Response::Reset { .. })).then(|| sse::event_id(tokens))
            }
            _ => None,
        };
        scratch.clear();
        json::encode_response(msg, scratch);
        conn.queue_with(|v| sse::write_event(v, event, id.as_deref(), scratch));
    }

    /// The stream at `key` is gone.
    pub fn forget(&mut self, key: Key) {
        self.tokens.remove(&key);
    }
}
