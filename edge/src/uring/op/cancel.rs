//! Cancel an operation in flight (by its user data). The cancelled operation still
//! completes (with `-ECANCELED`), which is when its buffers come back.

use std::io;

use io_uring::{opcode, types};

use crate::uring::Ring;

impl Ring {
    /// Cancel every operation whose user data is `target`. The kernel finds it by
    /// hash; cancelling by descriptor instead walks every pending operation.
    pub fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target).all())
            .build()
            .user_data(user_data);
        self.push(e)
    }
}
