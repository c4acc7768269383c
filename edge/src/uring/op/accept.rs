//! Multishot accept: one submission yields a completion per accepted connection
//! (`result` is the new descriptor) until it fails or is cancelled.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use crate::uring::{Held, Ring, Token};

impl Ring {
    /// Arm a multishot accept on `listener`; new sockets are non-blocking and close-on-exec.
    pub fn accept_multi(&mut self, listener: RawFd, token: Token) -> io::Result<()> {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build();
        self.push_op(token, e, Held::Nothing)
    }
}
