//! Running a [`Scheduler`]: `block_on` on worker 0, [`Worker::run`] on the others, and the
//! worker loop they share (Go: `schedule` / `findRunnable` on one M). Parking an idle worker is
//! in `idle.rs`.

use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use alloc::task::Wake;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::{pin, Pin};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use super::idle::{POLLING, RUNNING};
use super::scheduler::{Core, Scheduler};
use super::task::{Ran, Runnable};
use super::timer::TimerKind;
use super::wake::NOT_BUSY;
use super::{Shared, POLL_INTERVAL_TASKS};
use crate::source::{Key, Readiness, ReadinessSource};
use crate::sync::{AtomicBool, Ordering};
use crate::time::Instant;

/// `poll_until` value meaning "blocked without a timeout".
const POLL_FOREVER: u64 = u64::MAX;

/// Why [`Scheduler::try_block_on`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError<E> {
    /// The readiness source failed.
    Source(E),
    /// Another worker thread died (a task panicked there); see [`Scheduler::poison`].
    WorkerPanicked,
}

impl<E: fmt::Debug> fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Source(e) => write!(f, "readiness source failed: {e:?}"),
            RunError::WorkerPanicked => f.write_str("a worker thread panicked"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for RunError<E> {}

/// The waker of the future given to `block_on`.
struct MainWake {
    woken: AtomicBool,
    shared: Weak<Shared>,
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst: same Dekker pair as `Shared::wake_worker`.
        if !self.woken.swap(true, Ordering::SeqCst) {
            if let Some(shared) = self.shared.upgrade() {
                // The main future runs on worker 0, the thread in `block_on`.
                shared.wake_worker(0);
            }
        }
    }
}

impl<S: ReadinessSource> Scheduler<S> {
    /// Runs `future` to completion, running spawned tasks, timers and I/O meanwhile: the
    /// `unwrap` of [`Scheduler::try_block_on`], for tests and examples.
    ///
    /// # Panics
    /// If the readiness source fails or a task panics. Programs that must outlive a failing
    /// device or poller use [`Scheduler::try_block_on`].
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match self.try_block_on(future) {
            Ok(v) => v,
            Err(e) => panic!("netpoll scheduler: {e} (use try_block_on to handle it)"),
        }
    }

    /// Runs `future` to completion on this thread as worker 0; stops with an error if the
    /// readiness source fails, on any worker. When it returns, the other workers stop too.
    pub fn try_block_on<F: Future>(&mut self, future: F) -> Result<F::Output, RunError<S::Error>> {
        // A previous `block_on` left the stop flag set; without this a second one never
        // blocks in its source (and simulated time never advances). Worker threads of a
        // previous run have seen the flag and left by now: their owner joins them before
        // calling `block_on` again.
        self.prepare_workers();
        let shared = self.core.handle.io().shared();
        let future = pin!(future);
        let main = Arc::new(MainWake {
            woken: AtomicBool::new(true),
            shared: Arc::downgrade(shared),
        });
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut worker = WorkerLoop {
            core: &self.core,
            id: 0,
            events: Vec::with_capacity(128),
            steal_from: 0,
            tick: 0,
        };
        let result = worker.run(Some((future, &main, &mut cx)));
        // Release: pairs with the Acquire load in the worker loop.
        shared.shutdown.store(true, Ordering::Release);
        shared.wake_all();
        result.map(|v| v.expect("worker 0 returns only with the main future's output"))
    }
}

impl<S: ReadinessSource + Send + Sync + 'static> Scheduler<S> {
    /// Worker `id` (1 ≤ id < [`Scheduler::workers`]), to run on its own thread with
    /// [`Worker::run`] while some thread is in [`Scheduler::block_on`]. One thread at a time
    /// runs a given worker (its queue, state and counters assume it).
    ///
    /// # Panics
    /// If `id` is 0 or out of range.
    pub fn worker(&self, id: usize) -> Worker<S> {
        assert!(
            id >= 1 && id < self.workers(),
            "netpoll scheduler: no worker {id} (workers 1..{})",
            self.workers()
        );
        Worker {
            core: self.core.clone(),
            id,
        }
    }
}

/// One extra worker of a multi-worker [`Scheduler`], movable to its own thread.
pub struct Worker<S: ReadinessSource> {
    core: Arc<Core<S>>,
    id: usize,
}

impl<S: ReadinessSource> fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

impl<S: ReadinessSource> Worker<S> {
    /// Runs tasks, timers and I/O until the `block_on` in progress returns. If this worker's
    /// poll of the readiness source fails, it hands the error to the thread in
    /// [`Scheduler::try_block_on`], which returns it, and stops: an error never ends here.
    pub fn run(self) {
        let mut worker = WorkerLoop {
            core: &self.core,
            id: self.id,
            events: Vec::with_capacity(128),
            steal_from: self.id,
            tick: 0,
        };
        // Only worker 0 returns an error; the others hand theirs over.
        let _ = worker.run::<core::future::Pending<()>>(None);
    }
}

/// The main future of `block_on`, with its waker, driven by worker 0.
type Main<'a, F> = (Pin<&'a mut F>, &'a Arc<MainWake>, &'a mut Context<'a>);

/// One worker's loop state. Go: `schedule` / `findRunnable` on one M.
pub(super) struct WorkerLoop<'a, S: ReadinessSource> {
    core: &'a Core<S>,
    pub(super) id: usize,
    events: Vec<(Key, Readiness)>,
    /// Where the next steal attempt starts (round robin).
    steal_from: usize,
    /// Tasks picked so far (Go: `schedtick`).
    tick: u32,
}

impl<S: ReadinessSource> WorkerLoop<'_, S> {
    pub(super) fn shared(&self) -> &Shared {
        self.core.shared()
    }

    fn run<F: Future>(
        &mut self,
        mut main: Option<Main<'_, F>>,
    ) -> Result<Option<F::Output>, RunError<S::Error>> {
        loop {
            if let Some((future, wake, cx)) = &mut main {
                // SeqCst: pairs with `MainWake::wake_by_ref`.
                if wake.woken.swap(false, Ordering::SeqCst) {
                    if let Poll::Ready(v) = future.as_mut().poll(cx) {
                        return Ok(Some(v));
                    }
                }
                // Acquire: pairs with the Release store in `Scheduler::poison`.
                if self.shared().poisoned.load(Ordering::Acquire) {
                    return Err(RunError::WorkerPanicked);
                }
                // Acquire: pairs with the Release store in `source_failed`.
                if self.shared().failed.load(Ordering::Acquire) {
                    if let Some(e) = self.core.failure.lock().take() {
                        return Err(RunError::Source(e));
                    }
                }
            } else if self.shared().shutdown.load(Ordering::Acquire) {
                // Acquire: pairs with the Release stores in `try_block_on` and `poison`.
                return Ok(None);
            }
            let main_woken = main.as_ref().map(|(_, w, _)| &w.woken);
            let now = self.run_timers();
            let ran = self.run_tasks(main_woken, now);
            if ran >= POLL_INTERVAL_TASKS {
                // Busy: still poll I/O, without blocking, if nobody else is (Go: sysmon's
                // `netpoll(0)`, serialised like `pollingNet`).
                if self.try_take_poll_token() {
                    let r = self.poll(Some(Duration::ZERO));
                    self.release_poll_token();
                    if let Err(e) = r {
                        return self.source_failed(e, main.is_some());
                    }
                }
                continue;
            }
            // Go: `findRunnable` steals before it blocks, so a worker never sleeps while another
            // (perhaps preempted by the OS) holds runnable tasks.
            if self.steal() {
                continue;
            }
            if self.try_take_poll_token() {
                let r = self.poll_blocking(main_woken);
                self.release_poll_token();
                if let Err(e) = r {
                    return self.source_failed(e, main.is_some());
                }
                continue;
            }
            self.park(main_woken);
        }
    }

    /// The source failed on this worker. Worker 0 returns the error; another worker records
    /// it for worker 0 (which returns it from `try_block_on`), stops every worker and leaves.
    fn source_failed<T>(
        &self,
        e: S::Error,
        is_main: bool,
    ) -> Result<Option<T>, RunError<S::Error>> {
        if is_main {
            return Err(RunError::Source(e));
        }
        let shared = self.shared();
        {
            let mut slot = self.core.failure.lock();
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        // Release: pairs with the Acquire loads in the worker loop (the error is published by
        // the lock above).
        shared.failed.store(true, Ordering::Release);
        shared.shutdown.store(true, Ordering::Release);
        shared.wake_all();
        Ok(None)
    }

    fn try_take_poll_token(&self) -> bool {
        // Acquire: pairs with the Release in `release_poll_token`: the previous poller's
        // dispatch is visible to the next.
        self.shared()
            .poll_token
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn release_poll_token(&self) {
        // Release: pairs with the Acquire CAS in `try_take_poll_token`.
        self.shared().poll_token.store(false, Ordering::Release);
    }

    /// Fires due timers (Go: `pp.timers.check`).
    fn run_timers(&self) -> Instant {
        let shared = self.shared();
        let now = shared.clock.now();
        loop {
            let Some(entry) = shared.timers.lock().pop_due(now) else {
                return now;
            };
            match entry.kind {
                TimerKind::Sleep(slot) => {
                    if let Some(w) = slot.fire() {
                        w.wake();
                    }
                }
                TimerKind::Deadline(arm) => {
                    let Some(pd) = shared.pds.get(arm.key) else {
                        continue; // Slot reused: stale timer.
                    };
                    let fired = pd.deadline_fired(now, arm);
                    if let Some(rearm) = fired.rearm {
                        shared.add_timer(rearm.when, TimerKind::Deadline(rearm));
                    }
                    fired.woken.wake(&shared.waiters);
                }
            }
        }
    }

    /// The next task: local queue first, then the injector (Go: `runqget`, `globrunqget`);
    /// every [`POLL_INTERVAL_TASKS`]th pick looks at the injector first, so tasks that keep
    /// waking each other on one worker cannot starve new ones (Go: `schedtick % 61`).
    /// Also returns whether tasks remain in the local queue behind the one picked.
    fn next_task(&mut self) -> Option<(Arc<dyn Runnable>, bool)> {
        let shared = self.core.shared();
        self.tick = self.tick.wrapping_add(1);
        if self.tick.is_multiple_of(POLL_INTERVAL_TASKS) {
            if let Some(t) = shared.injector.lock().pop_front() {
                return Some((t, false));
            }
        }
        {
            let mut q = shared.workers[self.id].queue.lock();
            if let Some(t) = q.pop_front() {
                return Some((t, !q.is_empty()));
            }
        }
        shared.injector.lock().pop_front().map(|t| (t, false))
    }

    /// Runs up to [`POLL_INTERVAL_TASKS`] queued tasks; returns how many ran, or
    /// `POLL_INTERVAL_TASKS` if it stopped early for the main future with work left.
    ///
    /// `now` is the time at the top of the worker loop: it starts the worker's busy period
    /// (see [`WorkerSlot::busy_since`](super::WorkerSlot)) if none is running.
    fn run_tasks(&mut self, main_woken: Option<&AtomicBool>, now: Instant) -> u32 {
        let mut ran = 0;
        // Counted here and added once per batch: the loop stays free of counter stores.
        let (mut polled, mut completed) = (0u64, 0u64);
        let slot = &self.core.shared().workers[self.id];
        while ran < POLL_INTERVAL_TASKS {
            let Some((task, more)) = self.next_task() else {
                // Drained: the busy period ends.
                // Relaxed: only this worker's thread accesses its `busy_since`.
                slot.busy_since.store(NOT_BUSY, Ordering::Relaxed);
                break;
            };
            // Relaxed: as above.
            if slot.busy_since.load(Ordering::Relaxed) == NOT_BUSY {
                slot.busy_since.store(now.as_nanos(), Ordering::Relaxed);
            } else if more {
                self.shared().help_with_backlog(self.id);
            }
            match task.run(self.id) {
                Ran::Skipped => {}
                Ran::Polled => polled += 1,
                Ran::Completed => {
                    polled += 1;
                    completed += 1;
                }
            }
            ran += 1;
            // Relaxed: only a hint to give the main future its turn sooner; the swap at the top
            // of the loop is the synchronising access.
            if main_woken.is_some_and(|w| w.load(Ordering::Relaxed)) {
                if self.has_work() {
                    // Stopped early, not because the queue drained: stay busy.
                    ran = POLL_INTERVAL_TASKS;
                }
                break;
            }
        }
        self.shared().counters[self.id].count_polls(polled, completed);
        ran
    }

    /// Whether this worker's queue or the injector holds a task.
    pub(super) fn has_work(&self) -> bool {
        let shared = self.shared();
        !shared.workers[self.id].queue.lock().is_empty() || !shared.injector.lock().is_empty()
    }

    /// Takes half of another worker's queue (Go: `runqsteal`). Returns whether it got any.
    fn steal(&mut self) -> bool {
        let shared = self.core.shared();
        let n = shared.workers.len();
        for i in 1..n {
            let victim = (self.steal_from + i) % n;
            if victim == self.id {
                continue;
            }
            let stolen: VecDeque<_> = {
                let mut q = shared.workers[victim].queue.lock();
                let take = q.len().div_ceil(2);
                let keep = q.len() - take;
                q.split_off(keep)
            };
            if !stolen.is_empty() {
                shared.counters[self.id].count_steal();
                self.steal_from = victim;
                shared.workers[self.id].queue.lock().extend(stolen);
                return true;
            }
        }
        false
    }

    /// Blocks in the source until I/O, a timer or a wake-up, unless work arrived meanwhile.
    /// Go: `findRunnable`'s blocking `netpoll(delay)` after the "delicate dance".
    fn poll_blocking(&mut self, main_woken: Option<&AtomicBool>) -> Result<(), S::Error> {
        let shared = self.core.shared();
        let slot = &shared.workers[self.id];
        // Idle: the busy period is over. Relaxed: only this worker's thread accesses it.
        slot.busy_since.store(NOT_BUSY, Ordering::Relaxed);
        // SeqCst: the store halves of the Dekker pairs with `wake_worker`/`wake_idle` (state)
        // and `add_timer` (polling); the re-check below is the load half.
        slot.state.store(POLLING, Ordering::SeqCst);
        shared.polling.store(true, Ordering::SeqCst);
        let runnable = main_woken.is_some_and(|w| w.load(Ordering::SeqCst))
            || self.has_work()
            // Acquire: see the worker loop.
            || shared.shutdown.load(Ordering::Acquire);
        let mut timeout = Some(Duration::ZERO);
        if !runnable {
            let next = shared.timers.lock().next_when();
            // The clock only when a timer is pending: a clock read is not free in a VM.
            timeout = next.map(|t| t.saturating_duration_since(shared.clock.now()));
            let until = next.map_or(POLL_FOREVER, |t| t.as_nanos());
            shared.poll_until.store(until, Ordering::SeqCst);
        }
        self.events.clear();
        shared.counters[self.id].count_source_wait();
        let r = self.core.source.poll(timeout, &mut self.events);
        shared.poll_until.store(0, Ordering::SeqCst);
        shared.polling.store(false, Ordering::SeqCst);
        shared.workers[self.id]
            .state
            .store(RUNNING, Ordering::SeqCst);
        // Ready the tasks only now that we are RUNNING again: waking them while still marked
        // POLLING would make every wake break a poll that already returned (an eventfd write
        // per poll).
        r?;
        self.dispatch();
        Ok(())
    }

    /// Polls the source and readies the tasks of the edges found (Go: `netpoll` +
    /// `injectglist`): woken tasks go to this worker's queue (see [`Shared::push_task`]).
    fn poll(&mut self, timeout: Option<Duration>) -> Result<(), S::Error> {
        self.events.clear();
        self.shared().counters[self.id].count_source_wait();
        self.core.source.poll(timeout, &mut self.events)?;
        self.dispatch();
        Ok(())
    }

    /// Wakes the tasks of the events just polled.
    fn dispatch(&self) {
        let shared = self.shared();
        shared.counters[self.id].count_polled_events(self.events.len());
        for &(key, readiness) in &self.events {
            shared.pds.ready(key, readiness).wake(&shared.waiters);
        }
    }
}
