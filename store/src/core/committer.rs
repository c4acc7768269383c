//! The committer thread: the only place the core's write batches meet the engine. It
//! takes one batch at a time, commits it (fsync included when `sync`) and reports back
//! on the core's channel. While it waits on the disk, the core keeps answering reads,
//! starting watches and preparing the next batch; a slow fsync delays only the writes
//! that wait for it.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use crate::engine::{Engine, EngineError, WriteBatch};
use crate::metrics::Metrics;

use super::{CoreMsg, CoreTx};

/// One batch to commit.
pub(super) struct Job {
    pub batch: WriteBatch,
    pub sync: bool,
}

/// Start the committer; outcomes go to `core`. It stops when the job sender is dropped.
pub(super) fn spawn<E: Engine>(
    engine: Arc<E>,
    metrics: Arc<Metrics>,
    core: CoreTx,
) -> std::io::Result<(Sender<Job>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("store-commit".into())
        .spawn(move || run(&*engine, &metrics, &rx, &core))?;
    Ok((tx, handle))
}

fn run<E: Engine>(engine: &E, metrics: &Metrics, jobs: &Receiver<Job>, reply: &CoreTx) {
    while let Ok(Job { batch, sync }) = jobs.recv() {
        let t = Instant::now();
        let r = engine.write(batch, sync);
        metrics.commit_seconds.observe(t.elapsed().as_secs_f64());
        if r.is_ok() {
            Metrics::add(&metrics.commits, 1);
            if sync {
                Metrics::add(&metrics.fsyncs, 1);
            }
        }
        let _ = reply.send(CoreMsg::Committed(r));
    }
}

/// The outcome of a job, as the core receives it.
pub type Outcome = Result<(), EngineError>;
