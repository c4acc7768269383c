//! The worker's tick: a timeout that completes after a fixed interval. Its timespec is
//! owned by the ring while it is in flight.

use std::io;
use std::time::Duration;

use io_uring::{opcode, types};

use crate::uring::Ring;

impl Ring {
    /// Complete `user_data` after `after` (one tick of the worker's timer wheel).
    pub fn tick(&mut self, after: Duration, user_data: u64) -> io::Result<()> {
        *self.tick = types::Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos());
        let e = opcode::Timeout::new(&*self.tick as *const types::Timespec)
            .build()
            .user_data(user_data);
        self.push(e)
    }
}
