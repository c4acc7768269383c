//! Cancel an operation in flight (by its user data). The cancelled operation still
//! completes (with `-ECANCELED`), which is when its buffers come back.

use std::io;

use io_uring::{opcode, types};

use crate::uring::Ring;

impl Ring {
    /// Cancel every operation on descriptor `fd` with one submission.
    pub fn cancel_fd(&mut self, fd: std::os::fd::RawFd, user_data: u64) -> io::Result<()> {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(user_data);
        self.push(e)
    }

    /// Cancel every operation whose user data is `target`.
    pub fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target).all())
            .build()
            .user_data(user_data);
        self.push(e)
    }
}
