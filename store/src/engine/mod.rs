//! The storage engine behind a small trait: atomic write batches (optionally
//! durable), point reads, bounded range scans and the last key of a range, on the
//! latest state or on one consistent snapshot. [`rocks::RocksEngine`] is the real
//! one (RocksDB is imported there and nowhere else); [`memory::MemoryEngine`] is a
//! model with the same semantics for tests.

pub mod memory;
pub mod rocks;

/// A failure of the storage engine itself (I/O, a lock poisoned): the store's fault,
/// never the client's ([`crate::error::Failure::Engine`]); the request fails with
/// `internal` and the write is not acknowledged. A record the engine returns intact
/// but that does not decode is [`crate::error::Corrupt`] instead.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage engine: {0}")]
pub struct EngineError(pub String);

/// One operation of a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

impl BatchOp {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put(k, _) | Self::Delete(k) => k,
        }
    }
}

/// Operations applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The operations.
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Add a put.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(key, value));
    }

    /// Add a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(key));
    }

    /// Order the operations by key, keeping the order of operations on the same key
    /// (a stable sort), which leaves the batch's effect unchanged. A memtable inserts
    /// a sorted run far faster than scattered keys: each insert starts its search
    /// where the previous one ended.
    pub fn sort(&mut self) {
        self.ops.sort_by(|a, b| a.key().cmp(b.key()));
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key/value pair returned by a scan.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Reads. An [`Engine`] reads its latest committed state; the reader passed by
/// [`Engine::snapshot_read`] reads one fixed point in time.
pub trait Read {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Up to `limit` pairs with `start <= key < end`, ascending.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError>;

    /// The last pair with `start <= key < end`.
    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError>;
}

/// What the store needs from a storage engine.
pub trait Engine: Read + Send + Sync + 'static {
    /// Apply `batch` atomically. With `sync`, the batch is durable (fsynced) when this
    /// returns; without it, a crash may lose the most recent batches but never tears one.
    /// May be called from another thread than the reads: a batch becomes visible to
    /// reads all at once.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError>;

    /// Run `f` with a reader that sees one consistent state: every batch committed
    /// before the call, and none committed during it.
    fn snapshot_read<R>(&self, f: impl FnOnce(&dyn Read) -> R) -> R;
}
