//! The client protocol's messages as Rust values, shared by the JSON and flatbuffers forms.
//! Strings and values borrow from the decoded message where they can.

use std::borrow::Cow;

/// A message from a client to an edge. `id` is chosen by the client; every response to the
/// request (and, for `Sub`, every message of the subscription) carries it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Subscribe: a snapshot then changes, or changes after a resume token `from`.
    Sub {
        /// Request id; also names the subscription.
        id: u64,
        /// One key or a key prefix.
        target: Target<'a>,
        /// Resume after this token instead of starting with a snapshot.
        from: Option<Cow<'a, str>>,
        /// Every change, or only the newest per key when behind.
        mode: SubMode,
        /// A durable subscription's name: its acknowledged position is kept, and a
        /// `Sub` without `from` resumes from it.
        durable: Option<Cow<'a, str>>,
    },
    /// End the subscription started by request `id`.
    Unsub {
        /// The `Sub`'s id.
        id: u64,
    },
    /// Read one key.
    Get {
        /// Request id.
        id: u64,
        /// The key.
        key: Cow<'a, str>,
    },
    /// Store a value.
    Put {
        /// Request id.
        id: u64,
        /// The key.
        key: Cow<'a, str>,
        /// The value's bytes (raw JSON text in the JSON form).
        value: Cow<'a, [u8]>,
        /// Only write if the key's version is this (0: only if the key is absent).
        if_version: Option<u64>,
        /// Client-chosen id making the write idempotent: a repeat within the store's
        /// window is answered with the first outcome and writes nothing.
        msg_id: Option<Cow<'a, str>>,
    },
    /// Delete a key.
    Del {
        /// Request id.
        id: u64,
        /// The key.
        key: Cow<'a, str>,
        /// Only delete if the key's version is this.
        if_version: Option<u64>,
        /// Makes the delete idempotent (see `Put`).
        msg_id: Option<Cow<'a, str>>,
    },
    /// Publish a log-only message (delivered to subscribers, not stored).
    Pub {
        /// Request id.
        id: u64,
        /// The key it is published under.
        key: Cow<'a, str>,
        /// The message's bytes.
        value: Cow<'a, [u8]>,
        /// Makes the publish idempotent (see `Put`).
        msg_id: Option<Cow<'a, str>>,
        /// `false`: the publishing connection's own subscriptions do not receive it
        /// (others, the same user's other connections included, do).
        echo: bool,
    },
    /// Authenticate (or refresh the token of) this connection: a browser's first
    /// message, where no header can carry the token.
    Auth {
        /// Request id.
        id: u64,
        /// The JWT.
        token: Cow<'a, str>,
    },
    /// Acknowledge the position of durable subscription `id`: every change up to
    /// `token` is processed (never moves the kept position backwards).
    Ack {
        /// The durable `Sub`'s id.
        id: u64,
        /// The resume token of the last change processed.
        token: Cow<'a, str>,
    },
    /// Join a channel's presence as this connection (again: replace the meta).
    Join {
        /// Request id.
        id: u64,
        /// The channel.
        channel: Cow<'a, str>,
        /// What others see of this member: JSON text (`null` when not given).
        meta: Cow<'a, [u8]>,
        /// The device this is (authenticated connections): the user's member from any
        /// connection, so that reconnecting (to any edge) changes nothing others see.
        /// `None`: this connection is the member.
        device: Option<Cow<'a, str>>,
    },
    /// Leave a channel's presence.
    Leave {
        /// Request id.
        id: u64,
        /// The channel.
        channel: Cow<'a, str>,
    },
    /// List a channel's members, a page at a time, or only count them.
    Presence {
        /// Request id.
        id: u64,
        /// The channel.
        channel: Cow<'a, str>,
        /// Where the previous page ended (its `cursor`); `None`: the first page.
        cursor: Option<Cow<'a, str>>,
        /// Only the count, no members.
        count_only: bool,
    },
}

/// How a subscription delivers changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SubMode {
    /// Every change, in order (`"stream"`, the default).
    #[default]
    Stream,
    /// Only the newest value of each key matters (`"latest"`): while the connection is
    /// behind, its changes are conflated to the newest per key and sent when it
    /// catches up, so it is never closed for being slow and always converges.
    Latest,
}

impl SubMode {
    /// The mode's wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Latest => "latest",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn from_wire(name: &str) -> Option<Self> {
        [Self::Stream, Self::Latest]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// The key of the inbox of the user whose token's subject is `subject` (the edge
/// subscribes each of the user's connections to it as subscription [`AUTO_SUB_ID`]).
#[must_use]
pub fn inbox_key(subject: &str) -> String {
    format!("@user/{subject}")
}

/// The key whose changes reach every connection (as subscription [`AUTO_SUB_ID`]).
pub const BROADCAST_KEY: &str = "@all";

/// The subscription id of the subscriptions the edge makes by itself: a user's inbox,
/// and broadcast.
pub const AUTO_SUB_ID: u64 = 0;

/// What a subscription follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// Exactly this key.
    Key(Cow<'a, str>),
    /// Every key starting with this prefix.
    Prefix(Cow<'a, str>),
    /// A channel's presence: its members, then who joins and leaves.
    Presence(Cow<'a, str>),
}

/// A message from an edge to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// Current entries of a subscription; a large snapshot is split over several messages,
    /// all but the last with `more`.
    Snapshot {
        /// The `Sub`'s id.
        id: u64,
        /// Entries in this part.
        entries: Vec<Entry<'a>>,
        /// Position the snapshot is consistent with (normally on the last part).
        token: Option<Cow<'a, str>>,
        /// More parts follow.
        more: bool,
    },
    /// A change to a subscribed key.
    Change {
        /// The `Sub`'s id.
        id: u64,
        /// The changed key.
        key: Cow<'a, str>,
        /// What happened to it.
        op: ChangeOp<'a>,
        /// Resume token for the position just after this change.
        token: Cow<'a, str>,
    },
    /// A subscription with `from` resumed; changes follow.
    Resumed {
        /// The `Sub`'s id.
        id: u64,
        /// Current position.
        token: Cow<'a, str>,
    },
    /// A subscription with `from` could not resume; a fresh snapshot follows.
    Reset {
        /// The `Sub`'s id.
        id: u64,
        /// Why (for humans).
        reason: Cow<'a, str>,
    },
    /// Answer to `Get`.
    Value {
        /// The `Get`'s id.
        id: u64,
        /// The key.
        key: Cow<'a, str>,
        /// The value, `None` when the key does not exist.
        value: Option<Cow<'a, [u8]>>,
        /// The value's version; 0 (and not sent) when `value` is `None`.
        version: u64,
    },
    /// A request succeeded.
    Ok {
        /// The request's id.
        id: u64,
        /// The key's new version (writes that store something).
        version: Option<u64>,
        /// Position of the write.
        token: Option<Cow<'a, str>>,
    },
    /// A page of a channel's members (the answer to `Presence`, or the snapshot of a
    /// presence subscription), grouped by user.
    Members {
        /// The request's (or subscription's) id.
        id: u64,
        /// The members in this page; one user's connections are in one group (a user
        /// whose connections span two pages appears in both).
        members: Vec<Member<'a>>,
        /// How many connections are members of the channel (the first page of an
        /// answer, and `count_only`).
        total: Option<u64>,
        /// Where the next page starts (an answer with more pages to come).
        cursor: Option<Cow<'a, str>>,
        /// Position the list is consistent with (a subscription's last page).
        token: Option<Cow<'a, str>>,
        /// More pages of this subscription's list follow.
        more: bool,
    },
    /// Members that joined or left a channel a presence subscription follows, in order.
    Presence {
        /// The subscription's id.
        id: u64,
        /// What happened, oldest first.
        events: Vec<PresenceEvent<'a>>,
        /// Resume token for the position just after the last event.
        token: Cow<'a, str>,
    },
    /// A request failed.
    Error {
        /// The request's id; `None` when the request was too malformed to have one.
        id: Option<u64>,
        /// What kind of failure.
        code: ErrorCode,
        /// For humans.
        message: Cow<'a, str>,
        /// The key's current version (`Conflict`).
        version: Option<u64>,
    },
}

/// One key of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: Cow<'a, str>,
    /// Its value.
    pub value: Cow<'a, [u8]>,
    /// Its version.
    pub version: u64,
}

/// One user's connections in a channel (anonymous connections are one group each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    /// The user (a token's subject); `None`: anonymous.
    pub user: Option<Cow<'a, str>>,
    /// One entry per connection.
    pub metas: Vec<MemberMeta<'a>>,
}

/// One connection's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMeta<'a> {
    /// The connection (unique in the cluster).
    pub conn: Cow<'a, str>,
    /// Its meta (JSON text).
    pub meta: Cow<'a, [u8]>,
}

/// A member joined (or changed its meta) or left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent<'a> {
    /// Joined (with its meta) or left.
    pub joined: Option<Cow<'a, [u8]>>,
    /// The user; `None`: anonymous.
    pub user: Option<Cow<'a, str>>,
    /// The connection.
    pub conn: Cow<'a, str>,
}

impl PresenceEvent<'_> {
    /// Copies the borrowed parts.
    #[must_use]
    pub fn into_owned(self) -> PresenceEvent<'static> {
        PresenceEvent {
            joined: self.joined.map(own),
            user: self.user.map(own),
            conn: own(self.conn),
        }
    }
}

impl Member<'_> {
    /// Copies the borrowed parts.
    #[must_use]
    pub fn into_owned(self) -> Member<'static> {
        Member {
            user: self.user.map(own),
            metas: self
                .metas
                .into_iter()
                .map(|m| MemberMeta {
                    conn: own(m.conn),
                    meta: own(m.meta),
                })
                .collect(),
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOp<'a> {
    /// The key now holds `value` at `version`.
    Put {
        /// The new value.
        value: Cow<'a, [u8]>,
        /// The new version.
        version: u64,
    },
    /// The key was deleted (at `version`).
    Delete {
        /// The version of the deletion.
        version: u64,
    },
    /// A log-only message was published under the key.
    Publish {
        /// The message.
        value: Cow<'a, [u8]>,
    },
}

/// A protocol error code, as sent in `Response::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or invalid; do not retry it as is.
    BadRequest,
    /// The request (or its key or value) is over a size limit.
    TooLarge,
    /// `if_version` did not match the key's current version.
    Conflict,
    /// The data is temporarily unavailable; retry later.
    Unavailable,
    /// The service is shedding load; retry later, slower.
    Overloaded,
    /// An unexpected failure in the service.
    Internal,
    /// The connection has no valid token (missing, expired, or refused).
    Unauthorized,
    /// The connection's token does not grant this operation on this key.
    Forbidden,
    /// The connection is sending faster than its message rate allows; slow down
    /// (a connection that stays over the rate is closed with 1008).
    RateLimited,
    /// The connection holds as many subscriptions as it may.
    TooManySubscriptions,
}

impl ErrorCode {
    /// Every code, for tests and exhaustive tables.
    pub const ALL: [Self; 10] = [
        Self::BadRequest,
        Self::TooLarge,
        Self::Conflict,
        Self::Unavailable,
        Self::Overloaded,
        Self::Internal,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::TooManySubscriptions,
    ];

    /// The code's wire name, e.g. `"bad_request"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooManySubscriptions => "too_many_subscriptions",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Request<'_> {
    /// The idempotency id of a write (`put`, `del`, `pub`), if it carries one.
    #[must_use]
    pub fn msg_id(&self) -> Option<&str> {
        match self {
            Self::Put { msg_id, .. } | Self::Del { msg_id, .. } | Self::Pub { msg_id, .. } => {
                msg_id.as_deref()
            }
            _ => None,
        }
    }

    /// The request id.
    #[must_use]
    pub fn id(&self) -> u64 {
        match self {
            Self::Sub { id, .. }
            | Self::Unsub { id }
            | Self::Get { id, .. }
            | Self::Put { id, .. }
            | Self::Del { id, .. }
            | Self::Pub { id, .. }
            | Self::Auth { id, .. }
            | Self::Ack { id, .. }
            | Self::Join { id, .. }
            | Self::Leave { id, .. }
            | Self::Presence { id, .. } => *id,
        }
    }

    /// Copies every borrowed part, detaching the request from the input buffer.
    #[must_use]
    pub fn into_owned(self) -> Request<'static> {
        match self {
            Self::Sub {
                id,
                target,
                from,
                mode,
                durable,
            } => Request::Sub {
                id,
                target: target.into_owned(),
                from: from.map(own),
                mode,
                durable: durable.map(own),
            },
            Self::Unsub { id } => Request::Unsub { id },
            Self::Get { id, key } => Request::Get { id, key: own(key) },
            Self::Put {
                id,
                key,
                value,
                if_version,
                msg_id,
            } => Request::Put {
                id,
                key: own(key),
                value: own(value),
                if_version,
                msg_id: msg_id.map(own),
            },
            Self::Del {
                id,
                key,
                if_version,
                msg_id,
            } => Request::Del {
                id,
                key: own(key),
                if_version,
                msg_id: msg_id.map(own),
            },
            Self::Pub {
                id,
                key,
                value,
                msg_id,
                echo,
            } => Request::Pub {
                id,
                key: own(key),
                value: own(value),
                msg_id: msg_id.map(own),
                echo,
            },
            Self::Auth { id, token } => Request::Auth {
                id,
                token: own(token),
            },
            Self::Ack { id, token } => Request::Ack {
                id,
                token: own(token),
            },
            Self::Join {
                id,
                channel,
                meta,
                device,
            } => Request::Join {
                id,
                channel: own(channel),
                meta: own(meta),
                device: device.map(own),
            },
            Self::Leave { id, channel } => Request::Leave {
                id,
                channel: own(channel),
            },
            Self::Presence {
                id,
                channel,
                cursor,
                count_only,
            } => Request::Presence {
                id,
                channel: own(channel),
                cursor: cursor.map(own),
                count_only,
            },
        }
    }
}

impl Target<'_> {
    /// Copies the borrowed key or prefix.
    #[must_use]
    pub fn into_owned(self) -> Target<'static> {
        match self {
            Self::Key(key) => Target::Key(own(key)),
            Self::Prefix(prefix) => Target::Prefix(own(prefix)),
            Self::Presence(channel) => Target::Presence(own(channel)),
        }
    }
}

impl Response<'_> {
    /// The id of the request (or subscription) this answers, if known.
    #[must_use]
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Snapshot { id, .. }
            | Self::Change { id, .. }
            | Self::Resumed { id, .. }
            | Self::Reset { id, .. }
            | Self::Value { id, .. }
            | Self::Members { id, .. }
            | Self::Presence { id, .. }
            | Self::Ok { id, .. } => Some(*id),
            Self::Error { id, .. } => *id,
        }
    }

    /// Copies every borrowed part, detaching the response from the input buffer.
    #[must_use]
    pub fn into_owned(self) -> Response<'static> {
        match self {
            Self::Snapshot {
                id,
                entries,
                token,
                more,
            } => Response::Snapshot {
                id,
                entries: entries.into_iter().map(Entry::into_owned).collect(),
                token: token.map(own),
                more,
            },
            Self::Change { id, key, op, token } => Response::Change {
                id,
                key: own(key),
                op: op.into_owned(),
                token: own(token),
            },
            Self::Resumed { id, token } => Response::Resumed {
                id,
                token: own(token),
            },
            Self::Reset { id, reason } => Response::Reset {
                id,
                reason: own(reason),
            },
            Self::Value {
                id,
                key,
                value,
                version,
            } => Response::Value {
                id,
                key: own(key),
                value: value.map(own),
                version,
            },
            Self::Members {
                id,
                members,
                total,
                cursor,
                token,
                more,
            } => Response::Members {
                id,
                members: members.into_iter().map(Member::into_owned).collect(),
                total,
                cursor: cursor.map(own),
                token: token.map(own),
                more,
            },
            Self::Presence { id, events, token } => Response::Presence {
                id,
                events: events.into_iter().map(PresenceEvent::into_owned).collect(),
                token: own(token),
            },
            Self::Ok { id, version, token } => Response::Ok {
                id,
                version,
                token: token.map(own),
            },
            Self::Error {
                id,
                code,
                message,
                version,
            } => Response::Error {
                id,
                code,
                message: own(message),
                version,
            },
        }
    }
}

impl Entry<'_> {
    /// Copies the borrowed key and value.
    #[must_use]
    pub fn into_owned(self) -> Entry<'static> {
        Entry {
            key: own(self.key),
            value: own(self.value),
            version: self.version,
        }
    }
}

impl ChangeOp<'_> {
    /// Copies the borrowed value.
    #[must_use]
    pub fn into_owned(self) -> ChangeOp<'static> {
        match self {
            Self::Put { value, version } => ChangeOp::Put {
                value: own(value),
                version,
            },
            Self::Delete { version } => ChangeOp::Delete { version },
            Self::Publish { value } => ChangeOp::Publish { value: own(value) },
        }
    }
}

fn own<T: ToOwned + ?Sized>(cow: Cow<'_, T>) -> Cow<'static, T> {
    Cow::Owned(cow.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_their_wire_names() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire("nope"), None);
        assert_eq!(ErrorCode::BadRequest.to_string(), "bad_request");
    }

    #[test]
    fn into_owned_keeps_content() {
        let key = String::from("k");
        let req = Request::Put {
            id: 1,
            key: Cow::Borrowed(&key),
            value: Cow::Borrowed(b"1"),
            if_version: None,
            msg_id: Some(Cow::Borrowed("m-1")),
        };
        let owned = req.clone().into_owned();
        drop(key);
        assert_eq!(owned.id(), 1);
        assert!(matches!(owned, Request::Put { key: Cow::Owned(ref k), .. } if k == "k"));
        assert!(
            matches!(owned, Request::Put { msg_id: Some(Cow::Owned(ref m)), .. } if m == "m-1")
        );
    }
}
