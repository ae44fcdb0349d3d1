//! Socket FFI: non-blocking, close-on-exec TCP sockets for IPv4 and IPv6.
//!
//! New descriptors come out as `OwnedFd`s (closed on drop); a socket the stack holds keeps its
//! descriptor in a [`SocketFd`]. The calls take the descriptor as a `RawFd`: the FFI boundary.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use super::syscall;

/// A `sockaddr_storage` plus its length, built from a `SocketAddr`.
fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid value (family AF_UNSPEC).
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
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
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
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
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Reads a `SocketAddr` out of a filled `sockaddr_storage`.
fn from_raw(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; it is large and aligned.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6; it is large and aligned.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
}

fn domain(addr: &SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// The descriptor of a socket the stack holds: owned, closed exactly once, by
/// [`SocketFd::close`] or on drop.
///
/// The stack releases a socket through a shared reference (`SocketBackend::close`, while other
/// handles may still hold the socket), so the descriptor sits in an atomic slot instead of a
/// plain `OwnedFd`: `close` takes it out as the `OwnedFd` it came in as and drops it, leaving
/// -1, on which any later call fails with `EBADF`. Four bytes, like the `OwnedFd`.
#[derive(Debug)]
pub(crate) struct SocketFd(AtomicI32);

impl SocketFd {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        SocketFd(AtomicI32::new(fd.into_raw_fd()))
    }

    /// The descriptor for a call (-1 once closed).
    pub(crate) fn raw(&self) -> RawFd {
        // Relaxed: the stack makes its last call on a socket before it closes it, and orders
        // the two with its own fdMutex (`Fd::release`).
        self.0.load(Ordering::Relaxed)
    }

    /// Closes the descriptor; a second call does nothing.
    pub(crate) fn close(&self) {
        // Relaxed: the swap alone makes the hand-out unique; see `raw`.
        let fd = self.0.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: a non-negative value in the slot is the descriptor `new` took ownership
            // of, and the swap above hands it out exactly once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

impl Drop for SocketFd {
    fn drop(&mut self) {
        self.close();
    }
}

/// Wraps a descriptor a syscall just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` is a new descriptor (from `socket` or `accept4`) that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new non-blocking, close-on-exec TCP socket for `addr`'s family.
pub(crate) fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    syscall!(socket(
        domain(addr),
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))
    .map(owned)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&value as *const libc::c_int).cast(),
        size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(drop)
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to a live c_int and its size; the kernel writes at most `len`.
    syscall!(getsockopt(
        fd,
        level,
        name,
        (&mut value as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(value)
}

pub(crate) fn set_reuseaddr(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
}

pub(crate) fn set_nodelay(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as libc::c_int)
}

pub(crate) fn nodelay(fd: RawFd) -> io::Result<bool> {
    getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).map(|v| v != 0)
}

/// The pending error of a socket (`SO_ERROR`), cleared by reading it.
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let e = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
}

/// `SO_LINGER {on, 0}`: the next close sends RST.
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a pointer to a live `linger` and its exact size.
    syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        (&linger as *const libc::linger).cast(),
        size_of::<libc::linger>() as libc::socklen_t
    ))
    .map(drop)
}

pub(crate) fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_raw(addr);
    // SAFETY: `storage` holds a valid sockaddr of length `len`.
    syscall!(bind(
        fd,
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))
    .map(drop)
}

pub(crate) fn listen(fd: RawFd, backlog: u32) -> io::Result<()> {
    syscall!(listen(fd, backlog.min(i32::MAX as u32) as libc::c_int)).map(drop)
}

pub(crate) fn connect(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_raw(addr);
    // SAFETY: `storage` holds a valid sockaddr of length `len`.
    syscall!(connect(
        fd,
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))
    .map(drop)
}

/// `accept4` with `SOCK_NONBLOCK | SOCK_CLOEXEC`.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is writable for `len` bytes; the kernel updates `len`.
    let conn = syscall!(accept4(
        fd,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ))
    .map(owned)?;
    // On error `conn` is dropped, which closes it.
    Ok((conn, from_raw(&storage)?))
}

pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is writable for `len` bytes.
    syscall!(getsockname(
        fd,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len
    ))?;
    from_raw(&storage)
}

pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is writable for `len` bytes.
    syscall!(getpeername(
        fd,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len
    ))?;
    from_raw(&storage)
}

/// `readv` into `buf`, then `extra`.
pub(crate) fn read_vectored(fd: RawFd, buf: &mut [u8], extra: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
        libc::iovec {
            iov_base: extra.as_mut_ptr().cast(),
            iov_len: extra.len(),
        },
    ];
    // Through `syscall(2)` rather than glibc's `readv`, which wraps every call in pthread
    // cancellation bookkeeping (about 30 instructions per call, and nothing here is ever
    // cancelled). Integers go in as `c_long`: `syscall` reads every argument as one.
    // SAFETY: both iovecs point at live, writable buffers of the stated lengths.
    syscall!(syscall(
        libc::SYS_readv,
        libc::c_long::from(fd),
        iov.as_ptr(),
        2 as libc::c_long
    ))
    .map(|n| n as usize)
}

/// `send` with `MSG_NOSIGNAL`: a write to a closed peer is `EPIPE`, never `SIGPIPE` (as Go).
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // `sendto(2)` directly, as `read_vectored` does `readv`: no cancellation bookkeeping.
    // SAFETY: `buf` is readable for `buf.len()` bytes; no address is passed.
    syscall!(syscall(
        libc::SYS_sendto,
        libc::c_long::from(fd),
        buf.as_ptr(),
        buf.len(),
        libc::c_long::from(libc::MSG_NOSIGNAL),
        core::ptr::null::<libc::sockaddr>(),
        0 as libc::c_long
    ))
    .map(|n| n as usize)
}

pub(crate) fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    syscall!(shutdown(fd, how)).map(drop)
}

/// A second descriptor for the same socket, close-on-exec (`fcntl(F_DUPFD_CLOEXEC)`).
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)).map(owned)
}

/// `SO_KEEPALIVE`, and with it the idle time before the first probe and between probes
/// (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, whole seconds), as Go's `SetKeepAlivePeriod` sets both.
pub(crate) fn set_keepalive(fd: RawFd, period_secs: Option<u32>) -> io::Result<()> {
    if let Some(secs) = period_secs {
        let secs = secs.clamp(1, i32::MAX as u32) as libc::c_int;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)?;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs)?;
    }
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        period_secs.is_some() as libc::c_int,
    )
}

/// The keep-alive idle time in seconds, or `None` when keep-alive is off.
pub(crate) fn keepalive(fd: RawFd) -> io::Result<Option<u32>> {
    if getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? == 0 {
        return Ok(None);
    }
    let idle = getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE)?;
    Ok(Some(idle.max(0) as u32))
}

/// The option that holds the hop limit of unicast packets for a socket of `family`:
/// `IP_TTL` or `IPV6_UNICAST_HOPS`.
fn ttl_option(fd: RawFd) -> io::Result<(libc::c_int, libc::c_int)> {
    match local_addr(fd)? {
        SocketAddr::V4(_) => Ok((libc::IPPROTO_IP, libc::IP_TTL)),
        SocketAddr::V6(_) => Ok((libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)),
    }
}

/// Sets the time-to-live (IPv4) or hop limit (IPv6) of outgoing packets.
pub(crate) fn set_ttl(fd: RawFd, ttl: u32) -> io::Result<()> {
    if ttl == 0 || ttl > 255 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (level, name) = ttl_option(fd)?;
    setsockopt_int(fd, level, name, ttl as libc::c_int)
}

/// The time-to-live (IPv4) or hop limit (IPv6) of outgoing packets.
pub(crate) fn ttl(fd: RawFd) -> io::Result<u32> {
    let (level, name) = ttl_option(fd)?;
    getsockopt_int(fd, level, name).map(|v| v.max(0) as u32)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    // SAFETY: an all-zero rlimit is a valid value.
    let mut lim: libc::rlimit = unsafe { zeroed() };
    // SAFETY: `lim` is a live, writable rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a live rlimit.
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    }
    Ok(lim.rlim_cur)
}

// ===== UDP =====

/// A new non-blocking, close-on-exec UDP socket for `addr`'s family.
pub(crate) fn udp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    syscall!(socket(
        domain(addr),
        libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))
    .map(owned)
}

/// `recvfrom` with `MSG_TRUNC`: returns the datagram's whole length (which may exceed
/// `buf.len()`, the rest being discarded) and its sender.
pub(crate) fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is writable for `buf.len()` bytes and `storage` for `len`; with
    // `MSG_TRUNC` the kernel still writes at most `buf.len()` bytes.
    let n = syscall!(recvfrom(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        libc::MSG_TRUNC,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len
    ))?;
    Ok((n as usize, from_raw(&storage)?))
}

/// `sendto` with `MSG_NOSIGNAL`, to `to` or (with `None`) to the connected peer.
pub(crate) fn send_to(fd: RawFd, buf: &[u8], to: Option<&SocketAddr>) -> io::Result<usize> {
    let raw = to.map(to_raw);
    let (ptr, len) = match &raw {
        Some((storage, len)) => ((storage as *const libc::sockaddr_storage).cast(), *len),
        None => (std::ptr::null::<libc::sockaddr>(), 0),
    };
    // SAFETY: `buf` is readable for `buf.len()` bytes; `ptr` is null or points at a valid
    // sockaddr of length `len` that lives until the call returns.
    syscall!(sendto(
        fd,
        buf.as_ptr().cast(),
        buf.len(),
        libc::MSG_NOSIGNAL,
        ptr,
        len
    ))
    .map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:9009", "[::1]:80", "0.0.0.0:0", "[fe80::1%3]:443"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (storage, _) = to_raw(&addr);
            assert_eq!(from_raw(&storage).unwrap(), addr);
        }
    }
}
