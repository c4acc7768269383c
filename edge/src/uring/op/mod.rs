//! One file per io_uring operation the edge uses. Each pushes its entry on a
//! [`Ring`](super::Ring); any memory an entry points at is owned by the ring until the
//! operation's completion arrives.

pub mod accept;
pub mod cancel;
pub mod connect;
pub mod msg_ring;
pub mod poll;
pub mod recv;
pub mod timeout;
pub mod writev;
