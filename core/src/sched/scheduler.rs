//! [`Scheduler`]: construction and accessors. Running it (`block_on`, the worker loop) is in
//! `worker.rs`.

use alloc::sync::Arc;
use core::fmt;

use super::handle::Handle;
use super::idle::Park;
use super::io::IoHandle;
use super::metrics::Metrics;
use super::Shared;
use crate::source::ReadinessSource;
use crate::sync::{Mutex, Ordering};
use crate::time::Clock;

/// The scheduler state shared by its workers.
pub(super) struct Core<S: ReadinessSource> {
    pub(super) source: S,
    pub(super) handle: Handle,
    /// The first source error of a worker other than worker 0, for `try_block_on` to return.
    pub(super) failure: Mutex<Option<S::Error>>,
}

impl<S: ReadinessSource> Core<S> {
    pub(super) fn shared(&self) -> &Shared {
        self.handle.io().shared()
    }
}

/// A scheduler over one readiness source: one worker (the thread in `block_on`), or several
/// (Go: Ps and Ms around one netpoller).
///
/// Each worker has a local run queue; a task woken on a worker runs there (from another
/// thread, on the worker that last ran it), new ones go to a shared injection queue; a worker
/// with a backlog older than [`BACKLOG_WAIT`](super::BACKLOG_WAIT) wakes an idle one, and a
/// worker about to block or park first steals half of another's queue. One worker at a time
/// blocks in the source (the poll token); other idle workers park through [`Park`]. A busy
/// worker still polls without blocking every [`POLL_INTERVAL_TASKS`](super::POLL_INTERVAL_TASKS)
/// tasks.
pub struct Scheduler<S: ReadinessSource> {
    pub(super) core: Arc<Core<S>>,
}

impl<S: ReadinessSource> fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("handle", &self.core.handle)
            .field("workers", &self.core.shared().workers.len())
            .finish_non_exhaustive()
    }
}

impl<S: ReadinessSource> Scheduler<S> {
    /// A single-worker scheduler polling `source` and reading time from `clock`.
    pub fn new(source: S, clock: Arc<dyn Clock>) -> Self {
        Self::build(source, clock, 1, None)
    }

    /// A scheduler with `workers` workers (at least 1). Worker 0 is the thread in
    /// [`Scheduler::block_on`]; run each of the others on its own thread with
    /// [`Scheduler::worker`]. `park` parks idle workers.
    pub fn with_workers(
        source: S,
        clock: Arc<dyn Clock>,
        workers: usize,
        park: Arc<dyn Park>,
    ) -> Self {
        Self::build(source, clock, workers.max(1), Some(park))
    }

    fn build(
        source: S,
        clock: Arc<dyn Clock>,
        workers: usize,
        park: Option<Arc<dyn Park>>,
    ) -> Self {
        let notifier = source.notifier();
        let shared = Arc::new(Shared::new(workers, park, clock, notifier));
        Scheduler {
            core: Arc::new(Core {
                source,
                handle: Handle::new(IoHandle::new(shared)),
                failure: Mutex::new(None),
            }),
        }
    }

    /// The handle that spawns onto this scheduler.
    pub fn handle(&self) -> &Handle {
        &self.core.handle
    }

    /// The readiness source.
    pub fn source(&self) -> &S {
        &self.core.source
    }

    /// How many workers this scheduler has.
    pub fn workers(&self) -> usize {
        self.core.shared().workers.len()
    }

    /// A snapshot of the scheduler's counters and queue depths; same as
    /// [`Handle::metrics`].
    pub fn metrics(&self) -> Metrics {
        self.core.shared().metrics()
    }

    /// Re-arms the workers after a previous `block_on` stopped them. Call before starting the
    /// worker threads of a new `block_on`.
    ///
    /// A source error that a worker recorded and no `block_on` has returned yet (the worker
    /// failed before worker 0 entered `block_on`) keeps the workers stopped, so that the next
    /// `block_on` returns it instead of running without that worker.
    pub fn prepare_workers(&self) {
        let shared = self.core.shared();
        if self.core.failure.lock().is_some() {
            return;
        }
        // Release: pairs with the Acquire loads in the worker loop.
        shared.shutdown.store(false, Ordering::Release);
        shared.failed.store(false, Ordering::Release);
    }

    /// Marks the scheduler broken because a worker thread died (a task panicked on it); the
    /// thread in `block_on` stops with [`RunError::WorkerPanicked`](super::RunError). Same as
    /// [`IoHandle::poison`].
    pub fn poison(&self) {
        self.core.handle.io().poison();
    }
}
