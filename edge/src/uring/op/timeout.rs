//! A timeout that completes after a fixed interval (the worker's one-second tick, and
//! the link timer that runs while a store link is down). Its timespec is held by the
//! ring under the operation's token until the completion comes back.

use std::io;
use std::time::Duration;

use io_uring::{opcode, types};

use crate::uring::{Held, Ring, Token};

impl Ring {
    /// Complete `token` after `after`. Refused while a timeout of the same token's
    /// kind and slot is in flight.
    pub fn tick(&mut self, after: Duration, token: Token) -> io::Result<()> {
        let ts = Box::new(
            types::Timespec::new()
                .sec(after.as_secs())
                .nsec(after.subsec_nanos()),
        );
        let e = opcode::Timeout::new(&raw const *ts).build();
        self.push_op(token, e, Held::Time(ts))
    }
}
