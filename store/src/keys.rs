//! Every RocksDB key the store writes is built here, and nowhere else. All integers
//! are big-endian so that byte order is numeric order.
//!
//! | key | value | what |
//! |---|---|---|
//! | `M p:u32 0x01` | epoch:u64 | the partition's epoch (random; changes only if its log is lost) |
//! | `M p:u32 0x02` | seq:u64 | the last seq assigned (written in every write batch) |
//! | `M p:u32 0x03` | seq:u64 | the first seq still retained (advanced by trimming) |
//! | `V p:u32 key` | `storage.fbs` `Current` | current value and version of `key` |
//! | `L p:u32 seq:u64` | `storage.fbs` `LogEntry` | the change log |
//! | `K p:u32 esc(key) 0x00 0x01 seq:u64` | empty | per-key index of the log, so that resuming one key reads only that key's entries |
//! | `R` | `clean` / `sync` / `async` | how the store last ran: stopped cleanly, or running with or without fsync |
//!
//! `esc` makes key bytes order-preserving and self-delimiting: `0x00` becomes
//! `0x00 0xFF`, and `0x00 0x01` ends the key. A prefix's escaped bytes (without the
//! terminator) are then a byte prefix of the escaped bytes of every key it covers.

/// Meta tag: the partition's epoch.
const META_EPOCH: u8 = 0x01;
/// Meta tag: the last seq assigned.
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

/// The key holding partition `p`'s last assigned seq.
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

/// Strip the `V p` header from a current-value key.
pub fn user_key_of_value(k: &[u8]) -> &[u8] {
    k.get(5..).unwrap_or_default()
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

fn escape_into(k: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        k.push(b);
        if b == 0 {
            k.push(0xFF);
        }
    }
}

fn index_head(p: u32, key: &[u8]) -> Vec<u8> {
    let mut k = with_partition(b'K', p, key.len() + 10);
    escape_into(&mut k, key);
    k.extend_from_slice(&[0x00, 0x01]);
    k
}

/// The index key of (`key`, `seq`) in partition `p`.
pub fn index(p: u32, key: &[u8], seq: u64) -> Vec<u8> {
    let mut k = index_head(p, key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The index range of `key`'s entries with seq in `[from, ∞)`.
pub fn index_key_range(p: u32, key: &[u8], from: u64) -> (Vec<u8>, Vec<u8>) {
    let head = index_head(p, key);
    let end = prefix_end(&head);
    let mut start = head;
    start.extend_from_slice(&from.to_be_bytes());
    (start, end)
}

/// The index range of every key starting with `prefix`, all seqs.
pub fn index_prefix_range(p: u32, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = with_partition(b'K', p, prefix.len() + 2);
    escape_into(&mut start, prefix);
    let end = prefix_end(&start);
    (start, end)
}

/// Split an index key into (user key, seq). `None` for a malformed key.
pub fn parse_index(k: &[u8]) -> Option<(Vec<u8>, u64)> {
    let body = k.get(5..)?;
    let (esc, seq) = body.split_at(body.len().checked_sub(8)?);
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    let esc = esc.strip_suffix(&[0x00, 0x01])?;
    let mut key = Vec::with_capacity(esc.len());
    let mut i = 0;
    while i < esc.len() {
        key.push(esc[i]);
        if esc[i] == 0 {
            if esc.get(i + 1) != Some(&0xFF) {
                return None;
            }
            i += 1;
        }
        i += 1;
    }
    Some((key, seq))
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
            index(1, b"k", 5),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(seq_of_log(&log(7, 42)), 42);
        assert_eq!(user_key_of_value(&value(7, b"room/1")), b"room/1");
    }

    proptest! {
        /// Index keys sort by (key, seq), and round-trip.
        #[test]
        fn index_order_is_key_then_seq(a in proptest::collection::vec(any::<u8>(), 0..8), b in proptest::collection::vec(any::<u8>(), 0..8), s in any::<u64>(), t in any::<u64>()) {
            let (ka, kb) = (index(3, &a, s), index(3, &b, t));
            prop_assert_eq!(ka.cmp(&kb), (a.as_slice(), s).cmp(&(b.as_slice(), t)));
            prop_assert_eq!(parse_index(&ka), Some((a.clone(), s)));
        }

        /// A key's index entries fall in its prefix's range exactly when the key starts
        /// with the prefix; its own key range holds exactly its entries from `from` on.
        #[test]
        fn ranges_select_exactly(key in proptest::collection::vec(any::<u8>(), 0..8), other in proptest::collection::vec(any::<u8>(), 0..8), cut in 0usize..8, s in any::<u64>(), from in any::<u64>()) {
            let prefix = &key[..cut.min(key.len())];
            let (ps, pe) = index_prefix_range(3, prefix);
            let ko = index(3, &other, s);
            prop_assert_eq!(ps <= ko && ko < pe, other.starts_with(prefix));
            let (ks, ke) = index_key_range(3, &key, from);
            let k = index(3, &key, s);
            prop_assert_eq!(ks <= k && k < ke, s >= from);
            if other != key {
                prop_assert!(!(ks <= ko && ko < ke));
            }
            let (vs, ve) = value_prefix_range(3, prefix);
            let v = value(3, &other);
            prop_assert_eq!(vs <= v && v < ve, other.starts_with(prefix));
        }
    }
}
