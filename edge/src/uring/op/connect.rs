//! Connect a socket (an edge→store link). The socket address is copied into a box the
//! ring keeps until the operation's completion.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use crate::uring::{Held, Ring, Token};

/// A socket address in the kernel's layout.
pub(crate) struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn new(addr: SocketAddr) -> Box<Self> {
        // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin);
                }
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6);
                }
                size_of::<libc::sockaddr_in6>()
            }
        };
        Box::new(Self {
            storage,
            len: len as libc::socklen_t,
        })
    }
}

impl Ring {
    /// Connect `fd` to `addr`.
    pub fn connect(&mut self, fd: RawFd, addr: SocketAddr, token: Token) -> io::Result<()> {
        let raw = RawAddr::new(addr);
        let e = opcode::Connect::new(
            types::Fd(fd),
            (&raw const raw.storage).cast::<libc::sockaddr>(),
            raw.len,
        )
        .build();
        // The box's heap memory does not move when it moves into the table.
        self.push_op(token, e, Held::Addr(raw))
    }
}
