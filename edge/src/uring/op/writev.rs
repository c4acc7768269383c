//! Vectored send: every frame queued for a connection goes out in one submission
//! (`send` for one frame, `writev` for more).
//! The frames (owned or shared) and their iovec array move into the ring with the
//! operation and come back with its completion ([`Cqe::sent`](crate::uring::Cqe::sent)).

use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;
use io_uring::{opcode, types};

use crate::uring::{Held, Ring, Token};

/// Bytes queued for a connection: its own, or a frame shared with other connections.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes for this connection only.
    Owned(Vec<u8>),
    /// A frame encoded once for many connections.
    Shared(Bytes),
}

impl Chunk {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(b) => b,
        }
    }

    /// Drop the first `n` bytes (after a partial send).
    pub fn advance(&mut self, n: usize) {
        match self {
            Self::Owned(v) => {
                v.drain(..n.min(v.len()));
            }
            Self::Shared(b) => {
                let _ = b.split_to(n.min(b.len()));
            }
        }
    }
}

/// A send in flight: the chunks and the iovecs pointing into them.
pub(crate) struct InFlight {
    chunks: Vec<Chunk>,
    // Points into `chunks`; never read by Rust, only by the kernel.
    _iov: Vec<libc::iovec>,
}

impl InFlight {
    pub(crate) fn into_chunks(self) -> Vec<Chunk> {
        self.chunks
    }
}

/// Most iovecs in one send (the kernel's `UIO_MAXIOV` is 1024).
pub const MAX_IOV: usize = 1024;

impl Ring {
    /// Send `chunks` (at most [`MAX_IOV`]) on `fd` as one vectored write; a single
    /// chunk (the usual echo or delivery) goes as a plain `send`, which skips the
    /// kernel's iovec import and needs no iovec array here.
    pub fn writev(&mut self, fd: RawFd, chunks: Vec<Chunk>, token: Token) -> io::Result<()> {
        if let [one] = chunks.as_slice() {
            let s = one.as_slice();
            let e = opcode::Send::new(
                types::Fd(fd),
                s.as_ptr(),
                u32::try_from(s.len()).unwrap_or(u32::MAX),
            )
            .flags(libc::MSG_NOSIGNAL)
            .build();
            // As below: the chunk's heap memory stays put while `chunks` sits in the table.
            let held = InFlight {
                chunks,
                _iov: Vec::new(),
            };
            return self.push_op(token, e, Held::Send(held));
        }
        let iov: Vec<libc::iovec> = chunks
            .iter()
            .map(|c| {
                let s = c.as_slice();
                libc::iovec {
                    iov_base: s.as_ptr().cast_mut().cast(),
                    iov_len: s.len(),
                }
            })
            .collect();
        let e = opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32).build();
        // The heap memory of `chunks` and `iov` does not move when they move into the
        // table, so the pointers in the entry stay valid until the completion.
        self.push_op(token, e, Held::Send(InFlight { chunks, _iov: iov }))
    }
}
