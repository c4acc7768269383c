//! A message to another worker's ring (`IORING_OP_MSG_RING`, data form): the target
//! ring gets a completion whose user data and result are given here. No memory is
//! referenced; this ring's own completion is skipped unless the message failed. A
//! connection handed to a sibling travels this way as its descriptor number (the
//! workers share one descriptor table).

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

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

    /// Hand connection `fd` to the ring behind `ring_fd`, where it arrives as a
    /// completion of `token` whose result is the descriptor. Once queued, this worker
    /// no longer owns `fd`; if the target refuses the message, a completion of
    /// [`OpKind::HandBack`](crate::uring::OpKind::HandBack) carrying the descriptor
    /// (in its slot) and `sibling` (in its generation) comes back here, and the
    /// descriptor is this worker's again. `Err` gives `fd` back when nothing was queued.
    pub fn hand_over(
        &mut self,
        ring_fd: RawFd,
        fd: OwnedFd,
        token: Token,
        sibling: u32,
    ) -> Result<(), OwnedFd> {
        let raw = fd.as_raw_fd();
        let Ok(slot) = u32::try_from(raw) else {
            return Err(fd);
        };
        let own = Token::new(
            crate::uring::OpKind::HandBack,
            slot,
            crate::uring::token::Gen::from_bits(sibling),
        );
        let e = opcode::MsgRingData::new(types::Fd(ring_fd), raw, token.encode(), None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS);
        match self.push_op(own, e, Held::Nothing) {
            Ok(()) => {
                // The sibling owns it now (or this ring's refusal will hand it back).
                let _ = fd.into_raw_fd();
                Ok(())
            }
            Err(_) => Err(fd),
        }
    }

    /// This ring's descriptor, for siblings to message it.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
