//! Encoding and decoding of stored record values: a log entry, a current value or a
//! remembered write (`schemas/storage.fbs`), or a big-endian u64 (meta counters, publish heads), in,
//! bytes out, and back. Decoding verifies the flatbuffer first, so a corrupt record is
//! a [`Corrupt`] error, never a panic.

use flatbuffers::FlatBufferBuilder;

use crate::error::Corrupt;
use crate::generated::storage as fb;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A value was put.
    Put,
    /// The key was deleted.
    Delete,
    /// A log-only message.
    Publish,
}

/// A decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// What it did.
    pub kind: ChangeKind,
    /// The key.
    pub key: Vec<u8>,
    /// The value put or published (`None` for a delete).
    pub value: Option<Vec<u8>>,
    /// When it was logged (ms since the Unix epoch).
    pub time_ms: u64,
    /// The key's previous change in the same chain (0: none).
    pub prev: u64,
}

/// A key's live value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The seq of the put that wrote it.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// A decoded `V` record: a live value, or a deleted key's tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The seq of the key's last put or delete.
    pub version: u64,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Stored {
    /// The live value, if the key exists.
    pub fn live(self) -> Option<Current> {
        let version = self.version;
        self.value.map(|value| Current { version, value })
    }
}

/// Encode a log entry.
pub fn encode_entry(
    kind: ChangeKind,
    key: &[u8],
    value: Option<&[u8]>,
    time_ms: u64,
    prev: u64,
) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(32 + key.len() + value.map_or(0, <[u8]>::len));
    let key = Some(b.create_vector(key));
    let value = value.map(|v| b.create_vector(v));
    let kind = match kind {
        ChangeKind::Put => fb::EntryKind::Put,
        ChangeKind::Delete => fb::EntryKind::Delete,
        ChangeKind::Publish => fb::EntryKind::Publish,
    };
    let root = fb::LogEntry::create(
        &mut b,
        &fb::LogEntryArgs {
            kind,
            key,
            value,
            time_ms,
            prev,
        },
    );
    b.finish_minimal(root);
    b.finished_data().to_vec()
}

/// Decode a log entry.
pub fn decode_entry(bytes: &[u8]) -> Result<LogEntry, Corrupt> {
    let e = flatbuffers::root::<fb::LogEntry>(bytes).map_err(|e| Corrupt::new("log record", e))?;
    let kind = match e.kind() {
        fb::EntryKind::Put => ChangeKind::Put,
        fb::EntryKind::Delete => ChangeKind::Delete,
        fb::EntryKind::Publish => ChangeKind::Publish,
        other => {
            return Err(Corrupt::new(
                "log record",
                format!("unknown kind {}", other.0),
            ));
        }
    };
    Ok(LogEntry {
        kind,
        key: e.key().bytes().to_vec(),
        value: e.value().map(|v| v.bytes().to_vec()),
        time_ms: e.time_ms(),
        prev: e.prev(),
    })
}

/// Encode a `V` record: a value, or a tombstone (`None`).
pub fn encode_current(version: u64, value: Option<&[u8]>) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(24 + value.map_or(0, <[u8]>::len));
    let value = value.map(|v| b.create_vector(v));
    let root = fb::Current::create(&mut b, &fb::CurrentArgs { version, value });
    b.finish_minimal(root);
    b.finished_data().to_vec()
}

/// Decode a `V` record.
pub fn decode_current(bytes: &[u8]) -> Result<Stored, Corrupt> {
    let c = flatbuffers::root::<fb::Current>(bytes).map_err(|e| Corrupt::new("value record", e))?;
    Ok(Stored {
        version: c.version(),
        value: c.value().map(|v| v.bytes().to_vec()),
    })
}

/// A decoded `D` record: a write remembered for idempotency (see [`crate::dedup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The partition's epoch when it was written.
    pub epoch: u64,
    /// Its seq.
    pub seq: u64,
    /// The key's version after it (0 for a publish).
    pub version: u64,
    /// When it was written (ms since the Unix epoch).
    pub time_ms: u64,
    /// What it asked for, hashed.
    pub fingerprint: u64,
}

/// Encode a `D` record.
pub fn encode_remembered(r: &Remembered) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(64);
    let args = fb::RememberedArgs {
        epoch: r.epoch,
        seq: r.seq,
        version: r.version,
        time_ms: r.time_ms,
        fingerprint: r.fingerprint,
    };
    let root = fb::Remembered::create(&mut b, &args);
    b.finish_minimal(root);
    b.finished_data().to_vec()
}

/// Decode a `D` record.
pub fn decode_remembered(bytes: &[u8]) -> Result<Remembered, Corrupt> {
    let r =
        flatbuffers::root::<fb::Remembered>(bytes).map_err(|e| Corrupt::new("msg_id record", e))?;
    Ok(Remembered {
        epoch: r.epoch(),
        seq: r.seq(),
        version: r.version(),
        time_ms: r.time_ms(),
        fingerprint: r.fingerprint(),
    })
}

/// Encode a big-endian u64 meta value.
pub fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// Decode a big-endian u64 meta value.
pub fn decode_u64(bytes: &[u8]) -> Result<u64, Corrupt> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Corrupt::new("u64 record", "not 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (kind, value) in [
            (ChangeKind::Put, Some(&b"v"[..])),
            (ChangeKind::Delete, None),
            (ChangeKind::Publish, Some(&b""[..])),
        ] {
            let e = decode_entry(&encode_entry(kind, b"k\0ey", value, 1234, 9)).unwrap();
            assert_eq!(
                e,
                LogEntry {
                    kind,
                    key: b"k\0ey".to_vec(),
                    value: value.map(<[u8]>::to_vec),
                    time_ms: 1234,
                    prev: 9
                }
            );
        }
        assert_eq!(
            decode_current(&encode_current(7, Some(b"x")))
                .unwrap()
                .live(),
            Some(Current {
                version: 7,
                value: b"x".to_vec()
            })
        );
        let tomb = decode_current(&encode_current(8, None)).unwrap();
        assert_eq!((tomb.version, tomb.value.clone()), (8, None));
        assert_eq!(tomb.live(), None);
        let empty = decode_current(&encode_current(9, Some(b""))).unwrap();
        assert_eq!(
            empty.value,
            Some(Vec::new()),
            "an empty value is not a tombstone"
        );
        assert_eq!(decode_u64(&encode_u64(99)).unwrap(), 99);
        let r = Remembered {
            epoch: 1,
            seq: 2,
            version: 3,
            time_ms: 4,
            fingerprint: u64::MAX,
        };
        assert_eq!(decode_remembered(&encode_remembered(&r)).unwrap(), r);
    }

    #[test]
    fn corruption_is_an_error() {
        let good = encode_entry(ChangeKind::Put, b"k", Some(b"v"), 1, 0);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xFF;
            let _ = decode_entry(&bad); // never panics
        }
        assert!(decode_entry(b"").is_err());
        assert!(decode_current(&[1, 2, 3]).is_err());
        assert!(decode_u64(&[1]).is_err());
        assert!(decode_remembered(&[9; 5]).is_err());
    }
}
