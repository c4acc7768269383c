//! A message to another worker's ring (`IORING_OP_MSG_RING`, data form): the target
//! ring gets a completion whose user data and result are given here. No memory is
//! referenced; this ring's own completion is skipped unless the message failed.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, squeue, types};

use crate::uring::{Held, Ring, Token};

impl Ring {
    /// Post a completion of `token` with result `result` into the ring behind
    /// `ring_fd`. A failure comes back to this ring as a completion of `own`.
    pub fn msg_ring(
        &mut self,
        ring_fd: RawFd,
        result: i32,
        token: Token,
        own: Token,
    ) -> io::Result<()> {
        let e = opcode::MsgRingData::new(types::Fd(ring_fd), result, token.encode(), None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS);
        self.push_op(own, e, Held::Nothing)
    }

    /// This ring's descriptor, for siblings to message it.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
