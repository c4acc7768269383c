//! Incremental UTF-8 validation for text messages that arrive in pieces
//! (fragments, or partial reads of one frame). Each piece flows through
//! [`Utf8Validator::feed`] once; an incomplete code point at the end of a piece is
//! carried (at most 3 bytes) into the next. Validation fails as soon as the bytes
//! seen can no longer begin a valid string (RFC 6455 §8.1 "fail fast"), using
//! `simdutf8` for the bulk of the work.

use simdutf8::compat;

/// The bytes seen so far can never be valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in text message")]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: usize,
}

/// Number of bytes of the UTF-8 sequence introduced by `lead` (only called on
/// bytes that simdutf8 accepted as the start of an incomplete sequence).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget any carried state (start of a new message).
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }

    /// True when the bytes fed so far end on a code point boundary.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }

    /// Validate the next piece of the stream.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            let need = sequence_len(self.carry[0]);
            let take = (need - self.carry_len).min(piece.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&piece[..take]);
            self.carry_len += take;
            piece = &piece[take..];
            match compat::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still incomplete: only possible when the piece ran out.
                    debug_assert!(piece.is_empty());
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        if simdutf8::basic::from_utf8(piece).is_ok() {
            return Ok(());
        }
        match compat::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &piece[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The stream has ended: it is valid only if no code point is left unfinished.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.is_complete();
        self.reset();
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &c in cuts {
            let c = c.clamp(start, bytes.len());
            v.feed(&bytes[start..c])?;
            start = c;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        let mut v = Utf8Validator::new();
        // U+10FFFF is F4 8F BF BF; F4 90 can never be valid.
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed"),
            Ok(())
        );
        assert_eq!(v.feed(b"\xa0\x80"), Err(InvalidUtf8)); // surrogate
    }

    #[test]
    fn incomplete_at_end_fails() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    proptest! {
        /// Any way of cutting a byte string gives the same verdict as std.
        #[test]
        fn pieces_agree_with_std(
            s in prop_oneof![
                any::<String>().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(prop_oneof![Just(0xF0u8), Just(0x9F), Just(0x98), Just(0x80), Just(0xED), Just(0xA0), Just(0x41)], 0..24),
            ],
            cuts in proptest::collection::vec(0usize..80, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&s).is_ok();
            prop_assert_eq!(validate_in_pieces(&s, &cuts).is_ok(), expected);
        }

        /// Fail fast: feeding byte by byte fails exactly at the first byte after which
        /// the prefix seen can no longer begin any valid UTF-8 string.
        #[test]
        fn one_byte_at_a_time_fails_at_first_bad_byte(s in proptest::collection::vec(any::<u8>(), 0..40)) {
            let possible = |p: &[u8]| match std::str::from_utf8(p) {
                Ok(_) => true,
                Err(e) => e.error_len().is_none(),
            };
            let mut v = Utf8Validator::new();
            for i in 0..s.len() {
                let fed = v.feed(&s[i..=i]);
                prop_assert_eq!(fed.is_ok(), possible(&s[..=i]), "byte {}", i);
                if fed.is_err() { return Ok(()); }
            }
            prop_assert_eq!(v.finish().is_ok(), std::str::from_utf8(&s).is_ok());
        }
    }
}
