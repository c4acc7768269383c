//! The worker's tick: a timeout that completes after a fixed interval. Its timespec is
//! owned by the ring while it is in flight.

use std::io;
use std::time::Duration;

use io_uring::{opcode, types};

use crate::uring::{Held, Ring, Token};

impl Ring {
    /// Complete `token` after `after` (one tick of the worker's timer wheel). Refused
    /// while a tick is in flight: its timespec is the one this would overwrite.
    pub fn tick(&mut self, after: Duration, token: Token) -> io::Result<()> {
        if self.in_flight(token.slot, token.kind) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a tick is in flight",
            ));
        }
        *self.tick = types::Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos());
        let e = opcode::Timeout::new(&*self.tick as *const types::Timespec).build();
        self.push_op(token, e, Held::Nothing)
    }
}
