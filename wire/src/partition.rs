//! The partition function, part of Ringline's public contract: every key flows
//! through [`partition_of`] to find the partition (and so the store) that owns it.
//!
//! `partition = xxh3_64(routing_key) % partitions`, where the routing key is the part
//! of the key inside its first `{...}` when that part is non-empty (the Redis Cluster
//! hash-tag rule: `room/{42}/title` and `room/{42}/chat` share a partition), else the
//! whole key. The test vectors below were computed with an independent implementation
//! (Python `xxhash`), so a change to this function fails them.

use xxhash_rust::xxh3::xxh3_64;

/// The part of `key` that is hashed: the content of the first `{...}` if non-empty,
/// else the whole key.
pub fn routing_key(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// The partition owning `key`, for a cluster of `partitions` partitions (> 0).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    // The remainder is below `partitions`, so it fits in u32.
    (xxh3_64(routing_key(key)) % u64::from(partitions.max(1))) as u32
}

/// The single partition a prefix lives in, when it contains a complete non-empty hash
/// tag (every key with this prefix then has the same routing key); `None` when keys
/// with this prefix may be spread over all partitions.
pub fn prefix_partition(prefix: &[u8], partitions: u32) -> Option<u32> {
    let open = prefix.iter().position(|&b| b == b'{')?;
    let close = prefix[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| partition_of(prefix, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (key, routing key, xxh3_64(routing key), partition of 256, partition of 1024),
    /// computed with Python's `xxhash.xxh3_64_intdigest`.
    type Vector = (&'static [u8], &'static [u8], u64, u32, u32);
    const VECTORS: &[Vector] = &[
        (b"", b"", 0x2d06800538d394c2, 194, 194),
        (b"k", b"k", 0xa921e3704fda881d, 29, 29),
        (b"room/{42}/title", b"42", 0x1217cb28c0ef2191, 145, 401),
        (b"room/{42}/chat", b"42", 0x1217cb28c0ef2191, 145, 401),
        (b"42", b"42", 0x1217cb28c0ef2191, 145, 401),
        (b"user:1000", b"user:1000", 0xfb6841b2068c0c9f, 159, 159),
        (b"{}", b"{}", 0x1349cde127705c16, 22, 22),
        (b"a{}b", b"a{}b", 0xb99a3ace9d77f222, 34, 546),
        (
            b"{user1000}.following",
            b"user1000",
            0xb03c8988cdc1c874,
            116,
            116,
        ),
        (b"foo{}{bar}", b"foo{}{bar}", 0xc183e6678835189c, 156, 156),
        (b"foo{{bar}}zap", b"{bar", 0xa3610095f98f8e10, 16, 528),
        (b"foo{bar}{zap}", b"bar", 0xd463c860a032d362, 98, 866),
        (
            "ключ/{é}".as_bytes(),
            "é".as_bytes(),
            0xf7940a006cf10cb3,
            179,
            179,
        ),
    ];

    #[test]
    fn pinned_vectors() {
        for &(key, routing, hash, p256, p1024) in VECTORS {
            assert_eq!(routing_key(key), routing, "{key:?}");
            assert_eq!(xxh3_64(routing), hash, "{key:?}");
            assert_eq!(partition_of(key, 256), p256, "{key:?}");
            assert_eq!(partition_of(key, 1024), p1024, "{key:?}");
        }
    }

    #[test]
    fn hash_tagged_prefixes_live_in_one_partition() {
        assert_eq!(prefix_partition(b"room/{42}/", 256), Some(145));
        assert_eq!(prefix_partition(b"room/{42", 256), None);
        assert_eq!(prefix_partition(b"room/", 256), None);
        assert_eq!(prefix_partition(b"room/{}/", 256), None);
        for suffix in ["", "a", "title", "{x}"] {
            let key = format!("room/{{42}}/{suffix}");
            assert_eq!(partition_of(key.as_bytes(), 256), 145);
        }
    }
}
