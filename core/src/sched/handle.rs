//! [`Handle`]: what applications hold. It spawns tasks, reads the clock, sleeps and reports
//! metrics; pollDescs and readiness events are on [`IoHandle`], for the stack and backends.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::time::Duration;

use super::future::Sleep;
use super::io::IoHandle;
use super::join::JoinHandle;
use super::metrics::Metrics;
use super::task::Task;
use crate::time::Instant;

/// A cloneable, `Send + Sync` handle to a scheduler: spawn tasks, read time, sleep (Go: `go`,
/// `time.Now`, `time.Sleep`). Yielding is the free function [`yield_now`](super::yield_now).
///
/// The stack and socket backends drive pollDescs through [`Handle::io`]; applications do not
/// need it.
#[derive(Clone)]
pub struct Handle {
    /// The scheduler's state, wrapped in the backend-facing handle so that [`Handle::io`] is a
    /// borrow, not a clone.
    io: IoHandle,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("waiters", &self.waiters())
            .field("pds_in_use", &self.pds_in_use())
            .finish_non_exhaustive()
    }
}

impl Handle {
    pub(super) fn new(io: IoHandle) -> Self {
        Handle { io }
    }

    /// Spawns a task. It starts running on the scheduler's next turn.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let shared = self.io.shared();
        let task = Task::new(future, Arc::downgrade(shared));
        shared.counters_here().count_spawn();
        shared.push_task(task.clone(), usize::MAX);
        JoinHandle::new(task)
    }

    /// The scheduler clock's current time.
    pub fn now(&self) -> Instant {
        self.io.shared().clock.now()
    }

    /// Completes after `duration`.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now() + duration)
    }

    /// Completes at or after `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep::new(self.clone(), deadline)
    }

    /// A snapshot of the scheduler's counters and queue depths (see [`Metrics`]). Costs a
    /// short lock of each run queue and of the timer heap; meant for a periodic reader, not a
    /// hot path.
    pub fn metrics(&self) -> Metrics {
        self.io.shared().metrics()
    }

    /// Number of tasks parked on pollDescs (Go: `netpollWaiters`); also
    /// [`Metrics::io_waiters`].
    pub fn waiters(&self) -> usize {
        self.io.shared().waiters.get()
    }

    /// Number of pollDescs in use; also [`Metrics::pds_in_use`].
    pub fn pds_in_use(&self) -> usize {
        self.io.shared().pds.in_use()
    }

    /// Number of timers in the heap; also [`Metrics::timers_pending`]. Dead ones (superseded or
    /// closed deadlines, dropped sleeps) linger only until the next compaction, which runs
    /// whenever the heap doubles.
    pub fn timers_pending(&self) -> usize {
        self.io.shared().timers.lock().len()
    }

    /// The backend-facing handle of the same scheduler: pollDescs, readiness, poison and
    /// notify. Used by the stack and by socket backends (`SocketBackend::handle` returns this
    /// `Handle`, and the stack reaches the pollDescs through it).
    pub fn io(&self) -> &IoHandle {
        &self.io
    }
}
