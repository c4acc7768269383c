//! Presence's storage keys, shared by edge and store: a channel's members are keys under
//! the reserved prefix `@presence/`, one per (channel, user, connection), so that the
//! store's log, watches, snapshots and resume tokens carry joins and leaves like any
//! change. Everything that builds or reads such a key goes through this module.
//!
//! A member's key is
//!
//! ```text
//! @presence/{R}/<len>:<channel><len>:<user><len>:<member>
//! ```
//!
//! - `R` is the channel's routing key (its hash tag's content, or the whole channel when
//!   it has none), so every member of a channel lives on the partition that owns the
//!   channel's own key ([`crate::partition`]), and a channel's members are one prefix
//!   ([`channel_prefix`]) on that one partition;
//! - lengths (decimal bytes, then `:`) make every part unambiguous whatever it holds: no
//!   channel's prefix is a prefix of another channel's keys;
//! - `user` is the connection's token subject (empty: anonymous); sorting by key
//!   therefore lists one user's connections together;
//! - `member` is the device the join named (`d:<device>`, so that a user's device that
//!   reconnects anywhere is the same member) or else the connection (`c:` and its
//!   [`ConnName`]).
//!
//! The value of a member's key is its meta (JSON text). Which connection holds a
//! member now (its *owner*, a [`ConnName`]) travels beside the key in link frames and
//! is not part of it: a device that reconnects through another edge takes its member
//! over without a leave or a join.

use std::fmt::Write as _;

use crate::partition::routing_key;

/// The reserved prefix of every presence key.
pub const PREFIX: &str = "@presence/";

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 256;

/// Longest meta (JSON text), in bytes.
pub const MAX_META_LEN: usize = 1024;

/// Longest device name, in bytes.
pub const MAX_DEVICE_LEN: usize = 64;

/// Why a channel name cannot hold presence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Empty.
    #[error("the channel is empty")]
    Empty,
    /// Longer than [`MAX_CHANNEL_LEN`].
    #[error("the channel is {0} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong(usize),
    /// A channel without a hash tag may not contain `}` (its members' keys could not
    /// carry its routing key as their own hash tag).
    #[error("a channel without a {{hash tag}} may not contain '}}'")]
    Brace,
}

/// Checks a channel name.
pub fn check_channel(channel: &str) -> Result<(), ChannelError> {
    if channel.is_empty() {
        return Err(ChannelError::Empty);
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong(channel.len()));
    }
    if routing_key(channel.as_bytes()).contains(&b'}') {
        return Err(ChannelError::Brace);
    }
    Ok(())
}

/// A connection as presence names it: unique in the cluster, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnName<'a> {
    /// The edge process (its link `edge_id`, unique per start).
    pub edge: &'a str,
    /// The edge's worker.
    pub worker: u16,
    /// The connection's slot in the worker.
    pub slot: u32,
    /// The slot's generation.
    pub generation: u32,
}

impl std::fmt::Display for ConnName<'_> {
    /// `edge/worker/slot.gen`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}.{}",
            self.edge, self.worker, self.slot, self.generation
        )
    }
}

impl<'a> ConnName<'a> {
    /// Parses the [`Display`](std::fmt::Display) form.
    #[must_use]
    pub fn parse(s: &'a str) -> Option<Self> {
        let (rest, slot_gen) = s.rsplit_once('/')?;
        let (edge, worker) = rest.rsplit_once('/')?;
        let (slot, generation) = slot_gen.split_once('.')?;
        let c = Self {
            edge,
            worker: worker.parse().ok()?,
            slot: slot.parse().ok()?,
            generation: generation.parse().ok()?,
        };
        (!edge.is_empty() && c.to_string() == s).then_some(c)
    }
}

/// Who a member is within its channel and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberId<'a> {
    /// A device the user named: the same member from any connection.
    Device(&'a str),
    /// One connection (its [`ConnName`] text).
    Conn(&'a str),
}

impl MemberId<'_> {
    /// What clients see as the member's `conn`: the device's name, or the connection.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Device(d) | Self::Conn(d) => d,
        }
    }
}

/// One member's key, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The user (a token's subject; empty: anonymous).
    pub user: &'a str,
    /// The member.
    pub member: MemberId<'a>,
}

fn push_part(out: &mut String, part: &str) {
    let _ = write!(out, "{}:", part.len());
    out.push_str(part);
}

/// The prefix every member key of `channel` starts with (and no other key does); the
/// channel should have passed [`check_channel`].
#[must_use]
pub fn channel_prefix(channel: &str) -> String {
    let routing = String::from_utf8_lossy(routing_key(channel.as_bytes()));
    let mut out = String::with_capacity(PREFIX.len() + routing.len() + channel.len() + 8);
    out.push_str(PREFIX);
    out.push('{');
    out.push_str(&routing);
    out.push_str("}/");
    push_part(&mut out, channel);
    out
}

impl MemberKey<'_> {
    /// The key.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = channel_prefix(self.channel);
        push_part(&mut out, self.user);
        let (tag, id) = match self.member {
            MemberId::Device(d) => ("d:", d),
            MemberId::Conn(c) => ("c:", c),
        };
        let _ = write!(out, "{}:{tag}{id}", id.len() + 2);
        out
    }
}

/// Splits `<len>:<part>` off the front of `s`.
fn take_part(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let digits = s.get(..colon)?;
    let canonical = digits == "0" || !digits.starts_with('0');
    if digits.is_empty()
        || digits.len() > 5
        || !canonical
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let len: usize = digits.parse().ok()?;
    let rest = s.get(colon + 1..)?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// Parses a member key (`None`: not one, or malformed).
#[must_use]
pub fn parse(key: &str) -> Option<MemberKey<'_>> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix('{')?;
    let close = rest.find("}/")?;
    let routing = rest.get(..close)?;
    let rest = rest.get(close + 2..)?;
    let (channel, rest) = take_part(rest)?;
    // Only the canonical form: the routing part must be the channel's.
    if routing.as_bytes() != routing_key(channel.as_bytes()) {
        return None;
    }
    let (user, rest) = take_part(rest)?;
    let (member, rest) = take_part(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let member = match (member.strip_prefix("d:"), member.strip_prefix("c:")) {
        (Some(d), _) => MemberId::Device(d),
        (_, Some(c)) => MemberId::Conn(c),
        _ => return None,
    };
    Some(MemberKey {
        channel,
        user,
        member,
    })
}

/// The channel whose [`channel_prefix`] `prefix` is (`None`: not one).
#[must_use]
pub fn channel_of_prefix(prefix: &str) -> Option<&str> {
    let rest = prefix.strip_prefix(PREFIX)?.strip_prefix('{')?;
    let rest = rest.get(rest.find("}/")? + 2..)?;
    let (channel, tail) = take_part(rest)?;
    (tail.is_empty() && channel_prefix(channel) == prefix).then_some(channel)
}

/// Whether `key` is a presence key (reserved: clients may not read or write it).
#[must_use]
pub fn is_presence_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::partition_of;
    use proptest::prelude::*;

    fn member<'a>(channel: &'a str, user: &'a str, id: &'a str) -> MemberKey<'a> {
        MemberKey {
            channel,
            user,
            member: MemberId::Conn(id),
        }
    }

    #[test]
    fn connection_names_read_back() {
        let c = ConnName {
            edge: "edge-9-ab",
            worker: 3,
            slot: 17,
            generation: 2,
        };
        let text = c.to_string();
        assert_eq!(text, "edge-9-ab/3/17.2");
        assert_eq!(ConnName::parse(&text), Some(c));
        for bad in ["", "e/1/2", "/1/2.3", "e/x/2.3", "e/1/2.3.4", "e/01/2.3"] {
            assert_eq!(ConnName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_key_reads_back_and_lives_with_its_channel() {
        let m = member("room/{42}", "alice", "edge-9-ab/3/17.2");
        let key = m.encode();
        assert_eq!(
            key,
            "@presence/{42}/9:room/{42}5:alice18:c:edge-9-ab/3/17.2"
        );
        let phone = MemberKey {
            channel: "room/{42}",
            user: "alice",
            member: MemberId::Device("phone"),
        };
        assert_eq!(parse(&phone.encode()), Some(phone));
        assert_eq!(parse(&key), Some(m));
        assert!(key.starts_with(&channel_prefix("room/{42}")));
        for n in [1, 7, 64] {
            assert_eq!(
                partition_of(key.as_bytes(), n),
                partition_of(b"room/{42}", n)
            );
            let lobby = member("lobby", "", "e").encode();
            assert_eq!(partition_of(lobby.as_bytes(), n), partition_of(b"lobby", n));
        }
    }

    #[test]
    fn channel_checks() {
        assert_eq!(check_channel(""), Err(ChannelError::Empty));
        assert_eq!(check_channel("a}b"), Err(ChannelError::Brace));
        assert_eq!(check_channel("x{}y}"), Err(ChannelError::Brace));
        assert!(check_channel("room/{4}2}").is_ok());
        assert!(check_channel("a{b").is_ok());
        let long = "c".repeat(MAX_CHANNEL_LEN + 1);
        assert_eq!(check_channel(&long), Err(ChannelError::TooLong(long.len())));
    }

    #[test]
    fn non_canonical_keys_are_refused() {
        assert_eq!(parse("@presence/{x}/1:a0:3:c:e"), None);
        assert_eq!(parse("@presence/{a}/1:a0:3:c:ex"), None);
        assert_eq!(parse("@presence/{a}/1:a0:3:x:e"), None);
        assert_eq!(parse("@durable/{a}/1:a0:3:c:e"), None);
        assert_eq!(parse("@presence/{a}/9:a0:3:c:e"), None);
        assert_eq!(
            parse("@presence/{a}/01:a0:3:c:e"),
            None,
            "a length's leading zero"
        );
        assert!(parse("@presence/{a}/1:a0:3:c:e").is_some());
        assert!(parse("@presence/{a}/1:a0:3:d:e").is_some());
    }

    /// A channel: text with or without one `{tag}`.
    fn channel() -> impl Strategy<Value = String> {
        (
            "[a-z{/:0-9]{0,6}",
            proptest::option::of("[a-z/:0-9]{0,3}"),
            "[a-z/:0-9]{0,4}",
        )
            .prop_map(|(head, tag, tail)| match tag {
                Some(t) => format!("{head}{{{t}}}{tail}"),
                None => format!("{head}{tail}"),
            })
    }

    proptest! {
        #[test]
        fn keys_round_trip_and_prefixes_never_mix(
            a in channel(),
            b in channel(),
            extend in any::<bool>(),
            user in "[a-z:0-9/]{0,6}",
            edge in "[a-z:0-9/-]{1,6}",
        ) {
            // Often a channel that starts with the other.
            let b = if extend { format!("{a}{b}") } else { b };
            prop_assume!(check_channel(&a).is_ok() && check_channel(&b).is_ok());
            let m = member(&a, &user, &edge);
            let key = m.encode();
            prop_assert_eq!(parse(&key), Some(m));
            prop_assert!(key.starts_with(&channel_prefix(&a)));
            let prefix = channel_prefix(&a);
            prop_assert_eq!(channel_of_prefix(&prefix), Some(a.as_str()));
            prop_assert_eq!(channel_of_prefix(&key), None);
            prop_assert_eq!(key.starts_with(&channel_prefix(&b)), a == b);
            prop_assert_eq!(partition_of(key.as_bytes(), 13), partition_of(a.as_bytes(), 13));
        }

        #[test]
        fn only_canonical_keys_parse(key in "@presence/\\{[a-z0{]{0,3}\\}/[0-9:a-z/{}cd]{0,24}") {
            if let Some(m) = parse(&key) {
                prop_assert_eq!(m.encode(), key);
            }
        }
    }
}
