//! The fixed link frame header: the bytes that precede every link payload, declared as a
//! `zerocopy` struct so it is read in place and written from a plain value.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Kind, LinkError};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"RL";
/// The header layout version this crate reads and writes.
pub const VERSION: u8 = 1;
/// Size of [`LinkHeader`] on the wire.
pub const HEADER_LEN: usize = size_of::<LinkHeader>();

/// The 20-byte header of a link frame. All integers are little-endian.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LinkHeader {
    /// Always [`MAGIC`].
    pub magic: [u8; 2],
    /// Always [`VERSION`].
    pub version: u8,
    /// A [`Kind`]: which table the payload holds.
    pub kind: u8,
    /// Per-kind flags; none are defined yet and they are passed through untouched.
    pub flags: u8,
    /// Must be zero.
    pub reserved: [u8; 3],
    /// Length of the flatbuffer payload that follows the header.
    pub payload_len: U32,
    /// Correlates a reply with its request; chosen by the requester.
    pub request_id: U64,
}

const _: () = assert!(HEADER_LEN == 20);

impl LinkHeader {
    /// A header for a payload of `payload_len` bytes.
    #[must_use]
    pub fn new(kind: Kind, flags: u8, request_id: u64, payload_len: u32) -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            kind: kind.0,
            flags,
            reserved: [0; 3],
            payload_len: U32::new(payload_len),
            request_id: U64::new(request_id),
        }
    }

    /// Checks every field that does not depend on the payload, and returns the kind.
    pub fn validate(&self) -> Result<Kind, LinkError> {
        if self.magic != MAGIC {
            return Err(LinkError::BadMagic(self.magic));
        }
        if self.version != VERSION {
            return Err(LinkError::UnsupportedVersion(self.version));
        }
        if self.reserved != [0; 3] {
            return Err(LinkError::ReservedBitsSet(self.reserved));
        }
        let kind = Kind(self.kind);
        if kind.variant_name().is_none() {
            return Err(LinkError::UnknownKind(self.kind));
        }
        Ok(kind)
    }

    /// Rejects a partial header whose first bytes already cannot start a frame, so garbage
    /// fails before 20 bytes have arrived. `prefix` is shorter than [`HEADER_LEN`].
    pub(super) fn validate_prefix(prefix: &[u8]) -> Result<(), LinkError> {
        let magic_ok = prefix.iter().zip(MAGIC).all(|(&got, want)| got == want);
        if !magic_ok {
            let mut magic = [0; 2];
            for (slot, &byte) in magic.iter_mut().zip(prefix) {
                *slot = byte;
            }
            return Err(LinkError::BadMagic(magic));
        }
        match prefix.get(2) {
            Some(&version) if version != VERSION => Err(LinkError::UnsupportedVersion(version)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_twenty_packed_little_endian_bytes() {
        let header = LinkHeader::new(Kind::Put, 0xA5, 0x0102_0304_0506_0708, 0x1122_3344);
        assert_eq!(
            header.as_bytes(),
            [
                b'R', b'L', 1, 8, 0xA5, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 8, 7, 6, 5, 4, 3, 2, 1
            ]
        );
        assert_eq!(header.validate(), Ok(Kind::Put));
    }

    #[test]
    fn validate_rejects_each_bad_field() {
        let good = LinkHeader::new(Kind::Ping, 0, 1, 0);
        let mut h = good;
        h.magic = *b"XL";
        assert_eq!(h.validate(), Err(LinkError::BadMagic(*b"XL")));
        let mut h = good;
        h.version = 2;
        assert_eq!(h.validate(), Err(LinkError::UnsupportedVersion(2)));
        let mut h = good;
        h.reserved = [0, 1, 0];
        assert_eq!(h.validate(), Err(LinkError::ReservedBitsSet([0, 1, 0])));
        for kind in [0, 23, 255] {
            let mut h = good;
            h.kind = kind;
            assert_eq!(h.validate(), Err(LinkError::UnknownKind(kind)));
        }
    }

    #[test]
    fn prefix_check_fails_early_on_garbage_only() {
        assert_eq!(LinkHeader::validate_prefix(b""), Ok(()));
        assert_eq!(LinkHeader::validate_prefix(b"R"), Ok(()));
        assert_eq!(LinkHeader::validate_prefix(b"RL\x01\x05"), Ok(()));
        assert_eq!(
            LinkHeader::validate_prefix(b"G"),
            Err(LinkError::BadMagic(*b"G\0"))
        );
        assert_eq!(
            LinkHeader::validate_prefix(b"RX"),
            Err(LinkError::BadMagic(*b"RX"))
        );
        assert_eq!(
            LinkHeader::validate_prefix(b"RL\x07"),
            Err(LinkError::UnsupportedVersion(7))
        );
    }
}
