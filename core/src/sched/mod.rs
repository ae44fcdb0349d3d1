//! The task scheduler: run queue, timers and the poller loop (Go: `findRunnable`, `sysmon`,
//! `wakeNetPoller`, `injectglist`), single-threaded for now.
//!
//! Rules kept from spec §5.5:
//! * One blocking poller at a time; it blocks only when nothing is runnable, with the earliest
//!   timer as its timeout (`ReadinessSource::poll`).
//! * Whoever readies a task, or adds a timer earlier than the poller's sleep, while the poller
//!   is blocked calls the [`Notifier`] (Go: `wakeNetPoller`).
//! * When busy, the loop still polls without blocking after every [`POLL_INTERVAL_TASKS`] tasks,
//!   so I/O never starves behind runnable tasks (the `sysmon` role, spec §6 #58).
//! * Woken tasks are queued before the waiter count drops (spec §7 #3); wakers run outside
//!   every lock.
//!
//! The run queue is a shared injection queue that any thread may push to; per-worker local
//! queues and stealing can be added in front of it without changing tasks or wakers.

mod task;
mod timer;

pub use task::JoinHandle;

use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use alloc::task::Wake;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::{pin, Pin};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use crate::poll_desc::{PollCache, PollDesc, PollError, WaiterCount};
use crate::source::{Direction, Key, Notifier, Readiness, ReadinessSource};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};
use crate::time::{Clock, Instant};
use task::{Runnable, Task};
use timer::{SleepSlot, TimerHeap, TimerKind};

/// How many tasks run between two non-blocking polls while the run queue stays busy.
/// Go's sysmon polls every 10 ms at most; a count bound keeps the interval short without a
/// clock read per task.
pub const POLL_INTERVAL_TASKS: u32 = 61;

/// `poll_until` value meaning "blocked without a timeout".
const POLL_FOREVER: u64 = u64::MAX;

/// State shared by the scheduler, its handles and its wakers.
pub(crate) struct Shared {
    run_queue: Mutex<VecDeque<Arc<dyn Runnable>>>,
    timers: Mutex<TimerHeap>,
    pds: PollCache,
    waiters: WaiterCount,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    /// True while the scheduler is (about to be) blocked in the source. Go: `lastpoll == 0`.
    polling: AtomicBool,
    /// When the blocked poll will return by itself, in clock nanoseconds. Go: `sched.pollUntil`.
    poll_until: AtomicU64,
}

impl Shared {
    fn push_task(&self, task: Arc<dyn Runnable>) {
        self.run_queue.lock().push_back(task);
        self.wake_poller_for_task();
    }

    /// A task became runnable: break a blocked poll (Go: `wakep` / `netpollBreak`).
    fn wake_poller_for_task(&self) {
        // SeqCst: the load half of a Dekker pair with the scheduler's `polling.store(true)`
        // followed by its run-queue check in `poll_io`: either it sees our task, or we see it
        // polling and notify.
        if self.polling.load(Ordering::SeqCst) {
            self.notifier.notify();
        }
    }

    fn add_timer(&self, when: Instant, kind: TimerKind) {
        {
            let mut timers = self.timers.lock();
            timers.push(when, kind);
            if timers.needs_compaction() {
                timers.compact(|kind| match kind {
                    // Only the heap holds it: the `Sleep` future was dropped.
                    TimerKind::Sleep(slot) => Arc::strong_count(slot) > 1,
                    TimerKind::Deadline(arm) => self
                        .pds
                        .get(arm.key)
                        .is_some_and(|pd| pd.timer_is_current(arm)),
                });
            }
        }
        // Go: wakeNetPoller. SeqCst: pairs with the scheduler's `polling` store before it reads
        // the timer heap to compute its timeout.
        // `poll_until == 0`: the poller is still computing its timeout; break it to be safe
        // ("this can have a spurious wakeup but should never miss a wakeup").
        let until = self.poll_until.load(Ordering::SeqCst);
        if self.polling.load(Ordering::SeqCst) && (until == 0 || when.as_nanos() < until) {
            self.notifier.notify();
        }
    }
}

/// A cloneable, `Send + Sync` handle to a scheduler: spawn tasks, read time, sleep, and
/// drive pollDescs. This is what the `stack` crate holds.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("waiters", &self.shared.waiters.get())
            .field("pds_in_use", &self.shared.pds.in_use())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Spawns a task. It starts running on the scheduler's next turn.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = Task::new(future, Arc::downgrade(&self.shared));
        self.shared.push_task(task.clone());
        JoinHandle::new(task)
    }

    /// The scheduler clock's current time.
    pub fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// Completes after `duration`.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now() + duration)
    }

    /// Completes at or after `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            handle: self.clone(),
            deadline,
            slot: None,
        }
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
        let update = pd.set_deadline(self.now(), dirs, deadline);
        for arm in update.arm {
            self.shared.add_timer(arm.when, TimerKind::Deadline(arm));
        }
        update.woken.wake(&self.shared.waiters);
    }

    /// Waits for readiness of `pd` in `dir` (Go: `poll_runtime_pollWait`).
    pub fn wait<'a>(&'a self, pd: &'a PollDesc, dir: Direction) -> Wait<'a> {
        Wait {
            pd,
            dir,
            waiters: &self.shared.waiters,
            registered: false,
        }
    }

    /// Delivers a readiness event as a source would (Go: `netpollready`). Backends normally
    /// report through [`ReadinessSource::poll`]; this is for sources driven in-line.
    pub fn ready(&self, key: Key, readiness: Readiness) {
        self.shared
            .pds
            .ready(key, readiness)
            .wake(&self.shared.waiters);
    }

    /// Number of tasks parked on pollDescs (Go: `netpollWaiters`).
    pub fn waiters(&self) -> usize {
        self.shared.waiters.get()
    }

    /// Number of pollDescs in use.
    pub fn pds_in_use(&self) -> usize {
        self.shared.pds.in_use()
    }

    /// Number of timers in the heap. Dead ones (superseded or closed deadlines, dropped
    /// sleeps) linger only until the next compaction, which runs whenever the heap doubles.
    pub fn timers_pending(&self) -> usize {
        self.shared.timers.lock().len()
    }

    /// Breaks a blocked poll (Go: `netpollBreak`).
    pub fn notify(&self) {
        self.shared.notifier.notify();
    }
}

/// The future of [`Handle::wait`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Wait<'a> {
    pd: &'a PollDesc,
    dir: Direction,
    waiters: &'a WaiterCount,
    registered: bool,
}

impl Future for Wait<'_> {
    type Output = Result<(), PollError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = self.pd.poll_wait(self.dir, cx, self.waiters);
        self.registered = r.is_pending();
        r
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.pd.cancel_wait(self.dir, self.waiters);
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
            .shared
            .add_timer(self.deadline, TimerKind::Sleep(slot.clone()));
        self.slot = Some(slot);
        Poll::Pending
    }
}

/// Yields once to the scheduler, letting other tasks and the poller run.
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

/// Why [`Scheduler::try_block_on`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError<E> {
    /// The readiness source failed.
    Source(E),
}

impl<E: fmt::Debug> fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Source(e) => write!(f, "readiness source failed: {e:?}"),
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
        // SeqCst: same Dekker pair as `Shared::wake_poller_for_task`.
        if !self.woken.swap(true, Ordering::SeqCst) {
            if let Some(shared) = self.shared.upgrade() {
                shared.wake_poller_for_task();
            }
        }
    }
}

/// A single-threaded scheduler over one readiness source. Go: one P plus the netpoller.
pub struct Scheduler<S: ReadinessSource> {
    source: S,
    handle: Handle,
    events: Vec<(Key, Readiness)>,
}

impl<S: ReadinessSource> fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<S: ReadinessSource> Scheduler<S> {
    /// A scheduler polling `source` and reading time from `clock`.
    pub fn new(source: S, clock: Arc<dyn Clock>) -> Self {
        let notifier = source.notifier();
        let shared = Arc::new(Shared {
            run_queue: Mutex::new(VecDeque::new()),
            timers: Mutex::new(TimerHeap::default()),
            pds: PollCache::new(),
            waiters: WaiterCount::new(),
            clock,
            notifier,
            polling: AtomicBool::new(false),
            poll_until: AtomicU64::new(0),
        });
        Scheduler {
            source,
            handle: Handle { shared },
            events: Vec::with_capacity(128),
        }
    }

    /// The handle that spawns onto this scheduler.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The readiness source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Runs `future` to completion, running spawned tasks, timers and I/O meanwhile.
    ///
    /// # Panics
    /// If the readiness source fails (see [`Scheduler::try_block_on`]) or a task panics.
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match self.try_block_on(future) {
            Ok(v) => v,
            Err(e) => panic!("netpoll scheduler: {e}"),
        }
    }

    /// Runs `future` to completion; stops with an error if the readiness source fails.
    pub fn try_block_on<F: Future>(&mut self, future: F) -> Result<F::Output, RunError<S::Error>> {
        let mut future = pin!(future);
        let main = Arc::new(MainWake {
            woken: AtomicBool::new(true),
            shared: Arc::downgrade(&self.handle.shared),
        });
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            // SeqCst: pairs with `MainWake::wake_by_ref`.
            if main.woken.swap(false, Ordering::SeqCst) {
                if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                    return Ok(v);
                }
            }
            self.run_timers();
            let ran = self.run_tasks(&main);
            // Go: findRunnable blocks in netpoll only when there is nothing else to do.
            let idle = ran < POLL_INTERVAL_TASKS;
            self.poll_io(idle, &main)?;
        }
    }

    /// Fires due timers (Go: `pp.timers.check`).
    fn run_timers(&self) {
        let shared = &self.handle.shared;
        let now = shared.clock.now();
        loop {
            let Some(entry) = shared.timers.lock().pop_due(now) else {
                return;
            };
            match entry.kind {
                TimerKind::Sleep(slot) => {
                    if let Some(w) = slot.fire() {
                        w.wake();
                    }
                }
                TimerKind::Deadline(arm) => {
                    let Some(pd) = shared.pds.get(arm.key) else {
                        continue; // Slot reused: stale timer (spec §6 #39).
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

    /// Runs up to [`POLL_INTERVAL_TASKS`] queued tasks; returns how many ran.
    fn run_tasks(&self, main: &MainWake) -> u32 {
        let shared = &self.handle.shared;
        let mut ran = 0;
        while ran < POLL_INTERVAL_TASKS {
            let Some(task) = shared.run_queue.lock().pop_front() else {
                break;
            };
            task.run();
            ran += 1;
            // Relaxed: only a hint to give the main future its turn sooner; the swap at the top
            // of the loop is the synchronising access.
            if main.woken.load(Ordering::Relaxed) {
                // The main future is often the one that finishes the program; let it run.
                break;
            }
        }
        if ran > 0 && ran < POLL_INTERVAL_TASKS && !shared.run_queue.lock().is_empty() {
            // Stopped early for the main future, not because the queue drained: stay busy.
            return POLL_INTERVAL_TASKS;
        }
        ran
    }

    /// Polls the source, blocking only if `idle` and nothing became runnable meanwhile.
    fn poll_io(&mut self, idle: bool, main: &MainWake) -> Result<(), RunError<S::Error>> {
        let shared = &self.handle.shared;
        let mut timeout = Some(Duration::ZERO);
        if idle {
            // Go: `lastpoll.Swap(0)` then the "delicate dance" re-check. SeqCst: pairs with the
            // loads in `wake_poller_for_task` and `add_timer`.
            shared.polling.store(true, Ordering::SeqCst);
            let runnable = main.woken.load(Ordering::SeqCst) || !shared.run_queue.lock().is_empty();
            if !runnable {
                let next = shared.timers.lock().next_when();
                let now = shared.clock.now();
                timeout = next.map(|t| t.saturating_duration_since(now));
                let until = next.map_or(POLL_FOREVER, |t| t.as_nanos());
                shared.poll_until.store(until, Ordering::SeqCst);
            }
        }
        self.events.clear();
        let result = self.source.poll(timeout, &mut self.events);
        if idle {
            shared.poll_until.store(0, Ordering::SeqCst);
            shared.polling.store(false, Ordering::SeqCst);
        }
        result.map_err(RunError::Source)?;
        for &(key, readiness) in &self.events {
            shared.pds.ready(key, readiness).wake(&shared.waiters);
        }
        Ok(())
    }
}
