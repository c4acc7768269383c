//! The calls of [`Client`], each a request and its typed answer. Values are JSON text
//! (the JSON protocol carries JSON values): `br#""hello""#`, `b"42"`, `br#"{"a":1}"#`.

use std::borrow::Cow;

use wire::client::{Member, Request, Response, SubMode, Target};

use crate::client::{Client, Subscription};
use crate::error::Error;

/// A write's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The key's new version (`None` for a publish).
    pub version: Option<u64>,
    /// The position of the write.
    pub token: Option<String>,
}

/// A page of a channel's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersPage {
    /// The members, grouped by user.
    pub members: Vec<Member<'static>>,
    /// The channel's member count.
    pub total: u64,
    /// Where the next page starts (`None`: this was the last).
    pub cursor: Option<String>,
}

/// Options of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Only if the key is at this version (0: only if absent).
    pub if_version: Option<u64>,
    /// The write's idempotency id (made by the client when `None`).
    pub msg_id: Option<String>,
}

fn unexpected(r: &Response<'_>) -> Error {
    Error::Internal(format!("unexpected answer: {r:?}"))
}

fn written(r: Response<'static>) -> Result<Written, Error> {
    match r {
        Response::Ok { version, token, .. } => Ok(Written {
            version,
            token: token.map(Cow::into_owned),
        }),
        other => Err(unexpected(&other)),
    }
}

impl Client {
    /// The value of `key` and its version (`None`: absent).
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, Error> {
        let key = key.to_owned();
        match self
            .call(move |id| Request::Get {
                id,
                key: key.into(),
            })
            .await?
        {
            Response::Value { value, version, .. } => Ok(value.map(|v| (v.into_owned(), version))),
            other => Err(unexpected(&other)),
        }
    }

    /// Store `value` (JSON text) under `key`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<Written, Error> {
        self.put_with(key, value, WriteOptions::default()).await
    }

    /// Store `value` under `key` with `options`.
    pub async fn put_with(
        &self,
        key: &str,
        value: &[u8],
        options: WriteOptions,
    ) -> Result<Written, Error> {
        let (key, value) = (key.to_owned(), value.to_vec());
        written(
            self.call(move |id| Request::Put {
                id,
                key: key.into(),
                value: value.into(),
                if_version: options.if_version,
                msg_id: options.msg_id.map(Cow::Owned),
            })
            .await?,
        )
    }

    /// Delete `key`.
    pub async fn del(&self, key: &str) -> Result<Written, Error> {
        let key = key.to_owned();
        written(
            self.call(move |id| Request::Del {
                id,
                key: key.into(),
                if_version: None,
                msg_id: None,
            })
            .await?,
        )
    }

    /// Publish `value` (JSON text) under `key` (delivered, not stored).
    pub async fn publish(&self, key: &str, value: &[u8]) -> Result<Written, Error> {
        let (key, value) = (key.to_owned(), value.to_vec());
        written(
            self.call(move |id| Request::Pub {
                id,
                key: key.into(),
                value: value.into(),
                msg_id: None,
                echo: true,
            })
            .await?,
        )
    }

    /// Join `channel`'s presence with `meta` (JSON text), as `device` if given.
    pub async fn join(
        &self,
        channel: &str,
        meta: &[u8],
        device: Option<&str>,
    ) -> Result<(), Error> {
        let (channel, meta) = (channel.to_owned(), meta.to_vec());
        let device = device.map(str::to_owned);
        self.call(move |id| Request::Join {
            id,
            channel: channel.into(),
            meta: meta.into(),
            device: device.map(Cow::Owned),
        })
        .await
        .map(drop)
    }

    /// Leave `channel`'s presence.
    pub async fn leave(&self, channel: &str) -> Result<(), Error> {
        let channel = channel.to_owned();
        self.call(move |id| Request::Leave {
            id,
            channel: channel.into(),
        })
        .await
        .map(drop)
    }

    /// A page of `channel`'s members (`cursor`: the previous page's).
    pub async fn presence(
        &self,
        channel: &str,
        cursor: Option<&str>,
    ) -> Result<MembersPage, Error> {
        let (channel, cursor) = (channel.to_owned(), cursor.map(str::to_owned));
        match self
            .call(move |id| Request::Presence {
                id,
                channel: channel.into(),
                cursor: cursor.map(Cow::Owned),
                count_only: false,
            })
            .await?
        {
            Response::Members {
                members,
                total,
                cursor,
                ..
            } => Ok(MembersPage {
                members,
                total: total.unwrap_or(0),
                cursor: cursor.map(Cow::into_owned),
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// How many members `channel` has.
    pub async fn count(&self, channel: &str) -> Result<u64, Error> {
        let channel = channel.to_owned();
        match self
            .call(move |id| Request::Presence {
                id,
                channel: channel.into(),
                cursor: None,
                count_only: true,
            })
            .await?
        {
            Response::Members { total, .. } => Ok(total.unwrap_or(0)),
            other => Err(unexpected(&other)),
        }
    }

    /// Acknowledge durable subscription `sub`'s position: `token` of the last change
    /// processed.
    pub async fn ack(&self, sub: &Subscription, token: &str) -> Result<(), Error> {
        let (sid, token) = (sub.id(), token.to_owned());
        self.call(move |_| Request::Ack {
            id: sid,
            token: token.into(),
        })
        .await
        .map(drop)
    }

    /// Follow `key`: its value, then every change.
    pub async fn subscribe(&self, key: &str) -> Result<Subscription, Error> {
        let target = Target::Key(Cow::Owned(key.to_owned()));
        self.subscribe_with(target, SubMode::Stream, None).await
    }

    /// Follow every key under `prefix`.
    pub async fn subscribe_prefix(&self, prefix: &str) -> Result<Subscription, Error> {
        let target = Target::Prefix(Cow::Owned(prefix.to_owned()));
        self.subscribe_with(target, SubMode::Stream, None).await
    }

    /// Follow `channel`'s presence: its members, then who joins and leaves.
    pub async fn subscribe_presence(&self, channel: &str) -> Result<Subscription, Error> {
        let target = Target::Presence(Cow::Owned(channel.to_owned()));
        self.subscribe_with(target, SubMode::Stream, None).await
    }
}
