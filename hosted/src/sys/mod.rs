//! Every libc call of the hosted backend, behind safe wrappers (mio's `sys/` layout).

pub(crate) mod epoll;
pub(crate) mod eventfd;
pub(crate) mod signal;
pub(crate) mod socket;

/// Calls a libc function returning `-1` on error, turning that into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller passes arguments valid for this libc function (checked at each
        // call site's own SAFETY comment).
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;
