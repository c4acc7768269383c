//! The RocksDB engine: the only module that imports `rocksdb`. One database per store;
//! batches map to RocksDB write batches (atomic, WAL-logged), `sync` to a WAL fsync,
//! and a snapshot read to a RocksDB snapshot.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, DB, DBCompressionType, DBIteratorWithThreadMode, Direction, IteratorMode,
    Options, ReadOptions, SnapshotWithThreadMode,
};

use super::{BatchOp, Engine, EngineError, Pair, Read, WriteBatch};

/// A store's RocksDB database.
#[derive(Debug)]
pub struct RocksEngine {
    db: DB,
}

fn err(e: rocksdb::Error) -> EngineError {
    EngineError(e.into_string())
}

fn bounded(start: &[u8], end: &[u8]) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(start.to_vec());
    ro.set_iterate_upper_bound(end.to_vec());
    ro
}

impl RocksEngine {
    /// Open (creating if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // Concurrent writers share one WAL write and fsync.
        opts.set_enable_pipelined_write(true);
        // A write to a key whose chain heads are not cached reads its record; bloom
        // filters answer "no such key" without touching data blocks, and keep filter
        // and index blocks of the top levels in the block cache.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, path).map_err(err)?;
        Ok(Self { db })
    }

    /// Write `batch` as RocksDB would for a raw client: the baseline the store's own
    /// write path is compared against in benchmarks.
    pub fn raw_write(&self, batch: rocksdb::WriteBatch, sync: bool) -> Result<(), EngineError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(err)
    }
}

/// Up to `limit` pairs of a bounded forward iterator.
fn take(iter: DBIteratorWithThreadMode<'_, DB>, limit: usize) -> Result<Vec<Pair>, EngineError> {
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(err)?;
        out.push((k.into_vec(), v.into_vec()));
    }
    Ok(out)
}

/// The first pair of an iterator.
fn first(mut iter: DBIteratorWithThreadMode<'_, DB>) -> Result<Option<Pair>, EngineError> {
    match iter.next() {
        Some(item) => {
            let (k, v) = item.map_err(err)?;
            Ok(Some((k.into_vec(), v.into_vec())))
        }
        None => Ok(None),
    }
}

impl Read for RocksEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db.get(key).map_err(err)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        take(self.db.iterator_opt(mode, bounded(start, end)), limit)
    }

    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError> {
        if start >= end {
            return Ok(None);
        }
        first(self.db.iterator_opt(IteratorMode::End, bounded(start, end)))
    }
}

/// Reads at one RocksDB snapshot.
struct Snap<'a>(SnapshotWithThreadMode<'a, DB>);

impl Read for Snap<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.0.get(key).map_err(err)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        take(self.0.iterator_opt(mode, bounded(start, end)), limit)
    }

    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError> {
        if start >= end {
            return Ok(None);
        }
        first(self.0.iterator_opt(IteratorMode::End, bounded(start, end)))
    }
}

impl Engine for RocksEngine {
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Put(k, v) => wb.put(k, v),
                BatchOp::Delete(k) => wb.delete(k),
            }
        }
        self.raw_write(wb, sync)
    }

    fn snapshot_read<R>(&self, f: impl FnOnce(&dyn Read) -> R) -> R {
        f(&Snap(self.db.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryEngine;
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(Vec<(bool, u8, u8)>),
        Scan(u8, u8, usize),
        Last(u8, u8),
        Get(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec((any::<bool>(), 0u8..16, any::<u8>()), 0..5)
                .prop_map(Op::Write),
            (0u8..17, 0u8..17, 0usize..6).prop_map(|(a, b, l)| Op::Scan(a, b, l)),
            (0u8..17, 0u8..17).prop_map(|(a, b)| Op::Last(a, b)),
            (0u8..16).prop_map(Op::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// RocksDB and the in-memory model agree on any sequence of operations.
        #[test]
        fn rocks_matches_memory_model(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let rocks = RocksEngine::open(dir.path()).unwrap();
            let mem = MemoryEngine::new();
            for op in ops {
                match op {
                    Op::Write(items) => {
                        let mut b = WriteBatch::default();
                        for (put, k, v) in items {
                            if put { b.put(vec![k], vec![v]) } else { b.delete(vec![k]) }
                        }
                        rocks.write(b.clone(), false).unwrap();
                        mem.write(b, false).unwrap();
                    }
                    Op::Scan(a, b, l) => prop_assert_eq!(rocks.scan(&[a], &[b], l).unwrap(), mem.scan(&[a], &[b], l).unwrap()),
                    Op::Last(a, b) => prop_assert_eq!(rocks.last(&[a], &[b]).unwrap(), mem.last(&[a], &[b]).unwrap()),
                    Op::Get(k) => prop_assert_eq!(rocks.get(&[k]).unwrap(), mem.get(&[k]).unwrap()),
                }
            }
        }
    }

    #[test]
    fn synced_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = RocksEngine::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put(b"a".to_vec(), b"1".to_vec());
            db.write(b, true).unwrap();
        }
        let db = RocksEngine::open(dir.path()).unwrap();
        assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
    }
}
