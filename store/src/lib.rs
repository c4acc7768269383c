//! The Ringline store node as a library (the `store` binary is a thin shell around it,
//! and tests and benchmarks use it directly).
//!
//! - [`partition`]: the public key → partition function.
//! - [`cluster`]: the cluster map (`cluster.toml`, or the embedded default).
//! - [`keys`]: every storage key; [`records`]: every stored value (`schemas/storage.fbs`).
//! - [`engine`]: the storage engine trait, RocksDB and an in-memory model.
//! - [`error`]: why a request fails, by who is at fault, and its link error code.
//! - [`changelog`]: owned partitions, their change logs, conditional writes, resume, trim;
//!   [`dedup`]: writes remembered by msg_id (idempotent retries).
//! - [`core`]: the core task (requests, batches, dispatch) and the committer thread;
//!   [`watchers`]: its tables of who watches which key or prefix.
//! - [`server`]: the edge-link server; [`admin`] and [`metrics`]: `/metrics`.
//! - [`config`]: file and flags resolved; [`generated`]: `flatc`'s code for the records.
#![deny(unsafe_code)]

pub mod admin;
pub mod changelog;
pub mod config;
pub mod core;
pub mod dedup;
pub mod engine;
pub mod error;
pub mod generated;
pub mod keys;
pub mod metrics;
pub mod presence;
pub mod records;
pub mod server;
pub mod watchers;

/// The partition function and the cluster map live in `wire`, shared with the edge.
pub use wire::{cluster, partition};
