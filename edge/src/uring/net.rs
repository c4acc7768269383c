//! Sockets and process settings: `SO_REUSEPORT` listeners (one per worker), adopting
//! descriptors returned by completions, pinning a thread to a core, the open-file
//! limit, and waiting for SIGTERM/SIGINT.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use rustix::net::{AddressFamily, SocketType, bind, listen, socket, sockopt};

/// A listening socket for one worker; every worker binds the same address. The
/// connections it accepts inherit `TCP_NODELAY` (frames are already batched per
/// connection) and [`send_lowat`]'s `TCP_NOTSENT_LOWAT` from it, so that accepting one
/// costs no `setsockopt` of its own.
pub fn listener(addr: SocketAddr, backlog: i32, lowat: u32) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = socket(family, SocketType::STREAM, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    sockopt::set_tcp_nodelay(&fd, true)?;
    send_lowat(&fd, lowat);
    bind(&fd, &addr)?;
    listen(&fd, backlog)?;
    Ok(fd)
}

/// The address a socket is bound to.
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let a = rustix::net::getsockname(fd)?;
    SocketAddr::try_from(a).map_err(|_| io::Error::other("not an inet address"))
}

/// The peer's address of a connected socket (`None` if it has none, or is not inet).
pub fn peer_ip(fd: &OwnedFd) -> Option<std::net::IpAddr> {
    let a = rustix::net::getpeername(fd).ok()??;
    SocketAddr::try_from(a).ok().map(|a| a.ip().to_canonical())
}

/// Take ownership of a descriptor an accept completion returned.
pub fn adopt(raw: i32) -> Option<OwnedFd> {
    // SAFETY: callers pass a non-negative accept result (a new descriptor), a
    // descriptor a sibling worker handed over and gave up (`Ring::hand_over`), or one
    // whose handover came back refused: in every case one that nothing else owns.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Set `TCP_NOTSENT_LOWAT` to `bytes` (0: leave the kernel's default, no limit): the
/// kernel then takes no more for the socket while that much is written and not yet
/// sent, so the backlog of a client that reads slowly stays in the connection's own
/// queue (bounded by `max_outbound`, conflated for `latest` subscriptions) instead of
/// in socket buffers the kernel grows to megabytes.
pub fn send_lowat(fd: &OwnedFd, bytes: u32) {
    if bytes == 0 {
        return;
    }
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket; the option value is a c_int that lives across
    // the call, and its size is passed with it.
    let _ = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// A new non-blocking TCP socket for a link to `addr` (connected by the ring).
pub fn link_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_tcp_nodelay(&fd, true)?;
    Ok(fd)
}

/// Shut both directions down: operations still armed on the socket complete.
pub fn shutdown_both(fd: &OwnedFd) {
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

/// Half-close: no more bytes will be sent (the peer reads EOF after what is queued).
pub fn shutdown_write(fd: &OwnedFd) {
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
}

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// Raise the open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        setrlimit(Resource::Nofile, l)?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// The open-file limit now (soft), `u64::MAX` when unlimited.
pub fn nofile() -> u64 {
    use rustix::process::{Resource, getrlimit};
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Block SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads it spawns later),
/// so that [`wait_for_stop`] receives them.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_set();
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset adds valid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Wait for SIGTERM or SIGINT (blocked beforehand with [`block_stop_signals`]),
/// calling `on_hangup` at each SIGHUP meanwhile.
pub fn wait_for_stop(mut on_hangup: impl FnMut()) -> &'static str {
    let set = stop_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out pointer.
        let r = unsafe { libc::sigwait(&set, &mut sig) };
        match (r, sig) {
            (0, libc::SIGTERM) => return "SIGTERM",
            (0, libc::SIGINT) => return "SIGINT",
            (0, libc::SIGHUP) => on_hangup(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// `TCP_NOTSENT_LOWAT` of socket `fd`.
    fn lowat_of(fd: &OwnedFd) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket; `value` and `len` live across the call and
        // `len` holds `value`'s size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt");
        value
    }

    #[test]
    fn accepted_connections_inherit_the_listeners_socket_options() {
        for lowat in [64 << 10, 4096] {
            let l = listener(SocketAddr::from(([127, 0, 0, 1], 0)), 16, lowat).unwrap();
            let _client = std::net::TcpStream::connect(local_addr(&l).unwrap()).unwrap();
            let accepted = rustix::net::accept(&l).unwrap();
            assert!(sockopt::tcp_nodelay(&accepted).unwrap());
            assert_eq!(lowat_of(&accepted), lowat as libc::c_int);
        }
    }
}
