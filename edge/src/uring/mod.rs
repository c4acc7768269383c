//! Everything `unsafe` in the edge lives under this module: the io_uring ring, the
//! provided-buffer ring, and the few system calls the standard library lacks. Each
//! operation is pushed by its own file under [`op`]; a buffer handed to the kernel
//! belongs to its operation until the completion comes back, and is kept here (not by
//! the caller) until then. Callers see safe functions only.
#![allow(unsafe_code)]

mod bufring;
pub mod net;
pub mod op;

use std::collections::HashMap;
use std::io;

use io_uring::{IoUring, cqueue, squeue};

pub use bufring::BufRing;
pub use op::writev::Chunk;

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy)]
pub struct Cqe {
    /// The operation's user data.
    pub user_data: u64,
    /// Its result (negative: `-errno`).
    pub result: i32,
    /// Its flags (buffer id, more).
    pub flags: u32,
}

impl Cqe {
    /// The provided buffer the kernel filled, if any.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// True when a multishot operation stays armed after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// A named set of ring setup flags.
type SetupTry = (&'static str, fn(&mut io_uring::Builder));

/// A ring for one worker thread.
pub struct Ring {
    ring: IoUring,
    /// Buffers of sends in flight, by user data: they go back with the completion.
    sends: HashMap<u64, op::writev::InFlight>,
    /// Addresses of connects in flight, by user data.
    addrs: HashMap<u64, Box<op::connect::RawAddr>>,
    /// The timespec of the tick timeout in flight.
    tick: Box<io_uring::types::Timespec>,
    /// Which setup flags the kernel took.
    pub flags: &'static str,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("flags", &self.flags)
            .field("sends_in_flight", &self.sends.len())
            .finish()
    }
}

impl Ring {
    /// A ring with `entries` submission slots, set up for one issuing thread:
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (completions run only when this thread waits for
    /// them), falling back to `COOP_TASKRUN`, then to no flags, on older kernels.
    pub fn new(entries: u32) -> io::Result<Self> {
        let tries: [SetupTry; 3] = [
            ("SINGLE_ISSUER|DEFER_TASKRUN", |b| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
            ("COOP_TASKRUN", |b| {
                b.setup_coop_taskrun();
            }),
            ("none", |_| {}),
        ];
        let mut last = None;
        for (name, set) in tries {
            let mut b = IoUring::builder();
            set(&mut b);
            b.setup_cqsize(entries.saturating_mul(4));
            match b.build(entries) {
                Ok(ring) => {
                    // Cap the kernel's helper threads for blocking work: this ring does
                    // socket I/O, which should never need them.
                    let mut max = [1u32, 1u32];
                    let _ = ring.submitter().register_iowq_max_workers(&mut max);
                    return Ok(Self {
                        ring,
                        sends: HashMap::new(),
                        addrs: HashMap::new(),
                        tick: Box::new(io_uring::types::Timespec::new()),
                        flags: name,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    /// Queue `entry`, submitting first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed here references only memory that outlives its
            // operation: buffers of sends are held in `self.sends`, the tick timespec
            // in `self.tick`, connect addresses in `self.addrs`, provided buffers in
            // the registered `BufRing`; other
            // operations reference no memory.
            match unsafe { self.ring.submission().push(&entry) } {
                Ok(()) => return Ok(()),
                Err(_) => {
                    self.ring.submit()?;
                }
            }
        }
    }

    /// Submit what is queued and wait until at least `want` completions are ready.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        match self.ring.submit_and_wait(want) {
            Ok(n) => Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Move every ready completion into `out`.
    pub fn completions(&mut self, out: &mut Vec<Cqe>) {
        for c in self.ring.completion() {
            out.push(Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            });
        }
    }

    /// The buffers of a send whose completion arrived (`user_data` of that send).
    pub fn send_done(&mut self, user_data: u64) -> Option<Vec<Chunk>> {
        self.sends
            .remove(&user_data)
            .map(op::writev::InFlight::into_chunks)
    }

    /// Give back the room a burst of sends left in the in-flight table.
    pub fn trim(&mut self) {
        crate::mem::trim_map(&mut self.sends);
    }

    /// Register a provided-buffer ring with this ring.
    pub fn register(&mut self, bufs: &BufRing) -> io::Result<()> {
        bufs.register(&self.ring)
    }
}
