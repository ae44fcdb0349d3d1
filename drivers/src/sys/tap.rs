//! The TAP device's system calls: the only `unsafe` code in this crate.
//!
//! Every function here is a thin, safe wrapper: it checks its inputs, makes one libc call, and
//! turns `-1` into `io::Error::last_os_error()`. File descriptors are owned as `OwnedFd` from
//! the moment the kernel returns them.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::string::String;

/// `_IOW('T', 202, int)`: attach the fd to a TUN/TAP interface.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// A TAP (Ethernet) interface, not TUN (IP).
const IFF_TAP: libc::c_short = 0x0002;
/// No 4-byte packet-information header before each frame.
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the union member we use (`ifr_flags` / `ifr_mtu`), padded to the
/// kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    /// `ifr_flags` (a `short`) or `ifr_mtu` (an `int`): the first bytes of the union.
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        if name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long or contains NUL",
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    }

    fn name(&self) -> String {
        let bytes: std::vec::Vec<u8> = self
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn cvt(res: libc::c_int) -> io::Result<libc::c_int> {
    if res == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

fn cvt_size(res: libc::ssize_t) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}

/// Opens `/dev/net/tun` (the TUN/TAP clone device) non-blocking and close-on-exec.
pub(crate) fn open_tun() -> io::Result<OwnedFd> {
    let path: &CStr = c"/dev/net/tun";
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `open` takes no other
    // pointers.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `open(2)` succeeded, so `fd` is a valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches a `/dev/net/tun` descriptor to TAP interface `name` (`TUNSETIFF`; created if it
/// does not exist, an empty name lets the kernel pick one). Returns the real name.
pub(crate) fn set_tap(fd: BorrowedFd<'_>, name: &str) -> io::Result<String> {
    let mut req = IfReq::new(name)?;
    let flags = IFF_TAP | IFF_NO_PI;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `fd` is a valid descriptor; `req` is a live, properly sized `struct ifreq` that
    // the kernel reads and writes (it fills in the name) only during the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) })?;
    Ok(req.name())
}

/// The MTU of interface `name` (`SIOCGIFMTU`).
pub(crate) fn interface_mtu(name: &str) -> io::Result<usize> {
    let mut req = IfReq::new(name)?;
    // SAFETY: `socket(2)` takes no pointers.
    let sock =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `socket(2)` succeeded, so `sock` is a valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: `sock` is a valid socket; `req` is a live `struct ifreq` the kernel writes
    // `ifr_mtu` into during the call.
    cvt(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFMTU as _,
            &mut req as *mut IfReq,
        )
    })?;
    let mtu = libc::c_int::from_ne_bytes([req.data[0], req.data[1], req.data[2], req.data[3]]);
    usize::try_from(mtu).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative MTU"))
}

/// `read(2)` into `buf`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `write(2)` from `buf`.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    cvt_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: `eventfd(2)` takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `eventfd(2)` succeeded, so `fd` is a valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (makes it readable).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    write(fd, &1u64.to_ne_bytes()).map(|_| ())
}

/// Resets an eventfd's counter; `WouldBlock` if it was already zero.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut buf = [0u8; 8];
    read(fd, &mut buf).map(|_| ())
}

/// What `poll_fds` saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Revents {
    pub(crate) tap: libc::c_short,
    pub(crate) event: libc::c_short,
    /// The extra descriptor's events (0 when there is none).
    pub(crate) extra: libc::c_short,
}

/// `poll(2)` on the TAP fd (for `tap_events`), an eventfd (for input) and, if given, one more
/// descriptor (for input), up to `timeout_ms` (-1: no limit).
pub(crate) fn poll_fds(
    tap: BorrowedFd<'_>,
    tap_events: libc::c_short,
    event: BorrowedFd<'_>,
    extra: Option<BorrowedFd<'_>>,
    timeout_ms: libc::c_int,
) -> io::Result<Revents> {
    let pollfd = |fd: BorrowedFd<'_>, events| libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let mut fds = [
        pollfd(tap, tap_events),
        pollfd(event, libc::POLLIN),
        // A negative fd is ignored by poll(2) (its `revents` stays 0).
        extra.map_or(
            libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            },
            |fd| pollfd(fd, libc::POLLIN),
        ),
    ];
    let n = if extra.is_some() { 3 } else { 2 };
    // SAFETY: `fds` is a live array of at least `n` `pollfd`s, and `n` is passed with it.
    cvt(unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) })?;
    Ok(Revents {
        tap: fds[0].revents,
        event: fds[1].revents,
        extra: fds[2].revents,
    })
}
