//! Resume tokens: the opaque, URL-safe strings that carry log positions to clients and back,
//! one [`Position`] per partition a subscription spans, base64url-encoded without padding.
//! Two forms, both described in `schemas/client.fbs`, both decoded:
//!
//! - compact (version 1, what [`encode_token`] makes): a byte `0x01`, then for each
//!   position its partition, epoch and seq as LEB128 varints. A position of a young log
//!   takes a handful of bytes: a single-key token is about 8 characters;
//! - the `ResumeToken` flatbuffer, what tokens were before: still read, so that tokens
//!   already handed out keep working. Its first byte is the low byte of a 4-aligned
//!   root offset, never `0x01`.
//!
//! Tokens come back from clients, so [`decode_token`] treats them as hostile: bounded length,
//! verified buffer. The positions in a valid token are still only claims: the caller checks
//! them against the partitions it knows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flatbuffers::{FlatBufferBuilder, VerifierOptions};

use super::MAX_TOKEN_LEN;
use crate::generated::{client as fb, internal};

/// Most positions one token may carry.
pub const MAX_TOKEN_POSITIONS: usize = 1024;

/// A point in one partition's log: the last record seen, as (partition, epoch, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The partition log's epoch.
    pub epoch: u64,
    /// Sequence number within the epoch.
    pub seq: u64,
}

impl From<&internal::Position> for Position {
    fn from(p: &internal::Position) -> Self {
        Self {
            partition: p.partition(),
            epoch: p.epoch(),
            seq: p.seq(),
        }
    }
}

impl From<Position> for internal::Position {
    fn from(p: Position) -> Self {
        Self::new(p.partition, p.epoch, p.seq)
    }
}

impl From<&fb::Position> for Position {
    fn from(p: &fb::Position) -> Self {
        Self {
            partition: p.partition(),
            epoch: p.epoch(),
            seq: p.seq(),
        }
    }
}

/// Why a token string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not unpadded base64url.
    #[error("token is not base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded bytes are not a `ResumeToken` flatbuffer.
    #[error("token content is invalid: {0}")]
    Invalid(#[from] flatbuffers::InvalidFlatbuffer),
    /// The token holds no position.
    #[error("token holds no position")]
    Empty,
    /// A compact token whose varints do not decode: cut short, longer than their type,
    /// or with trailing bytes.
    #[error("token content is invalid: {0}")]
    Malformed(&'static str),
    /// The token holds more than [`MAX_TOKEN_POSITIONS`] positions.
    #[error("token holds {count} positions, the limit is {max}")]
    TooManyPositions {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The first byte of a compact token.
const COMPACT_V1: u8 = 0x01;

/// Encodes `positions` as a (compact) token string. More than [`MAX_TOKEN_POSITIONS`]
/// positions (or none) make a token that [`decode_token`] refuses.
#[must_use]
pub fn encode_token(positions: &[Position]) -> String {
    let mut bytes = Vec::with_capacity(1 + 12 * positions.len());
    bytes.push(COMPACT_V1);
    for p in positions {
        put_varint(&mut bytes, u64::from(p.partition));
        put_varint(&mut bytes, p.epoch);
        put_varint(&mut bytes, p.seq);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Append `v` as an unsigned LEB128 varint (7 bits a byte, low first).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at the start of `bytes` and the bytes after it; at most 10 bytes, the
/// last of them at most 1 (64 bits).
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), TokenError> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(TokenError::Malformed("varint past 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, bytes.get(i + 1..).unwrap_or_default()));
        }
    }
    Err(TokenError::Malformed("varint cut short"))
}

/// The positions of a compact token's bytes (after its version byte).
fn decode_compact(mut bytes: &[u8]) -> Result<Vec<Position>, TokenError> {
    let mut positions = Vec::new();
    while !bytes.is_empty() {
        if positions.len() == MAX_TOKEN_POSITIONS {
            return Err(TokenError::TooManyPositions {
                count: positions.len() + 1,
                max: MAX_TOKEN_POSITIONS,
            });
        }
        let (partition, rest) = take_varint(bytes)?;
        let (epoch, rest) = take_varint(rest)?;
        let (seq, rest) = take_varint(rest)?;
        let partition = u32::try_from(partition)
            .map_err(|_| TokenError::Malformed("partition past 32 bits"))?;
        positions.push(Position {
            partition,
            epoch,
            seq,
        });
        bytes = rest;
    }
    if positions.is_empty() {
        return Err(TokenError::Empty);
    }
    Ok(positions)
}

/// Encodes `positions` in the earlier form, the `ResumeToken` flatbuffer (tests and
/// tools that check old tokens still decode).
#[must_use]
pub fn encode_token_flatbuffer(positions: &[Position]) -> String {
    let mut fbb = FlatBufferBuilder::with_capacity(32 + 24 * positions.len());
    let items: Vec<fb::Position> = positions
        .iter()
        .map(|p| fb::Position::new(p.partition, p.epoch, p.seq))
        .collect();
    let positions = Some(fbb.create_vector(&items));
    let root = fb::ResumeToken::create(&mut fbb, &fb::ResumeTokenArgs { positions });
    fbb.finish_minimal(root);
    URL_SAFE_NO_PAD.encode(fbb.finished_data())
}

/// Decodes a token string into its positions (in the order they were encoded).
pub fn decode_token(token: &str) -> Result<Vec<Position>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let bytes = URL_SAFE_NO_PAD.decode(token)?;
    if let Some((&COMPACT_V1, rest)) = bytes.split_first() {
        return decode_compact(rest);
    }
    let opts = VerifierOptions {
        max_depth: 2,
        max_tables: 1,
        max_apparent_size: bytes.len().saturating_mul(2),
        ..VerifierOptions::default()
    };
    let root = flatbuffers::root_with_opts::<fb::ResumeToken>(&opts, &bytes)?;
    let positions = root.positions().ok_or(TokenError::Empty)?;
    match positions.len() {
        0 => Err(TokenError::Empty),
        count if count > MAX_TOKEN_POSITIONS => Err(TokenError::TooManyPositions {
            count,
            max: MAX_TOKEN_POSITIONS,
        }),
        _ => Ok(positions.iter().map(Position::from).collect()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pos(partition: u32, epoch: u64, seq: u64) -> Position {
        Position {
            partition,
            epoch,
            seq,
        }
    }

    #[test]
    fn round_trip_is_url_safe() {
        let positions = [pos(0, 1, 2), pos(7, u64::MAX, 0)];
        let token = encode_token(&positions);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode_token(&token), Ok(positions.to_vec()));
    }

    #[test]
    fn a_young_single_position_is_a_few_characters_and_old_tokens_still_decode() {
        let one = [pos(17, 3, 1_234)];
        let token = encode_token(&one);
        assert!(token.len() <= 10, "{token}");
        assert_eq!(decode_token(&token), Ok(one.to_vec()));
        let old = encode_token_flatbuffer(&one);
        assert!(old.len() > 60, "{old}");
        assert_eq!(decode_token(&old), Ok(one.to_vec()));
        // Every valid flatbuffer token starts with a 4-aligned offset: never the
        // compact form's first byte.
        for n in 1..40u32 {
            let ps: Vec<Position> = (0..n).map(|i| pos(i, u64::from(i), 7)).collect();
            let raw = URL_SAFE_NO_PAD
                .decode(encode_token_flatbuffer(&ps))
                .unwrap_or_default();
            assert_ne!(raw.first(), Some(&COMPACT_V1));
        }
    }

    #[test]
    fn malformed_compact_tokens_are_refused() {
        let token = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(decode_token(&token(&[1])), Err(TokenError::Empty));
        // A position cut short, a varint cut short, one past 64 bits, a partition past
        // 32 bits.
        for bad in [
            &[1u8, 5, 1][..],
            &[1, 0x80],
            &[
                1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0,
            ],
            &[1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0],
        ] {
            assert!(
                matches!(decode_token(&token(bad)), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
        // u64::MAX itself is fine.
        let max = [pos(u32::MAX, u64::MAX, u64::MAX)];
        assert_eq!(decode_token(&encode_token(&max)), Ok(max.to_vec()));
    }

    #[test]
    fn the_largest_token_fits_the_length_limit() {
        let positions: Vec<Position> = (0..MAX_TOKEN_POSITIONS as u32)
            .map(|p| pos(p, u64::MAX, u64::MAX))
            .collect();
        let token = encode_token(&positions);
        assert!(token.len() <= MAX_TOKEN_LEN, "{}", token.len());
        assert_eq!(decode_token(&token), Ok(positions));
    }

    #[test]
    fn refuses_bad_tokens() {
        assert!(matches!(decode_token(""), Err(TokenError::Invalid(_))));
        assert!(matches!(
            decode_token("not base64!"),
            Err(TokenError::Base64(_))
        ));
        assert!(matches!(
            decode_token("AAAAAAAAAAA="),
            Err(TokenError::Base64(_))
        ));
        assert!(matches!(decode_token("AAAA"), Err(TokenError::Invalid(_))));
        // Zeros happen to form an empty table.
        assert_eq!(decode_token("AAAAAAAA"), Err(TokenError::Empty));
        assert!(matches!(
            decode_token(&"A".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::TooLong { .. })
        ));
        assert_eq!(decode_token(&encode_token(&[])), Err(TokenError::Empty));
        let too_many = vec![Position::default(); MAX_TOKEN_POSITIONS + 1];
        assert!(matches!(
            decode_token(&encode_token(&too_many)),
            Err(TokenError::TooLong { .. } | TokenError::TooManyPositions { .. })
        ));
    }

    #[test]
    fn converts_from_generated_positions() {
        let internal = internal::Position::new(3, 4, 5);
        assert_eq!(Position::from(&internal), pos(3, 4, 5));
        assert_eq!(internal::Position::from(pos(3, 4, 5)), internal);
    }

    proptest! {
        #[test]
        fn round_trips(positions in proptest::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(p, e, s)| pos(p, e, s)),
            1..40,
        )) {
            prop_assert_eq!(decode_token(&encode_token(&positions)), Ok(positions.clone()));
            prop_assert_eq!(decode_token(&encode_token_flatbuffer(&positions)), Ok(positions));
        }

        #[test]
        fn arbitrary_strings_never_panic(token in "[A-Za-z0-9_-]{0,200}") {
            let _ = decode_token(&token);
        }
    }
}
