//! Everything `unsafe` in the edge lives under this module: the io_uring ring, the
//! provided-buffer ring, and the few system calls the standard library lacks. Each
//! operation is pushed by its own file under [`op`] with a [`Token`] as its user data.
//! The ring keeps a table of the tokens in flight: memory handed to the kernel (a
//! send's frames, a connect's address, a timeout's timespec) is held there, under the operation's token,
//! until the completion that ends the operation comes back, and it comes back to the
//! caller inside that completion. A token already in flight is refused, so no two
//! operations can share one entry of the table. Callers see safe functions only.
#![allow(unsafe_code)]

mod bufring;
pub mod net;
pub mod op;
pub mod token;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;

use io_uring::{IoUring, cqueue, squeue};

pub use bufring::BufRing;
pub use op::writev::Chunk;
pub use token::{Gen, OpKind, Token};

/// One completion, copied out of the completion queue.
#[derive(Debug)]
pub struct Cqe {
    /// The operation's token (`None`: user data no token makes, ignored).
    pub token: Option<Token>,
    /// Its result (negative: `-errno`).
    pub result: i32,
    /// Its flags (buffer id, more).
    pub flags: u32,
    /// A finished send's frames, back from the kernel (what it did not take is for the
    /// caller to queue again).
    pub sent: Vec<Chunk>,
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

    /// True when the kernel keeps using the completion's buffer (incremental
    /// consumption): the buffer is not to be handed back yet.
    pub fn buffer_more(&self) -> bool {
        cqueue::buffer_more(self.flags)
    }
}

/// A named set of ring setup flags.
type SetupTry = (&'static str, fn(&mut io_uring::Builder));

/// What an operation in flight holds for the kernel.
enum Held {
    /// Nothing (receives use the provided-buffer ring, polls and accepts no memory).
    Nothing,
    /// A send's frames and iovecs.
    Send(op::writev::InFlight),
    /// A connect's address.
    Addr(#[allow(dead_code)] Box<op::connect::RawAddr>),
    /// A timeout's timespec.
    Time(#[allow(dead_code)] Box<io_uring::types::Timespec>),
}

/// Tokens are spread over their low bits already (slot) and high bits (kind,
/// generation): one multiply mixes them enough for the table.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ x >> 32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Memory held for operations in flight, by encoded token.
type HeldTable = HashMap<u64, Held, BuildHasherDefault<TokenHasher>>;

/// The operation `token` ended: its bit in `inflight` clears and what it held in
/// `held` comes back.
fn end(inflight: &mut [u8], held: &mut HeldTable, token: Token) -> Option<Held> {
    if let (Some(bit), Some(bits)) = (token.kind.bit(), inflight.get_mut(token.slot as usize)) {
        *bits &= !bit;
    }
    held.remove(&token.encode())
}

/// A ring for one worker thread.
pub struct Ring {
    ring: IoUring,
    /// Which kinds of operation are in flight, a bit per kind ([`OpKind::bit`]) for
    /// each slot: one byte per slot, so that the multishot receive armed on every
    /// idle connection costs no table entry.
    inflight: Vec<u8>,
    /// The memory of sends, connects and timeouts in flight, by token: it goes back
    /// with the completion that ends the operation.
    held: HeldTable,
    /// Which setup flags the kernel took.
    pub flags: &'static str,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("flags", &self.flags)
            .field("held", &self.held.len())
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
                        inflight: Vec::new(),
                        held: HeldTable::default(),
                        flags: name,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    /// Submit `entry` as the operation `token`, holding `held` for it until the
    /// completion that ends it. An operation of the same kind on the same slot still
    /// in flight (of any generation) makes this one refused: nothing is submitted and
    /// `held` is dropped, so memory the kernel may be using is never replaced.
    fn push_op(&mut self, token: Token, entry: squeue::Entry, held: Held) -> io::Result<()> {
        let key = token.encode();
        let entry = entry.user_data(key);
        let Some(bit) = token.kind.bit() else {
            return self.push(entry);
        };
        let i = token.slot as usize;
        if self.inflight.len() <= i {
            self.inflight.resize(i + 1, 0);
        }
        let Some(bits) = self.inflight.get_mut(i) else {
            return Err(io::Error::other("no in-flight entry"));
        };
        if *bits & bit != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "an operation of this kind is in flight on this slot",
            ));
        }
        *bits |= bit;
        if !matches!(held, Held::Nothing) {
            self.held.insert(key, held);
        }
        let pushed = self.push(entry);
        if pushed.is_err() {
            // Not submitted: the kernel never saw the memory.
            self.end(token);
        }
        pushed
    }

    /// The operation `token` ended: its bit clears and what it held comes back.
    fn end(&mut self, token: Token) -> Option<Held> {
        end(&mut self.inflight, &mut self.held, token)
    }

    /// Whether an operation of `kind` is in flight on `slot`.
    pub fn in_flight(&self, slot: u32, kind: OpKind) -> bool {
        kind.bit().is_some_and(|bit| {
            self.inflight
                .get(slot as usize)
                .is_some_and(|b| b & bit != 0)
        })
    }

    /// Queue `entry`, submitting first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed here (through `push_op`) references only memory
            // that outlives its operation: a send's frames and iovecs, a connect's
            // address and a timeout's timespec are held in `self.held` under the
            // operation's token until the completion that ends it (a tracked token in
            // flight is never submitted twice, so no entry is replaced early); provided
            // buffers live in the registered `BufRing`; other operations (receives,
            // polls, accepts, cancellations, messages to other rings) reference no
            // memory.
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

    /// Move every ready completion into `out`. A completion without `more` ends its
    /// operation: its token leaves the in-flight table and what the operation held
    /// comes back with it.
    pub fn completions(&mut self, out: &mut Vec<Cqe>) {
        for c in self.ring.completion() {
            let (user_data, flags) = (c.user_data(), c.flags());
            let token = Token::decode(user_data);
            let mut sent = Vec::new();
            if let Some(t) = token
                && !cqueue::more(flags)
                && let Some(Held::Send(s)) = end(&mut self.inflight, &mut self.held, t)
            {
                sent = s.into_chunks();
            }
            out.push(Cqe {
                token,
                result: c.result(),
                flags,
                sent,
            });
        }
    }

    /// Give back the room a burst of sends left in the in-flight table.
    pub fn trim(&mut self) {
        crate::mem::trim_map(&mut self.held);
    }

    /// Register a provided-buffer ring with this ring.
    pub fn register(&mut self, bufs: &BufRing) -> io::Result<()> {
        bufs.register(&self.ring)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_token_in_flight_is_refused_until_its_completion_ends_it() {
        let mut ring = Ring::new(8).expect("ring");
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let t = Token::new(OpKind::Recv, 3, Gen::default());
        ring.recv_multi(a.as_raw_fd(), t).expect("first receive");
        let again = ring.recv_multi(a.as_raw_fd(), t.with_kind(OpKind::Recv));
        assert_eq!(
            again.map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists),
            "a second receive on the slot while the first is in flight"
        );
        let later = Token::new(OpKind::Recv, 3, Gen::default().next());
        assert!(
            ring.recv_multi(a.as_raw_fd(), later).is_err(),
            "refused for any generation of the slot"
        );
        assert!(ring.in_flight(3, OpKind::Recv));
        // Other kinds and slots are free; cancellations are never refused.
        ring.recv_multi(a.as_raw_fd(), Token::new(OpKind::Recv, 4, Gen::default()))
            .expect("another slot");
        ring.cancel(t).expect("cancel");
        ring.cancel(t).expect("a second cancel");

        // A timeout ends with its completion; then the same token may go again.
        let tick = Token::new(OpKind::Tick, 1, Gen::default());
        ring.tick(Duration::from_millis(1), tick).expect("tick");
        assert!(
            ring.tick(Duration::from_millis(1), tick).is_err(),
            "tick twice"
        );
        let mut cqes = Vec::new();
        while !cqes.iter().any(|c: &Cqe| c.token == Some(tick)) {
            ring.submit_and_wait(1).expect("wait");
            ring.completions(&mut cqes);
        }
        assert!(!ring.in_flight(1, OpKind::Tick));
        ring.tick(Duration::from_millis(1), tick)
            .expect("tick again after its completion");
    }
}
