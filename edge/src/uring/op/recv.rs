//! Multishot receive into the provided-buffer ring: each completion names the buffer
//! the kernel filled; the operation stays armed while `more` is set.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use crate::uring::bufring::GROUP;
use crate::uring::{Held, Ring, Token};

impl Ring {
    /// Arm a multishot receive on `fd`.
    pub fn recv_multi(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        let e = opcode::RecvMulti::new(types::Fd(fd), GROUP).build();
        self.push_op(token, e, Held::Nothing)
    }
}

impl Ring {
    /// One receive into a provided buffer (after a readiness event, in poll mode).
    pub fn recv_once(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        let e = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), 0)
            .buf_group(GROUP)
            .build()
            .flags(io_uring::squeue::Flags::BUFFER_SELECT);
        self.push_op(token, e, Held::Nothing)
    }
}
