//! Blocking SIGINT/SIGTERM and waiting for them on a dedicated thread (`sigwait`).

use std::io;
use std::mem::zeroed;

fn term_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signal numbers to it.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it spawns afterwards).
pub(crate) fn block_term_signals() -> io::Result<()> {
    let set = term_set();
    // SAFETY: `set` is an initialised sigset; the old-set pointer may be null.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits until SIGINT or SIGTERM is pending, consuming it; returns the signal number.
pub(crate) fn wait_term_signal() -> io::Result<i32> {
    let set = term_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a live, writable c_int.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(sig)
}
