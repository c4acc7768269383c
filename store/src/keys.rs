//! Every RocksDB key the store writes is built here, and nowhere else. All integers
//! are big-endian so that byte order is numeric order.
//!
//! | key | value | what |
//! |---|---|---|
//! | `M p:u32 0x01` | epoch:u64 | the partition's epoch (random; changes only if its log is lost) |
//! | `M p:u32 0x02` | seq:u64 | the last seq when the partition was created or last trimmed |
//! | `M p:u32 0x03` | seq:u64 | the first seq still retained (advanced by trimming) |
//! | `V p:u32 key` | `storage.fbs` `Current` | current value and version of `key`, or a deleted key's tombstone |
//! | `L p:u32 seq:u64` | `storage.fbs` `LogEntry` | the change log |
//! | `H p:u32 key` | seq:u64 | the key's last publish (head of its publish chain; see `LogEntry.prev`) |
//! | `D p:u32 klen:u16 key slen:u16 scope msg_id` | `storage.fbs` `Remembered` | a write with a msg_id, remembered for idempotency (see `dedup`) |
//! | `O p:u32 key` | the owner's `ConnName` text | the connection holding presence member `key` (see `presence`; not logged) |
//! | `R` | `clean` / `sync` / `async` | how the store last ran: stopped cleanly, or running with or without fsync |
//!
//! No per-key index is stored: each log entry points at the key's previous change
//! (`V` holds the head of a key's put/delete chain, `H` of its publish chain), so
//! resuming a key reads exactly the entries it returns.
//!
//! The last-seq counter is written when a partition is created and by each trim; a
//! partition's position is the larger of it and its last log entry.

/// Meta tag: the partition's epoch.
const META_EPOCH: u8 = 0x01;
/// Meta tag: the last seq at creation or at the last trim.
const META_LAST_SEQ: u8 = 0x02;
/// Meta tag: the first retained seq.
const META_FIRST_SEQ: u8 = 0x03;

/// The key recording how the store last ran (see [`crate::changelog::ChangeLog::begin_run`]).
pub fn run_state() -> Vec<u8> {
    vec![b'R']
}

fn with_partition(space: u8, p: u32, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + extra);
    k.push(space);
    k.extend_from_slice(&p.to_be_bytes());
    k
}

fn meta(p: u32, tag: u8) -> Vec<u8> {
    let mut k = with_partition(b'M', p, 1);
    k.push(tag);
    k
}

/// The key holding partition `p`'s epoch.
pub fn epoch(p: u32) -> Vec<u8> {
    meta(p, META_EPOCH)
}

/// The key holding partition `p`'s last seq at creation or at its last trim.
pub fn last_seq(p: u32) -> Vec<u8> {
    meta(p, META_LAST_SEQ)
}

/// The key holding partition `p`'s first retained seq.
pub fn first_seq(p: u32) -> Vec<u8> {
    meta(p, META_FIRST_SEQ)
}

/// The current-value key of `key` in partition `p`.
pub fn value(p: u32, key: &[u8]) -> Vec<u8> {
    let mut k = with_partition(b'V', p, key.len());
    k.extend_from_slice(key);
    k
}

/// The range `[start, end)` of current-value keys of partition `p` starting with `prefix`.
pub fn value_prefix_range(p: u32, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = value(p, prefix);
    let end = prefix_end(&start);
    (start, end)
}

/// The log key of `seq` in partition `p`.
pub fn log(p: u32, seq: u64) -> Vec<u8> {
    let mut k = with_partition(b'L', p, 8);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a log key (0 if malformed, which the engine never returns).
pub fn seq_of_log(k: &[u8]) -> u64 {
    k.get(5..13)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The key remembering the write to `key` by `scope` with `msg_id` in partition `p`.
/// The lengths make it unambiguous: `key` is at most
/// [`crate::changelog::MAX_KEY_BYTES`] and `scope` at most
/// [`crate::dedup::MAX_SCOPE_BYTES`], both below 2^16.
pub fn remembered(p: u32, key: &[u8], scope: &[u8], msg_id: &[u8]) -> Vec<u8> {
    let mut k = with_partition(b'D', p, 4 + key.len() + scope.len() + msg_id.len());
    for part in [key, scope] {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        k.extend_from_slice(&len.to_be_bytes());
        k.extend_from_slice(part);
    }
    k.extend_from_slice(msg_id);
    k
}

/// The range `[start, end)` of partition `p`'s remembered writes.
pub fn remembered_range(p: u32) -> (Vec<u8>, Vec<u8>) {
    let start = with_partition(b'D', p, 0);
    let end = prefix_end(&start);
    (start, end)
}

/// The range `[start, end)` of partition `p`'s log keys.
pub fn log_range(p: u32) -> (Vec<u8>, Vec<u8>) {
    let start = with_partition(b'L', p, 0);
    let end = prefix_end(&start);
    (start, end)
}

/// The publish head key of `key` in partition `p`.
pub fn publish_head(p: u32, key: &[u8]) -> Vec<u8> {
    let mut k = with_partition(b'H', p, key.len());
    k.extend_from_slice(key);
    k
}

/// The range of publish head keys of partition `p` starting with `prefix`.
pub fn publish_prefix_range(p: u32, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = publish_head(p, prefix);
    let end = prefix_end(&start);
    (start, end)
}

/// Strip the `V p` or `H p` header from a value or publish head key.
pub fn user_key(k: &[u8]) -> &[u8] {
    k.get(5..).unwrap_or_default()
}

/// The key recording which connection holds presence member `key` of partition `p`.
pub fn owner(p: u32, key: &[u8]) -> Vec<u8> {
    let mut k = with_partition(b'O', p, key.len());
    k.extend_from_slice(key);
    k
}

/// The range `[start, end)` of partition `p`'s owner records.
pub fn owner_range(p: u32) -> (Vec<u8>, Vec<u8>) {
    let start = with_partition(b'O', p, 0);
    let end = prefix_end(&start);
    (start, end)
}

/// The smallest byte string greater than every string starting with `prefix`
/// (`prefix` with trailing 0xFF bytes dropped and the last byte incremented).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xFF: no finite upper bound within the key space; our keys
    // always start with an ASCII space tag, so this is not reached.
    vec![0xFF; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spaces_do_not_overlap() {
        let all = [
            epoch(1),
            last_seq(1),
            first_seq(1),
            value(1, b"k"),
            log(1, 5),
            publish_head(1, b"k"),
            remembered(1, b"k", b"", b"m"),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(seq_of_log(&log(7, 42)), 42);
        assert_eq!(user_key(&value(7, b"room/1")), b"room/1");
        assert_eq!(user_key(&publish_head(7, b"room/1")), b"room/1");
        // Lengths keep (key, scope, id) apart however their bytes run together.
        assert_ne!(
            remembered(1, b"ab", b"", b"c"),
            remembered(1, b"a", b"b", b"c")
        );
        assert_ne!(
            remembered(1, b"k", b"ab", b"c"),
            remembered(1, b"k", b"a", b"bc")
        );
        let (ds, de) = remembered_range(1);
        assert!(ds <= remembered(1, b"k", b"s", b"m") && remembered(1, b"k", b"s", b"m") < de);
        assert!(remembered(2, b"k", b"s", b"m") >= de);
    }

    proptest! {
        /// A key falls in a prefix's value and publish-head ranges exactly when it
        /// starts with the prefix; log ranges hold exactly their partition's entries.
        #[test]
        fn ranges_select_exactly(key in proptest::collection::vec(any::<u8>(), 0..8), other in proptest::collection::vec(any::<u8>(), 0..8), cut in 0usize..8, s in any::<u64>(), p in 0u32..4) {
            let prefix = &key[..cut.min(key.len())];
            let (vs, ve) = value_prefix_range(3, prefix);
            let v = value(3, &other);
            prop_assert_eq!(vs <= v && v < ve, other.starts_with(prefix));
            let (hs, he) = publish_prefix_range(3, prefix);
            let h = publish_head(3, &other);
            prop_assert_eq!(hs <= h && h < he, other.starts_with(prefix));
            prop_assert!(!(vs <= h && h < ve), "spaces stay apart");
            let (ls, le) = log_range(p);
            let l = log(3, s);
            prop_assert_eq!(ls <= l && l < le, p == 3);
        }
    }
}
