//! The TAP device's system calls (with `fd.rs`, which AF_XDP shares).
//!
//! Every function here is a thin, safe wrapper: it checks its inputs, makes one libc call, and
//! turns `-1` into `io::Error::last_os_error()`. File descriptors are owned as `OwnedFd` from
//! the moment the kernel returns them.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::string::String;

use super::fd::cvt;
pub(crate) use super::fd::{
    eventfd, eventfd_drain, eventfd_signal, interface_mtu, poll_fds, read, set_interface_mtu, write,
};

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
