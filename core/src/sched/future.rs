//! The scheduler's futures: [`Sleep`] (Go: `timeSleep`), [`ReadinessWait`] (Go:
//! `netpollblock`) and [`YieldNow`] (Go: `Gosched`). [`JoinHandle`](super::JoinHandle) is in
//! `join.rs`.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::handle::Handle;
use super::io::IoHandle;
use super::timer::{SleepSlot, TimerKind};
use crate::poll_desc::{PollDesc, PollError};
use crate::source::Direction;
use crate::sync::Ordering;
use crate::time::Instant;

/// The future of [`IoHandle::wait`]: readiness of one pollDesc in one direction. Dropping it
/// while pending withdraws the wait ([`IoHandle::cancel_wait`]).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct ReadinessWait<'a> {
    handle: &'a IoHandle,
    pd: &'a PollDesc,
    dir: Direction,
    registered: bool,
}

impl<'a> ReadinessWait<'a> {
    pub(super) fn new(handle: &'a IoHandle, pd: &'a PollDesc, dir: Direction) -> Self {
        ReadinessWait {
            handle,
            pd,
            dir,
            registered: false,
        }
    }
}

impl Future for ReadinessWait<'_> {
    type Output = Result<(), PollError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = self.handle.poll_wait(self.pd, self.dir, cx);
        self.registered = r.is_pending();
        r
    }
}

impl Drop for ReadinessWait<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.handle.cancel_wait(self.pd, self.dir);
        }
    }
}

/// The future of [`Handle::sleep`] and [`Handle::sleep_until`].
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    handle: Handle,
    deadline: Instant,
    slot: Option<Arc<SleepSlot>>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Sleep {
    pub(super) fn new(handle: Handle, deadline: Instant) -> Self {
        Sleep {
            handle,
            deadline,
            slot: None,
        }
    }

    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(slot) = &self.slot {
            // Acquire: pairs with the Release store in `SleepSlot::fire`.
            if slot.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            let mut w = slot.waker.lock();
            if slot.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        if self.handle.now() >= self.deadline {
            return Poll::Ready(());
        }
        let slot = Arc::new(SleepSlot::default());
        *slot.waker.lock() = Some(cx.waker().clone());
        self.handle
            .io()
            .shared()
            .add_timer(self.deadline, TimerKind::Sleep(slot.clone()));
        self.slot = Some(slot);
        Poll::Pending
    }
}

/// Yields once to the scheduler, letting other tasks and the poller run (Go: `Gosched`).
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
