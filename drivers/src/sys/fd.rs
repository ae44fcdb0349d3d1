//! Descriptor calls shared by the TAP and AF_XDP devices: `read`/`write`, the eventfd a waiter
//! is woken through, `poll(2)` on the device with it, and an interface's MTU (get and set).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub(crate) fn cvt(res: libc::c_int) -> io::Result<libc::c_int> {
    if res == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

pub(crate) fn cvt_size(res: libc::ssize_t) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}

/// The MTU of interface `name` (`SIOCGIFMTU`).
pub(crate) fn interface_mtu(name: &str) -> io::Result<usize> {
    let mtu = mtu_ioctl(name, libc::SIOCGIFMTU as _, 0)?;
    usize::try_from(mtu).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative MTU"))
}

/// Sets the MTU of interface `name` (`SIOCSIFMTU`; needs `CAP_NET_ADMIN`).
pub(crate) fn set_interface_mtu(name: &str, mtu: usize) -> io::Result<()> {
    let mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU"))?;
    mtu_ioctl(name, libc::SIOCSIFMTU as _, mtu).map(drop)
}

/// One `struct ifreq` MTU ioctl on interface `name`; returns `ifr_mtu` afterwards.
fn mtu_ioctl(name: &str, request: libc::Ioctl, mtu: libc::c_int) -> io::Result<libc::c_int> {
    #[repr(C)]
    struct IfReqMtu {
        name: [libc::c_char; libc::IFNAMSIZ],
        mtu: libc::c_int,
        _pad: [u8; 20],
    }
    let mut req = IfReqMtu {
        name: [0; libc::IFNAMSIZ],
        mtu,
        _pad: [0; 20],
    };
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name",
        ));
    }
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `socket(2)` takes no pointers.
    let sock =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `socket(2)` succeeded, so `sock` is a valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: `req` is a live `struct ifreq` (40 bytes); the kernel reads the name and, for
    // the get request, writes `ifr_mtu`.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req as *mut IfReqMtu) })?;
    Ok(req.mtu)
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
    /// The device descriptor's events.
    pub(crate) device: libc::c_short,
    pub(crate) event: libc::c_short,
    /// The extra descriptor's events (0 when there is none).
    pub(crate) extra: libc::c_short,
}

/// `poll(2)` on the device fd (for `device_events`), an eventfd (for input) and, if given, one more
/// descriptor (for input), up to `timeout_ms` (-1: no limit).
pub(crate) fn poll_fds(
    device: BorrowedFd<'_>,
    device_events: libc::c_short,
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
        pollfd(device, device_events),
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
        device: fds[0].revents,
        event: fds[1].revents,
        extra: fds[2].revents,
    })
}
