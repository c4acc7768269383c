//! The partition function, part of Ringline's public contract: every key flows
//! through [`partition_of`] to find the partition (and so the store) that owns it, and
//! every watch target (a key or a prefix) through [`target_partitions`] to find the
//! partitions it lives on.
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

/// The partitions a watch target lives on, as [`target_partitions`] finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitions {
    /// Exactly one: the target is a key, or a prefix with a complete non-empty hash tag.
    One(u32),
    /// Every partition of a cluster of `of`: keys under the prefix may hash anywhere.
    All {
        /// The cluster's number of partitions.
        of: u32,
    },
}

impl Partitions {
    /// The one partition, when there is exactly one by construction (`All { of: 1 }`
    /// is still `None`: such a target is not bound to a partition).
    pub fn single(self) -> Option<u32> {
        match self {
            Self::One(p) => Some(p),
            Self::All { .. } => None,
        }
    }
}

impl IntoIterator for Partitions {
    type Item = u32;
    type IntoIter = std::ops::Range<u32>;

    /// The partitions in ascending order.
    fn into_iter(self) -> Self::IntoIter {
        match self {
            // A partition is below the cluster's count, so `p + 1` fits.
            Self::One(p) => p..p.saturating_add(1),
            Self::All { of } => 0..of,
        }
    }
}

/// Which partitions a watch target (a key, or a prefix when `prefix`) lives on, in a
/// cluster of `partitions` partitions (> 0): the one contract the edge (which sends a
/// watch to each owning store) and the store (which snapshots and binds the watch)
/// share. A key lives on its [`partition_of`]; a prefix on its [`prefix_partition`] when
/// that is known, else on every partition.
pub fn target_partitions(target: &[u8], prefix: bool, partitions: u32) -> Partitions {
    let one = if prefix {
        prefix_partition(target, partitions)
    } else {
        Some(partition_of(target, partitions))
    };
    one.map_or(
        Partitions::All {
            of: partitions.max(1),
        },
        Partitions::One,
    )
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

    #[test]
    fn a_target_lives_on_its_key_s_or_tagged_prefix_s_partition_or_on_all() {
        let one = |t: &[u8], prefix| target_partitions(t, prefix, 256);
        assert_eq!(one(b"room/{42}/title", false), Partitions::One(145));
        assert_eq!(one(b"k", false), Partitions::One(29));
        // A key is never spread, even when it looks like an untagged prefix.
        assert_eq!(
            one(b"room/", false),
            Partitions::One(partition_of(b"room/", 256))
        );
        assert_eq!(one(b"room/{42}/", true), Partitions::One(145));
        for spread in [&b"room/"[..], b"room/{42", b"room/{}/", b""] {
            assert_eq!(one(spread, true), Partitions::All { of: 256 }, "{spread:?}");
        }
        assert_eq!(Partitions::One(145).into_iter().collect::<Vec<_>>(), [145]);
        assert_eq!(Partitions::One(145).single(), Some(145));
        assert_eq!(
            Partitions::All { of: 4 }.into_iter().collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(Partitions::All { of: 1 }.single(), None);
    }
}
