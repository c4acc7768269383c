//! Watcher tables: which links watch which keys and prefixes. One entry per (link,
//! watch id) however many clients sit behind the edge; a committed change is matched
//! once and yields each interested link with all of its matching watch ids. A prefix
//! watch may be bound to one partition (a resumed or hash-tagged one): it then matches
//! changes of that partition only.

use std::collections::HashMap;

/// One edge worker's connection.
pub type LinkId = u64;

/// The tables.
#[derive(Debug, Default)]
pub struct Watchers {
    exact: HashMap<Vec<u8>, Vec<(LinkId, u64)>>,
    /// (prefix, link, watch id, the one partition it covers or `None` for all).
    prefixes: Vec<(Vec<u8>, LinkId, u64, Option<u32>)>,
    /// (link, watch id) → (target bytes, is prefix), for removal.
    by_watch: HashMap<(LinkId, u64), (Vec<u8>, bool)>,
}

impl Watchers {
    /// Register watch `id` of `link` on a key or prefix (replacing an earlier watch
    /// with the same id). A prefix watch covers `partition` only, or every partition
    /// when `None`; a key lives in one partition, so a key watch needs no such bound.
    pub fn add(
        &mut self,
        link: LinkId,
        id: u64,
        target: &[u8],
        prefix: bool,
        partition: Option<u32>,
    ) {
        self.remove(link, id);
        if prefix {
            self.prefixes.push((target.to_vec(), link, id, partition));
        } else {
            self.exact
                .entry(target.to_vec())
                .or_default()
                .push((link, id));
        }
        self.by_watch.insert((link, id), (target.to_vec(), prefix));
    }

    /// Remove watch `id` of `link`; false if there was none.
    pub fn remove(&mut self, link: LinkId, id: u64) -> bool {
        let Some((target, prefix)) = self.by_watch.remove(&(link, id)) else {
            return false;
        };
        if prefix {
            self.prefixes
                .retain(|(p, l, w, _)| !(p == &target && *l == link && *w == id));
        } else if let Some(v) = self.exact.get_mut(&target) {
            v.retain(|&(l, w)| !(l == link && w == id));
            if v.is_empty() {
                self.exact.remove(&target);
            }
        }
        true
    }

    /// Remove every watch of `link` (it closed or was dropped).
    pub fn remove_link(&mut self, link: LinkId) {
        let ids: Vec<u64> = self
            .by_watch
            .keys()
            .filter(|(l, _)| *l == link)
            .map(|&(_, w)| w)
            .collect();
        for id in ids {
            self.remove(link, id);
        }
    }

    /// Every (link, watch ids) interested in a change of `key` in `partition`.
    pub fn matching(&self, key: &[u8], partition: u32) -> HashMap<LinkId, Vec<u64>> {
        let mut out: HashMap<LinkId, Vec<u64>> = HashMap::new();
        if self.by_watch.is_empty() {
            return out;
        }
        for &(link, id) in self.exact.get(key).into_iter().flatten() {
            out.entry(link).or_default().push(id);
        }
        for (p, link, id, only) in &self.prefixes {
            if key.starts_with(p) && only.is_none_or(|o| o == partition) {
                out.entry(*link).or_default().push(*id);
            }
        }
        out
    }

    /// Number of watches registered.
    pub fn len(&self) -> usize {
        self.by_watch.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.by_watch.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix_matching_and_removal() {
        let mut w = Watchers::default();
        w.add(1, 10, b"room/1", false, None);
        w.add(1, 11, b"room/", true, None);
        w.add(2, 20, b"room/1", false, None);
        w.add(3, 30, b"room/", true, Some(7));
        let m = w.matching(b"room/1", 3);
        assert_eq!(m[&1].len(), 2);
        assert_eq!(m[&2], [20]);
        assert!(
            !m.contains_key(&3),
            "a prefix watch bound to partition 7 ignores partition 3"
        );
        assert_eq!(w.matching(b"room/2", 7)[&3], [30]);
        w.remove_link(3);
        assert_eq!(
            w.matching(b"room/2", 3).keys().copied().collect::<Vec<_>>(),
            [1]
        );
        assert!(w.remove(1, 11));
        assert!(!w.remove(1, 11));
        w.remove_link(2);
        assert_eq!(
            w.matching(b"room/1", 3).into_iter().collect::<Vec<_>>(),
            [(1, vec![10])]
        );
        assert_eq!(w.len(), 1);
    }
}
