//! [`IoHandle`]: what the stack, socket backends and readiness sources call (Go: the
//! `poll_runtime_*` functions, `netpollready`, `netpollBreak`). Applications use
//! [`Handle`](super::Handle), which hands this out through [`Handle::io`](super::Handle::io).

use alloc::sync::Arc;
use core::fmt;
use core::task::{Context, Poll};

use super::future::ReadinessWait;
use super::timer::TimerKind;
use super::Shared;
use crate::poll_desc::{PollDesc, PollError};
use crate::source::{Direction, Key, Readiness};
use crate::sync::Ordering;
use crate::time::Instant;

/// The backend-facing handle of a scheduler: opens and frees pollDescs, waits on them, sets
/// their deadlines, delivers readiness, breaks a blocked poll, and marks the scheduler broken.
///
/// Cloneable, `Send + Sync`. Get one from [`Handle::io`](super::Handle::io).
#[derive(Clone)]
pub struct IoHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for IoHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoHandle")
            .field("waiters", &self.shared.waiters.get())
            .field("pds_in_use", &self.shared.pds.in_use())
            .finish_non_exhaustive()
    }
}

impl IoHandle {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        IoHandle { shared }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Allocates and opens a pollDesc (Go: `poll_runtime_pollOpen`). Register the socket with
    /// the readiness source under [`PollDesc::key`].
    pub fn open(&self) -> Arc<PollDesc> {
        self.shared.pds.alloc()
    }

    /// Marks `pd` closing and wakes its waiters (Go: `poll_runtime_pollUnblock`).
    pub fn evict(&self, pd: &PollDesc) {
        pd.evict().wake(&self.shared.waiters);
    }

    /// Retires an evicted pollDesc whose socket is deregistered (Go: `poll_runtime_pollClose`).
    pub fn free(&self, pd: &PollDesc) {
        self.shared.pds.free(pd);
    }

    /// Sets or clears the deadline of `dirs` (Go: `poll_runtime_pollSetDeadline`).
    pub fn set_deadline(&self, pd: &PollDesc, dirs: &[Direction], deadline: Option<Instant>) {
        let update = pd.set_deadline(self.shared.clock.now(), dirs, deadline);
        for arm in update.arm {
            self.shared.add_timer(arm.when, TimerKind::Deadline(arm));
        }
        update.woken.wake(&self.shared.waiters);
    }

    /// Waits for readiness of `pd` in `dir` (Go: `poll_runtime_pollWait`).
    pub fn wait<'a>(&'a self, pd: &'a PollDesc, dir: Direction) -> ReadinessWait<'a> {
        ReadinessWait::new(self, pd, dir)
    }

    /// One poll of a wait on `pd` in `dir`, for hand-written futures; [`IoHandle::wait`] is the
    /// same as a future. A caller that stops polling after `Pending` must call
    /// [`IoHandle::cancel_wait`].
    pub fn poll_wait(
        &self,
        pd: &PollDesc,
        dir: Direction,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), PollError>> {
        pd.poll_wait(dir, cx, &self.shared.waiters)
    }

    /// Withdraws a pending [`IoHandle::poll_wait`] (a latched readiness is kept).
    pub fn cancel_wait(&self, pd: &PollDesc, dir: Direction) {
        pd.cancel_wait(dir, &self.shared.waiters);
    }

    /// Delivers a readiness event as a source would (Go: `netpollready`). Backends normally
    /// report through [`ReadinessSource::poll`](crate::source::ReadinessSource::poll); this is
    /// for sources driven in-line.
    pub fn ready(&self, key: Key, readiness: Readiness) {
        self.shared.counters_here().count_inline_event();
        self.shared
            .pds
            .ready(key, readiness)
            .wake(&self.shared.waiters);
    }

    /// Marks the scheduler broken because a worker thread died (a task panicked on it): the
    /// thread in `block_on` stops with
    /// [`RunError::WorkerPanicked`](super::RunError::WorkerPanicked), the workers stop.
    pub fn poison(&self) {
        let shared = &self.shared;
        // Release: pairs with the Acquire loads in the worker loop.
        shared.poisoned.store(true, Ordering::Release);
        shared.shutdown.store(true, Ordering::Release);
        shared.wake_all();
    }

    /// Breaks a blocked poll (Go: `netpollBreak`).
    pub fn notify(&self) {
        self.shared.notifier.notify();
    }
}
