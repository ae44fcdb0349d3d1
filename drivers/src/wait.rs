//! How a device waits for ingress: the one thing the in-memory wire and TAP do differently.
//!
//! A [`SmolSource`](crate::SmolSource) drives its hosts without blocking, then, if it found
//! nothing and may block, calls [`Wait::wait`] with `min(scheduler timeout, smoltcp's
//! poll_delay)`. The waiter returns when a frame may be waiting, when [`Wait::wake`] was called,
//! or when the timeout passed. A TAP waiter blocks in `poll(2)` on the TAP fd plus an eventfd
//! (and, with `TapWaiter::also_watch`, one more descriptor, such as an epoll instance's, so one
//! thread can sleep on smoltcp and kernel sockets at once); the wire's blocks on a condition
//! variable, or in simulated time advances the clock instead.

use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;

use netpoll_core::Notifier;

use crate::error::DriverError;

/// Blocking for ingress, interruptibly (Go: the `epoll_wait` half of `netpoll` plus
/// `netpollBreak`).
///
/// # Contract
///
/// * `wait(Some(ZERO))` does not block.
/// * `wait` returns early, without consuming anything, when a frame is already waiting; the
///   caller then drives the stack and reads it.
/// * [`Wait::wake`] can be called from any thread and any context; it coalesces, and is never
///   lost: called while nobody waits, it makes the next `wait` return at once. Only `wait`
///   consumes it.
/// * Timeouts round **up** to the waiter's resolution, never down to a busy zero.
pub trait Wait: Send + Sync + 'static {
    /// Blocks until ingress may be pending, [`Wait::wake`] is called, or `timeout` passes
    /// (`None`: no limit).
    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError>;

    /// Interrupts a concurrent or the next [`Wait::wait`].
    fn wake(&self);

    /// Hands the frames the device queued during the drive pass that just ended to the OS:
    /// called once per scheduler turn, after the pass, so a device can send in batches (one
    /// AF_XDP wake-up per batch, TAP's writes together). Default: nothing to do, for devices
    /// that send each frame as it is built.
    fn flush(&self) {}

    /// Reports a device failure recorded since the last call (a TAP write that failed for
    /// good, say). Called at the start of every poll.
    fn check(&self) -> Result<(), DriverError> {
        Ok(())
    }
}

/// The scheduler's [`Notifier`] over a [`Wait`].
pub(crate) struct WaitNotifier<W: Wait>(pub(crate) Arc<W>);

impl<W: Wait> Notifier for WaitNotifier<W> {
    fn notify(&self) {
        self.0.wake();
    }
}

impl<W: Wait> fmt::Debug for WaitNotifier<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitNotifier")
    }
}
