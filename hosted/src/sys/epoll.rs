//! epoll FFI (Go: `runtime/netpoll_epoll.go`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::syscall;

/// One epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

/// The raw event type.
pub(crate) type Event = libc::epoll_event;

/// An empty event buffer entry.
pub(crate) const EMPTY_EVENT: Event = libc::epoll_event { events: 0, u64: 0 };

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `epoll_create1(2)` ensures the fd is valid and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// `EPOLL_CTL_ADD` with `events` and user data `token`.
    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid, live epoll_event; both fds are open descriptors.
        syscall!(epoll_ctl(
            self.fd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            &mut ev
        ))
        .map(drop)
    }

    /// `EPOLL_CTL_DEL`.
    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        syscall!(epoll_ctl(
            self.fd.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut()
        ))
        .map(drop)
    }

    /// `epoll_wait` into `events`; returns how many were filled. `EINTR` is returned as an error.
    pub(crate) fn wait(
        &self,
        events: &mut [Event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = timeout_ms(timeout);
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a live, writable buffer of `max` epoll_event entries.
        let n = syscall!(epoll_wait(
            self.fd.as_raw_fd(),
            events.as_mut_ptr(),
            max,
            ms
        ))?;
        Ok(n as usize)
    }
}

/// The epoll descriptor itself: readable while events are ready, so another poller can wait on
/// it (the mixed source's TAP waiter does).
impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Converts a timeout to epoll's milliseconds, rounding **up** so that a sub-millisecond timer
/// never becomes a busy `0` (Go #44343, mio's epoll.rs). `None` blocks (`-1`).
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) if d.is_zero() => 0,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::timeout_ms;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(999))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1001))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_millis(50))), 50);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
    }
}
