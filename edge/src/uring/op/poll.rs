//! Multishot poll for readability: a completion each time the socket becomes
//! readable, with no buffer and less kernel state than an armed multishot receive.
//! In poll mode the worker answers each event with one receive.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use crate::uring::{Held, Ring, Token};

impl Ring {
    /// Arm a multishot readability poll on `fd`.
    pub fn poll_multi(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build();
        self.push_op(token, e, Held::Nothing)
    }
}
