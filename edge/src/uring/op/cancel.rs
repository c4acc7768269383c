//! Cancel an operation in flight (by its user data). The cancelled operation still
//! completes (with `-ECANCELED`), which is when its buffers come back.

use std::io;

use io_uring::{opcode, types};

use crate::uring::{Held, OpKind, Ring, Token};

impl Ring {
    /// Cancel every operation whose token is `target`. The kernel finds it by hash;
    /// cancelling by descriptor instead walks every pending operation. The
    /// cancellation's own completion (kind [`OpKind::Cancel`]) carries nothing.
    pub fn cancel(&mut self, target: Token) -> io::Result<()> {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target.encode()).all())
            .build();
        self.push_op(target.with_kind(OpKind::Cancel), e, Held::Nothing)
    }
}
