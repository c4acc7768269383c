//! Field checks shared by both decoders: the limits every decoded request respects,
//! whichever form it arrived in.

use std::borrow::Cow;

use super::ClientErrorKind;

/// Longest key or prefix, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest JWT in an `auth` message, in bytes (as much as an upgrade request's whole
/// head may hold, where the other form of it travels).
pub const MAX_JWT_LEN: usize = 8 * 1024;
/// Longest resume token, in bytes (room for about a thousand partition positions).
pub const MAX_TOKEN_LEN: usize = 34 * 1024;

/// Longest `msg_id`, in bytes.
pub const MAX_MSG_ID_LEN: usize = 128;

/// An absent `msg_id`, or a non-empty one of at most [`MAX_MSG_ID_LEN`] bytes.
pub(crate) fn msg_id(id: Option<Cow<'_, str>>) -> Result<Option<Cow<'_, str>>, ClientErrorKind> {
    optional_name("msg_id", MAX_MSG_ID_LEN, id)
}

/// An absent optional name, or a non-empty one of at most `max` bytes.
fn optional_name<'a>(
    field: &'static str,
    max: usize,
    name: Option<Cow<'a, str>>,
) -> Result<Option<Cow<'a, str>>, ClientErrorKind> {
    match name {
        Some(n) if n.is_empty() => Err(ClientErrorKind::Empty(field)),
        Some(n) if n.len() > max => Err(ClientErrorKind::KeyTooLong {
            field,
            len: n.len(),
            max,
        }),
        n => Ok(n),
    }
}

/// Longest durable subscription name, in bytes.
pub const MAX_DURABLE_LEN: usize = 128;

/// An absent durable name, or a non-empty one of at most [`MAX_DURABLE_LEN`] bytes.
pub(crate) fn durable(name: Option<Cow<'_, str>>) -> Result<Option<Cow<'_, str>>, ClientErrorKind> {
    optional_name("durable", MAX_DURABLE_LEN, name)
}

/// A present resume token (an `ack`'s) of at most [`MAX_TOKEN_LEN`] bytes.
pub(crate) fn ack_token(token: Option<Cow<'_, str>>) -> Result<Cow<'_, str>, ClientErrorKind> {
    self::token(token)?.ok_or(ClientErrorKind::Missing("token"))
}

/// A present, non-empty key or prefix of at most [`MAX_KEY_LEN`] bytes.
pub(crate) fn key<'a>(
    field: &'static str,
    value: Option<Cow<'a, str>>,
) -> Result<Cow<'a, str>, ClientErrorKind> {
    let value = value.ok_or(ClientErrorKind::Missing(field))?;
    if value.is_empty() {
        return Err(ClientErrorKind::Empty(field));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(ClientErrorKind::KeyTooLong {
            field,
            len: value.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(value)
}

/// A resume token of at most [`MAX_TOKEN_LEN`] bytes (its content is checked when decoded).
pub(crate) fn token(token: Option<Cow<'_, str>>) -> Result<Option<Cow<'_, str>>, ClientErrorKind> {
    match token {
        Some(t) if t.len() > MAX_TOKEN_LEN => Err(ClientErrorKind::TokenTooLong {
            len: t.len(),
            max: MAX_TOKEN_LEN,
        }),
        t => Ok(t),
    }
}

/// A present, non-empty JWT of at most [`MAX_JWT_LEN`] bytes (its content is the
/// edge's to check).
pub(crate) fn jwt(jwt: Option<Cow<'_, str>>) -> Result<Cow<'_, str>, ClientErrorKind> {
    let jwt = jwt.ok_or(ClientErrorKind::Missing("token"))?;
    if jwt.is_empty() {
        return Err(ClientErrorKind::Empty("token"));
    }
    if jwt.len() > MAX_JWT_LEN {
        return Err(ClientErrorKind::KeyTooLong {
            field: "token",
            len: jwt.len(),
            max: MAX_JWT_LEN,
        });
    }
    Ok(jwt)
}

/// A present value.
pub(crate) fn value(value: Option<Cow<'_, [u8]>>) -> Result<Cow<'_, [u8]>, ClientErrorKind> {
    value.ok_or(ClientErrorKind::Missing("value"))
}

/// A present channel that can hold presence ([`crate::presence::check_channel`]).
pub(crate) fn channel(value: Option<Cow<'_, str>>) -> Result<Cow<'_, str>, ClientErrorKind> {
    use crate::presence::{ChannelError, MAX_CHANNEL_LEN, check_channel};
    let value = value.ok_or(ClientErrorKind::Missing("channel"))?;
    match check_channel(&value) {
        Ok(()) => Ok(value),
        Err(ChannelError::Empty) => Err(ClientErrorKind::Empty("channel")),
        Err(ChannelError::TooLong(len)) => Err(ClientErrorKind::KeyTooLong {
            field: "channel",
            len,
            max: MAX_CHANNEL_LEN,
        }),
        Err(e @ ChannelError::Brace) => Err(ClientErrorKind::Malformed(e.to_string())),
    }
}

/// A member's meta: one JSON value of at most [`crate::presence::MAX_META_LEN`] bytes
/// (`null` when absent).
pub(crate) fn meta(meta: Option<Cow<'_, [u8]>>) -> Result<Cow<'_, [u8]>, ClientErrorKind> {
    use crate::presence::MAX_META_LEN;
    let Some(meta) = meta else {
        return Ok(Cow::Borrowed(b"null"));
    };
    if meta.len() > MAX_META_LEN {
        return Err(ClientErrorKind::KeyTooLong {
            field: "meta",
            len: meta.len(),
            max: MAX_META_LEN,
        });
    }
    if !super::json::is_json(&meta) {
        return Err(ClientErrorKind::Malformed(
            "`meta` must be one JSON value".into(),
        ));
    }
    Ok(meta)
}

/// An absent device, or a non-empty one of at most
/// [`crate::presence::MAX_DEVICE_LEN`] bytes.
pub(crate) fn device(name: Option<Cow<'_, str>>) -> Result<Option<Cow<'_, str>>, ClientErrorKind> {
    optional_name("device", crate::presence::MAX_DEVICE_LEN, name)
}

/// A present request id.
pub(crate) fn id(id: Option<u64>) -> Result<u64, ClientErrorKind> {
    id.ok_or(ClientErrorKind::Missing("id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_present_non_empty_and_bounded() {
        assert_eq!(key("key", Some("k".into())), Ok("k".into()));
        assert_eq!(key("key", None), Err(ClientErrorKind::Missing("key")));
        assert_eq!(
            key("prefix", Some("".into())),
            Err(ClientErrorKind::Empty("prefix"))
        );
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            key("key", Some(long.into())),
            Err(ClientErrorKind::KeyTooLong { len: 1025, .. })
        ));
        assert!(key("key", Some("x".repeat(MAX_KEY_LEN).into())).is_ok());
    }

    #[test]
    fn jwts_are_present_non_empty_and_bounded() {
        assert_eq!(jwt(Some("a.b.c".into())), Ok("a.b.c".into()));
        assert_eq!(jwt(None), Err(ClientErrorKind::Missing("token")));
        assert_eq!(jwt(Some("".into())), Err(ClientErrorKind::Empty("token")));
        assert!(jwt(Some("x".repeat(MAX_JWT_LEN).into())).is_ok());
        assert!(matches!(
            jwt(Some("x".repeat(MAX_JWT_LEN + 1).into())),
            Err(ClientErrorKind::KeyTooLong { field: "token", .. })
        ));
    }

    #[test]
    fn msg_ids_are_absent_or_non_empty_and_bounded() {
        assert_eq!(msg_id(None), Ok(None));
        assert_eq!(msg_id(Some("m".into())), Ok(Some("m".into())));
        assert_eq!(
            msg_id(Some("".into())),
            Err(ClientErrorKind::Empty("msg_id"))
        );
        assert!(msg_id(Some("x".repeat(MAX_MSG_ID_LEN).into())).is_ok());
        assert!(matches!(
            msg_id(Some("x".repeat(MAX_MSG_ID_LEN + 1).into())),
            Err(ClientErrorKind::KeyTooLong {
                field: "msg_id",
                len: 129,
                ..
            })
        ));
    }

    #[test]
    fn tokens_are_bounded() {
        assert_eq!(token(None), Ok(None));
        assert!(token(Some("x".repeat(MAX_TOKEN_LEN + 1).into())).is_err());
    }
}
