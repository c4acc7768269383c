//! An in-memory engine: a `BTreeMap` under a lock. Same semantics as RocksDB for
//! everything the store uses (atomic ordered batches, ordered scans); used as the model
//! in tests and property tests. `sync` has no meaning here.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{BatchOp, Engine, EngineError, Pair, WriteBatch};

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

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.map.read().map_err(|_| poisoned())?.get(key).cloned())
    }

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

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError> {
        if start >= end {
            return Ok(None);
        }
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }
}
