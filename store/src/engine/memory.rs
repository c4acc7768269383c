//! An in-memory engine: a `BTreeMap` under a lock. Same semantics as RocksDB for
//! everything the store uses (atomic ordered batches, ordered scans); used as the model
//! in tests and property tests. `sync` has no meaning here.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{BatchOp, Engine, EngineError, Pair, Read, WriteBatch};

/// The in-memory engine.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> EngineError {
    EngineError("memory engine lock poisoned".into())
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn map_scan(map: &Map, start: &[u8], end: &[u8], limit: usize) -> Vec<Pair> {
    if start >= end {
        return Vec::new();
    }
    map.range::<[u8], _>((
        std::ops::Bound::Included(start),
        std::ops::Bound::Excluded(end),
    ))
    .take(limit)
    .map(|(k, v)| (k.clone(), v.clone()))
    .collect()
}

fn map_last(map: &Map, start: &[u8], end: &[u8]) -> Option<Pair> {
    if start >= end {
        return None;
    }
    map.range::<[u8], _>((
        std::ops::Bound::Included(start),
        std::ops::Bound::Excluded(end),
    ))
    .next_back()
    .map(|(k, v)| (k.clone(), v.clone()))
}

/// Reads of a map held under the read lock: no batch can land in between.
struct Locked<'a>(&'a Map);

impl Read for Locked<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError> {
        Ok(map_scan(self.0, start, end, limit))
    }

    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError> {
        Ok(map_last(self.0, start, end))
    }
}

impl Read for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.map.read().map_err(|_| poisoned())?.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError> {
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map_scan(&map, start, end, limit))
    }

    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError> {
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map_last(&map, start, end))
    }
}

impl Engine for MemoryEngine {
    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<(), EngineError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for op in batch.ops {
            match op {
                BatchOp::Put(k, v) => {
                    map.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn snapshot_read<R>(&self, f: impl FnOnce(&dyn Read) -> R) -> R {
        match self.map.read() {
            Ok(map) => f(&Locked(&map)),
            Err(poisoned) => f(&Locked(&poisoned.into_inner())),
        }
    }
}
