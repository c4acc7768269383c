//! The client's protocol state, without I/O: requests in ([`Session::request`],
//! [`Session::subscribe`]), server messages in ([`Session::handle`]), connection
//! changes in ([`Session::connected`], [`Session::disconnected`]); out come the
//! requests to send and [`Output`]s (answers for requests, events for subscriptions).
//!
//! What it keeps so that a reconnect loses nothing:
//! - every subscription with the resume token of the last message it delivered: on
//!   [`Session::connected`] each is sent again with `from` that token (or, never having
//!   had one, from the start);
//! - every request not yet answered: sent again on reconnect. Writes (`put`, `del`,
//!   `pub`) always carry a `msg_id` (one is made if the application gave none), so a
//!   write whose answer was lost applies once however often it is sent; `join`,
//!   `leave`, `ack` and reads are idempotent by nature. While disconnected, requests
//!   wait in the same table, up to a bound.

use std::borrow::Cow;
use std::collections::BTreeMap;

use wire::client::{ChangeOp, Entry, Member, PresenceEvent, Request, Response, SubMode, Target};

use crate::error::Error;

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A page of the current entries (`last`: the snapshot is complete). After a
    /// [`Event::Reset`], a fresh snapshot follows.
    Snapshot {
        /// Entries of this page.
        entries: Vec<Entry<'static>>,
        /// The last page.
        last: bool,
    },
    /// A change of a key.
    Change {
        /// The key.
        key: String,
        /// What happened.
        op: ChangeOp<'static>,
        /// The resume token after it.
        token: String,
    },
    /// The server could not resume from the subscription's last position: a fresh
    /// snapshot follows (apply it in place of everything before).
    Reset {
        /// Why.
        reason: String,
    },
    /// A page of a presence subscription's members (`last`: the list is complete).
    Members {
        /// The members of this page.
        members: Vec<Member<'static>>,
        /// The last page.
        last: bool,
    },
    /// Joins and leaves of a presence subscription's channel, in order.
    Presence {
        /// What happened.
        events: Vec<PresenceEvent<'static>>,
    },
    /// The subscription ended: the server refused it (or stopped allowing it).
    Ended(Error),
}

/// What the session hands to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The answer to request `id`.
    Answer(u64, Result<Response<'static>, Error>),
    /// An event of subscription `id` (0: the ones the server makes by itself: the
    /// user's inbox and broadcasts).
    Event(u64, Event),
    /// Subscription `id` failed for a while (its store unreachable): subscribe again
    /// later ([`Session::resubscribe`]).
    RetryLater(u64),
}

/// One subscription.
#[derive(Debug, Clone)]
struct Sub {
    target: Target<'static>,
    mode: SubMode,
    durable: Option<String>,
    /// The token of the last message delivered.
    token: Option<String>,
}

/// A request waiting for its answer.
#[derive(Debug, Clone)]
struct Waiting {
    req: Request<'static>,
}

/// The protocol state of one client.
#[derive(Debug)]
pub struct Session {
    next_id: u64,
    subs: BTreeMap<u64, Sub>,
    waiting: BTreeMap<u64, Waiting>,
    /// Requests that may wait while disconnected.
    queue_limit: usize,
    connected: bool,
    /// Prefix of the msg_ids this session makes (random per session).
    nonce: String,
}

impl Session {
    /// A session that queues at most `queue_limit` requests while disconnected;
    /// `nonce` makes its generated msg_ids unique (random per client).
    #[must_use]
    pub fn new(queue_limit: usize, nonce: &str) -> Self {
        Self {
            next_id: 1,
            subs: BTreeMap::new(),
            waiting: BTreeMap::new(),
            queue_limit,
            connected: false,
            nonce: nonce.to_owned(),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Requests waiting for an answer.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A request (`make` builds it with its id): the id, and the request to send now
    /// (`None` while disconnected: it is sent on [`Session::connected`]).
    pub fn request(
        &mut self,
        make: impl FnOnce(u64) -> Request<'static>,
    ) -> Result<(u64, Option<Request<'static>>), Error> {
        if !self.connected && self.waiting.len() >= self.queue_limit {
            return Err(Error::QueueFull);
        }
        let id = self.id();
        let req = with_msg_id(make(id), &self.nonce);
        self.waiting.insert(id, Waiting { req: req.clone() });
        Ok((id, self.connected.then_some(req)))
    }

    /// Subscribe to `target`: its id, and the request to send now (if connected).
    pub fn subscribe(
        &mut self,
        target: Target<'static>,
        mode: SubMode,
        durable: Option<String>,
    ) -> (u64, Option<Request<'static>>) {
        let id = self.id();
        let sub = Sub {
            target,
            mode,
            durable,
            token: None,
        };
        let req = sub_request(id, &sub);
        self.subs.insert(id, sub);
        (id, self.connected.then_some(req))
    }

    /// Subscribe `id` again (after [`Output::RetryLater`]), from its last token.
    pub fn resubscribe(&mut self, id: u64) -> Option<Request<'static>> {
        let sub = self.subs.get(&id)?;
        self.connected.then(|| sub_request(id, sub))
    }

    /// End subscription `id`: the `unsub` to send (if it exists and we are connected).
    pub fn unsubscribe(&mut self, id: u64) -> Option<Request<'static>> {
        self.subs.remove(&id)?;
        self.connected.then_some(Request::Unsub { id })
    }

    /// The last token of subscription `id`.
    #[must_use]
    pub fn token(&self, id: u64) -> Option<&str> {
        self.subs.get(&id)?.token.as_deref()
    }

    /// A connection is up: every subscription from its last token, then every request
    /// not yet answered, in the order they were made.
    pub fn connected(&mut self) -> Vec<Request<'static>> {
        self.connected = true;
        let subs = self.subs.iter().map(|(&id, s)| sub_request(id, s));
        let reqs = self.waiting.values().map(|w| w.req.clone());
        subs.chain(reqs).collect()
    }

    /// The connection is gone: everything waits for the next.
    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// A message from the server, as outputs.
    pub fn handle(&mut self, resp: Response<'static>) -> Vec<Output> {
        let Some(id) = resp.id() else {
            // An error about a request too malformed to have an id: nothing to answer.
            return Vec::new();
        };
        if self.subs.contains_key(&id) || id == wire::client::AUTO_SUB_ID {
            return self.sub_message(id, resp);
        }
        match self.waiting.remove(&id) {
            Some(_) => vec![Output::Answer(id, answer(resp))],
            None => Vec::new(),
        }
    }

    /// A message for subscription `id`.
    fn sub_message(&mut self, id: u64, resp: Response<'static>) -> Vec<Output> {
        let keep = |s: &mut Self, token: Option<&str>| {
            if let (Some(sub), Some(t)) = (s.subs.get_mut(&id), token) {
                sub.token = Some(t.to_owned());
            }
        };
        let event = match resp {
            Response::Snapshot {
                entries,
                token,
                more,
                ..
            } => {
                keep(self, token.as_deref());
                Event::Snapshot {
                    entries,
                    last: !more,
                }
            }
            Response::Change { key, op, token, .. } => {
                keep(self, Some(&token));
                Event::Change {
                    key: key.into_owned(),
                    op,
                    token: token.into_owned(),
                }
            }
            Response::Resumed { token, .. } => {
                keep(self, Some(&token));
                return Vec::new();
            }
            Response::Reset { reason, .. } => {
                if let Some(sub) = self.subs.get_mut(&id) {
                    sub.token = None;
                }
                Event::Reset {
                    reason: reason.into_owned(),
                }
            }
            Response::Members {
                members,
                token,
                more,
                ..
            } => {
                keep(self, token.as_deref());
                Event::Members {
                    members,
                    last: !more,
                }
            }
            Response::Presence { events, token, .. } => {
                keep(self, Some(&token));
                Event::Presence { events }
            }
            Response::Error {
                code,
                message,
                version,
                ..
            } => {
                let e = Error::from_server(code, &message, version);
                if e.is_transient() {
                    return vec![Output::RetryLater(id)];
                }
                self.subs.remove(&id);
                Event::Ended(e)
            }
            // The answer to an `unsub`, or one that merely reuses the id.
            Response::Ok { .. } | Response::Value { .. } => return Vec::new(),
        };
        vec![Output::Event(id, event)]
    }
}

/// The `sub` of subscription `id`, from its last token.
fn sub_request(id: u64, s: &Sub) -> Request<'static> {
    Request::Sub {
        id,
        target: s.target.clone(),
        from: s.token.clone().map(Cow::Owned),
        mode: s.mode,
        durable: s.durable.clone().map(Cow::Owned),
    }
}

/// A write with a `msg_id` (made from `nonce` and its id when it has none).
fn with_msg_id(req: Request<'static>, nonce: &str) -> Request<'static> {
    let made = |id: u64| Some(Cow::Owned(format!("{nonce}-{id}")));
    match req {
        Request::Put {
            id,
            key,
            value,
            if_version,
            msg_id: None,
        } => Request::Put {
            id,
            key,
            value,
            if_version,
            msg_id: made(id),
        },
        Request::Del {
            id,
            key,
            if_version,
            msg_id: None,
        } => Request::Del {
            id,
            key,
            if_version,
            msg_id: made(id),
        },
        Request::Pub {
            id,
            key,
            value,
            msg_id: None,
            echo,
        } => Request::Pub {
            id,
            key,
            value,
            msg_id: made(id),
            echo,
        },
        other => other,
    }
}

/// A request's answer: the response, or its error as an [`Error`].
fn answer(resp: Response<'static>) -> Result<Response<'static>, Error> {
    match resp {
        Response::Error {
            code,
            message,
            version,
            ..
        } => Err(Error::from_server(code, &message, version)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::client::ErrorCode;

    fn put(id: u64) -> Request<'static> {
        Request::Put {
            id,
            key: "k".into(),
            value: Cow::Borrowed(b"1"),
            if_version: None,
            msg_id: None,
        }
    }

    fn change(id: u64, token: &str) -> Response<'static> {
        Response::Change {
            id,
            key: "k".into(),
            op: ChangeOp::Delete { version: 3 },
            token: token.to_owned().into(),
        }
    }

    #[test]
    fn subscriptions_resume_from_their_last_token_and_requests_are_sent_again() {
        let mut s = Session::new(10, "n");
        let (sub, first) = s.subscribe(Target::Key("k".into()), SubMode::Stream, None);
        assert!(first.is_none(), "not connected yet");
        let (w, now) = s.request(put).unwrap();
        assert!(now.is_none());
        let sent = s.connected();
        assert_eq!(sent.len(), 2);
        assert!(matches!(&sent[0], Request::Sub { from: None, .. }));
        assert!(
            matches!(&sent[1], Request::Put { msg_id: Some(m), .. } if m == &format!("n-{w}")),
            "a write always carries a msg_id: {:?}",
            sent[1]
        );
        let out = s.handle(change(sub, "t1"));
        assert!(matches!(&out[..], [Output::Event(i, Event::Change { .. })] if *i == sub));
        s.disconnected();
        let again = s.connected();
        assert!(
            matches!(&again[0], Request::Sub { from: Some(t), .. } if t == "t1"),
            "{again:?}"
        );
        assert!(
            matches!(&again[1], Request::Put { .. }),
            "unanswered: sent again"
        );
        let out = s.handle(Response::Ok {
            id: w,
            version: Some(9),
            token: None,
        });
        assert!(matches!(&out[..], [Output::Answer(i, Ok(_))] if *i == w));
        assert_eq!(s.connected().len(), 1, "answered: not sent again");
    }

    #[test]
    fn a_reset_forgets_the_token_and_errors_are_typed() {
        let mut s = Session::new(10, "n");
        s.connected();
        let (sub, _) = s.subscribe(Target::Prefix("p/".into()), SubMode::Stream, None);
        s.handle(change(sub, "t1"));
        let out = s.handle(Response::Reset {
            id: sub,
            reason: "log truncated".into(),
        });
        assert!(matches!(&out[..], [Output::Event(_, Event::Reset { .. })]));
        assert_eq!(s.token(sub), None);
        let (w, _) = s.request(put).unwrap();
        let out = s.handle(Response::Error {
            id: Some(w),
            code: ErrorCode::Conflict,
            message: "x".into(),
            version: Some(4),
        });
        assert_eq!(
            out,
            [Output::Answer(w, Err(Error::Conflict { current: 4 }))]
        );
        let out = s.handle(Response::Error {
            id: Some(sub),
            code: ErrorCode::Unavailable,
            message: "store down".into(),
            version: None,
        });
        assert_eq!(
            out,
            [Output::RetryLater(sub)],
            "a transient refusal is retried"
        );
        let out = s.handle(Response::Error {
            id: Some(sub),
            code: ErrorCode::Forbidden,
            message: "no".into(),
            version: None,
        });
        assert!(matches!(
            &out[..],
            [Output::Event(_, Event::Ended(Error::Forbidden(_)))]
        ));
        assert!(
            s.resubscribe(sub).is_none(),
            "an ended subscription is gone"
        );
    }

    #[test]
    fn the_queue_is_bounded_while_disconnected() {
        let mut s = Session::new(2, "n");
        s.request(put).unwrap();
        s.request(put).unwrap();
        assert_eq!(s.request(put), Err(Error::QueueFull));
        s.connected();
        assert!(s.request(put).is_ok(), "connected: sent at once");
    }
}
