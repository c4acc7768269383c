//! Splitting what goes to a link into frames: at most [`PAGE_ENTRIES`] entries and about
//! [`PAGE_BYTES`] each, far below the link's 16 MiB frame limit whatever the values
//! (one value is at most [`crate::changelog::MAX_VALUE_BYTES`]). Snapshots, resumed
//! changes and dispatched changes all go through here, so no frame is ever refused by
//! the encoder for its size.

/// Most entries in one frame.
pub const PAGE_ENTRIES: usize = 512;
/// Bytes of keys and values after which a frame is closed.
pub const PAGE_BYTES: usize = 1 << 20;
/// What an entry costs besides its key and value (positions, versions, framing).
const ENTRY_OVERHEAD: usize = 48;

/// `items` cut into consecutive pages; an empty input gives no page.
pub fn pages<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let n = size(item) + ENTRY_OVERHEAD;
        if i > start && (i - start >= PAGE_ENTRIES || bytes + n > PAGE_BYTES) {
            out.extend(items.get(start..i));
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.extend(items.get(start..));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_split_by_count_and_by_bytes() {
        let small = vec![1usize; 1500];
        let p = pages(&small, |&s| s);
        assert_eq!(
            p.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [512, 512, 476]
        );
        let big = vec![PAGE_BYTES / 2; 5];
        let p = pages(&big, |&s| s);
        assert_eq!(
            p.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [1, 1, 1, 1, 1]
        );
        let huge = vec![3 * PAGE_BYTES];
        assert_eq!(
            pages(&huge, |&s| s).len(),
            1,
            "an oversized entry goes alone"
        );
        assert!(pages::<usize>(&[], |&s| s).is_empty());
        let mixed = [10, 10, PAGE_BYTES, 10];
        let p = pages(&mixed, |&s| s);
        assert_eq!(p.iter().map(|p| p.len()).collect::<Vec<_>>(), [2, 1, 1]);
    }
}
