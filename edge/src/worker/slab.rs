//! A generational slab: values live in numbered slots, each with a generation bumped
//! when the slot is reused, so that a [`Key`] (slot and generation) kept by a
//! completion, a timer entry or the hub finds its value only while it is the same one.
//! Used for connections; links are few and fixed, indexed by store, and keep their own
//! generation (a [`Gen`] per socket).

use crate::uring::Gen;

/// A value's place: slot and the slot's generation when the value was put there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The slot.
    pub slot: u32,
    /// Its generation.
    pub generation: Gen,
}

/// The slab.
#[derive(Debug)]
pub struct Slab<T> {
    values: Vec<Option<T>>,
    generations: Vec<Gen>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Slab<T> {
    /// A slab with room for `capacity` values reserved up front: address space only
    /// until slots are used, and the slab never moves (a doubling `Vec` would leave its
    /// old halves in the allocator, resident, for as long as the process lives).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            values: Vec::with_capacity(capacity),
            generations: Vec::with_capacity(capacity),
            free: Vec::new(),
            live: 0,
        }
    }

    /// Values in the slab.
    pub fn len(&self) -> usize {
        self.live
    }

    /// The key the next [`insert`](Self::insert) will use (its slot and the slot's next
    /// generation), so that a value can be built knowing its own key.
    pub fn vacant_key(&self) -> Key {
        let slot = self
            .free
            .last()
            .copied()
            .unwrap_or(self.values.len() as u32);
        let generation = self
            .generations
            .get(slot as usize)
            .copied()
            .unwrap_or_default()
            .next();
        Key { slot, generation }
    }

    /// Put `value` in the slot [`vacant_key`](Self::vacant_key) named.
    pub fn insert(&mut self, value: T) -> Key {
        let key = self.vacant_key();
        let i = key.slot as usize;
        if self.free.pop().is_none() {
            self.values.push(None);
            self.generations.push(Gen::default());
        }
        if let (Some(v), Some(g)) = (self.values.get_mut(i), self.generations.get_mut(i)) {
            *v = Some(value);
            *g = key.generation;
        }
        self.live += 1;
        key
    }

    /// The value at `key`, if it is still there.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let i = key.slot as usize;
        if self.generations.get(i) != Some(&key.generation) {
            return None;
        }
        self.values.get_mut(i)?.as_mut()
    }

    /// Take the value at `key` out; its slot is free for reuse (with a new generation).
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let i = key.slot as usize;
        if self.generations.get(i) != Some(&key.generation) {
            return None;
        }
        let value = self.values.get_mut(i)?.take()?;
        self.free.push(key.slot);
        self.live -= 1;
        Some(value)
    }

    /// Every value with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.values
            .iter()
            .zip(&self.generations)
            .enumerate()
            .filter_map(|(i, (v, g))| {
                v.as_ref().map(|v| {
                    (
                        Key {
                            slot: i as u32,
                            generation: *g,
                        },
                        v,
                    )
                })
            })
    }

    /// Every value with its key, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.values
            .iter_mut()
            .zip(&self.generations)
            .enumerate()
            .filter_map(|(i, (v, g))| {
                v.as_mut().map(|v| {
                    (
                        Key {
                            slot: i as u32,
                            generation: *g,
                        },
                        v,
                    )
                })
            })
    }

    /// Give back the room a burst of frees left in the free list.
    pub fn trim(&mut self) {
        crate::mem::trim_vec(&mut self.free);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_new_generation_and_old_keys_find_nothing() {
        let mut s = Slab::with_capacity(4);
        let a = s.insert("a");
        assert_eq!(s.vacant_key().slot, 1);
        assert_eq!(s.get_mut(a).map(|v| *v), Some("a"));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "removed once only");
        let next = s.vacant_key();
        let b = s.insert("b");
        assert_eq!(b, next);
        assert_eq!(b.slot, a.slot, "the slot is reused");
        assert_ne!(b.generation, a.generation);
        assert_eq!(s.get_mut(a), None, "a stale key finds nothing");
        assert_eq!(s.get_mut(b).map(|v| *v), Some("b"));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
            [(b, "b")]
        );
    }
}
