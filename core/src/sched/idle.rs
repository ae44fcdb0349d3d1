//! Idle workers: the [`Park`] contract, the worker states, and how an idle worker is woken
//! (Go: `stopm` / `notewakeup`, `wakep`, `netpollBreak`).
//!
//! A worker with nothing to run either holds the poll token and blocks in the readiness source
//! (`POLLING`, woken by the [`Notifier`](crate::source::Notifier)), or parks (`PARKED`, woken
//! by [`Park::unpark`]). Every wake-up is one half of a Dekker pair: the waker publishes work
//! then reads the state; the worker publishes its state then re-checks for work.

use super::worker::WorkerLoop;
use super::Shared;
use crate::source::ReadinessSource;
use crate::sync::{AtomicBool, Ordering};

/// Parks and unparks worker threads: the platform's futex (Go: `notesleep` / `notewakeup`).
///
/// Implemented by the host (`netpoll-hosted` uses thread park/unpark); the core stays free of
/// threads. Only needed with more than one worker.
pub trait Park: Send + Sync {
    /// Blocks the calling thread, which runs worker `worker`, until [`Park::unpark`] is called
    /// for it. May return spuriously. An `unpark` that comes first makes the next `park`
    /// return at once (a token, as `std::thread::park`).
    fn park(&self, worker: usize);

    /// Wakes worker `worker` from [`Park::park`] (or makes its next `park` return at once).
    fn unpark(&self, worker: usize);

    /// The worker the calling thread runs, if it is one of this scheduler's workers (Go: the
    /// current M's P). A task woken there is queued on that worker, which is running and so
    /// needs no wake-up (Go: `runqput` on the current P); the default (`None`) queues every
    /// wake on the worker that last ran the task instead, waking it.
    fn current(&self) -> Option<usize> {
        None
    }
}

/// Worker state: running tasks (or about to).
pub(super) const RUNNING: usize = 0;
/// Worker state: parked in [`Park::park`]; wake it with `unpark`.
pub(super) const PARKED: usize = 1;
/// Worker state: blocked (or about to block) in the readiness source; wake it with the notifier.
pub(super) const POLLING: usize = 2;

impl Shared {
    /// Makes worker `w` notice new work: unpark it, or break its poll.
    pub(super) fn wake_worker(&self, w: usize) {
        let slot = &self.workers[w];
        // SeqCst: the load half of a Dekker pair with the worker's state store followed by its
        // queue re-check (`WorkerLoop::park`, `poll_blocking`): either it sees our task, or we see
        // it parked or polling and wake it.
        match slot.state.load(Ordering::SeqCst) {
            PARKED => self.unpark(w),
            POLLING => self.notifier.notify(),
            _ => {}
        }
    }

    fn unpark(&self, w: usize) {
        // SeqCst: as `wake_worker`; only one waker unparks (the CAS winner).
        if self.workers[w]
            .state
            .compare_exchange(PARKED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            if let Some(park) = &self.park {
                park.unpark(w);
            }
        }
    }

    /// Wakes one idle worker for work any worker can take: a parked one, else the poller.
    pub(super) fn wake_idle(&self) {
        for (w, slot) in self.workers.iter().enumerate() {
            // SeqCst: as `wake_worker`.
            if slot.state.load(Ordering::SeqCst) == PARKED {
                self.unpark(w);
                return;
            }
        }
        for slot in &self.workers {
            // SeqCst: as `wake_worker`.
            if slot.state.load(Ordering::SeqCst) == POLLING {
                self.notifier.notify();
                return;
            }
        }
    }

    /// Wakes every parked or polling worker (shutdown, poison).
    pub(super) fn wake_all(&self) {
        let mut polling = false;
        for w in 0..self.workers.len() {
            self.unpark(w);
            // SeqCst: as `wake_worker`.
            polling |= self.workers[w].state.load(Ordering::SeqCst) == POLLING;
        }
        if polling {
            self.notifier.notify();
        }
    }
}

impl<S: ReadinessSource> WorkerLoop<'_, S> {
    /// Parks this worker until woken (Go: `stopm`), unless work or the poller's role is free.
    pub(super) fn park(&self, main_woken: Option<&AtomicBool>) {
        let shared = self.shared();
        let Some(park) = &shared.park else {
            // One worker: the poll token is always ours, so this is unreachable in practice;
            // spin once and retry rather than sleep without a way to be woken.
            crate::sync::spin_loop();
            return;
        };
        let slot = &shared.workers[self.id];
        // Idle: the busy period is over. Relaxed: only this worker's thread accesses it.
        slot.busy_since
            .store(super::wake::NOT_BUSY, Ordering::Relaxed);
        // SeqCst: the store half of the Dekker pair with `wake_worker`/`wake_idle`.
        slot.state.store(PARKED, Ordering::SeqCst);
        let work = main_woken.is_some_and(|w| w.load(Ordering::SeqCst))
            || self.has_work()
            // Acquire: see the worker loop.
            || shared.shutdown.load(Ordering::Acquire)
            // The poller left: someone must take its role (Go: "nobody is polling network").
            || !shared.poll_token.load(Ordering::SeqCst);
        if work {
            // If a waker already moved us to RUNNING (and unparked), its token makes a later
            // park return at once: harmless.
            let _ =
                slot.state
                    .compare_exchange(PARKED, RUNNING, Ordering::SeqCst, Ordering::SeqCst);
            return;
        }
        shared.counters[self.id].count_park();
        park.park(self.id);
        // Woken by `unpark` (state already RUNNING) or spuriously (still PARKED).
        slot.state.store(RUNNING, Ordering::SeqCst);
    }
}
