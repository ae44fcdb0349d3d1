//! Where a runnable task is queued, and when a busy worker asks an idle one for help (Go:
//! `runqput`, `wakep`). Waking the chosen worker is `idle.rs`'s job.

use alloc::sync::Arc;
use core::time::Duration;

use super::idle::RUNNING;
use super::task::Runnable;
use super::Shared;
use crate::sync::Ordering;

/// How long a worker may run tasks without draining its queue before it wakes an idle worker
/// to steal from it (see `Shared::help_with_backlog`). Half a millisecond: several times the
/// wake-up latency of a parked thread, a twentieth of Go's 10 ms preemption bound
/// (`BENCHMARKS.md` has the alternatives measured).
pub const BACKLOG_WAIT: Duration = Duration::from_micros(500);

/// [`BACKLOG_WAIT`] in clock nanoseconds.
const BACKLOG_WAIT_NANOS: u64 = BACKLOG_WAIT.as_nanos() as u64;

/// `WorkerSlot::busy_since` value: the worker's queue last ran dry.
pub(super) const NOT_BUSY: u64 = u64::MAX;

impl Shared {
    /// Queues a runnable task: on the calling worker's own queue if it runs on one; from
    /// another thread, on the worker that last ran it (locality), else on the injector; then
    /// wakes whoever must run it (Go: `runqput` + `wakep`).
    pub(super) fn push_task(&self, task: Arc<dyn Runnable>, affinity: usize) {
        // A wake on a worker thread (the poller's dispatch, a timer, a task waking another)
        // stays on that worker: it is running, so it sees the task before it parks or polls
        // (its own `has_work` re-check, same thread), and no other thread is woken per task.
        // Whether an idle worker should help is decided by the age of the backlog, not per
        // push (`help_with_backlog`). Go: `runqput` on the current P; tokio: the worker's own
        // queue. New tasks (`affinity` out of range) still go to the injector.
        if self.workers.len() > 1 && affinity < self.workers.len() {
            if let Some(w) = self.park.as_ref().and_then(|p| p.current()) {
                if w < self.workers.len() {
                    self.workers[w].queue.lock().push_back(task);
                    // A task that runs long and wakes others must not hold them back.
                    self.help_with_backlog(w);
                    return;
                }
            }
        }
        // With one worker, one FIFO queue: wakes and spawns interleave fairly.
        if self.workers.len() > 1 && affinity < self.workers.len() {
            let queued = {
                let mut q = self.workers[affinity].queue.lock();
                q.push_back(task);
                q.len()
            };
            self.wake_worker(affinity);
            if queued > 1 && self.workers.len() > 1 {
                // A backlog on a busy worker: let an idle one steal (Go: `wakep`).
                self.wake_idle();
            }
        } else {
            self.injector.lock().push_back(task);
            self.wake_idle();
        }
    }

    /// Called on worker `w`'s thread while its queue holds tasks: if its busy period has lasted
    /// [`BACKLOG_WAIT`] and another worker is idle, wake that one to steal (Go: `wakep`), and
    /// restart the period, so a worker asks for help at most once per `BACKLOG_WAIT`.
    ///
    /// Go wakes an idle P for every readied goroutine and lets it spin; on a machine whose
    /// cores are all busy (the load's own threads included) the woken worker mostly takes CPU
    /// from the one that had the work, and costs a futex on both sides. A backlog that drains
    /// within `BACKLOG_WAIT` is cheaper to run where it is; one that does not (long tasks, a
    /// worker preempted by the OS, more load than one worker can take) gets help.
    pub(super) fn help_with_backlog(&self, w: usize) {
        let slot = &self.workers[w];
        // Relaxed: only worker `w`'s thread accesses its `busy_since`.
        let since = slot.busy_since.load(Ordering::Relaxed);
        if since == NOT_BUSY {
            return;
        }
        // Relaxed: a hint; `wake_idle` re-reads the states with SeqCst before acting.
        if !self
            .workers
            .iter()
            .any(|s| s.state.load(Ordering::Relaxed) != RUNNING)
        {
            return;
        }
        let now = self.clock.now().as_nanos();
        if now.saturating_sub(since) < BACKLOG_WAIT_NANOS {
            return;
        }
        // Relaxed: as above.
        slot.busy_since.store(now, Ordering::Relaxed);
        self.wake_idle();
    }
}
