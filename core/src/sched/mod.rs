//! The task scheduler: run queues, timers and the poller loop (Go: `findRunnable`, `sysmon`,
//! `wakeNetPoller`, `injectglist`), with one worker or several.
//!
//! Rules kept from Go's scheduler:
//! * One blocking poller at a time; it blocks only when nothing is runnable, with the earliest
//!   timer as its timeout (`ReadinessSource::poll`).
//! * Whoever readies a task, or adds a timer earlier than the poller's sleep, while the poller
//!   is blocked calls the [`Notifier`] (Go: `wakeNetPoller`).
//! * When busy, the loop still polls without blocking after every [`POLL_INTERVAL_TASKS`] tasks,
//!   so I/O never starves behind runnable tasks (the `sysmon` role).
//! * Woken tasks are queued before the waiter count drops; wakers run outside every lock.
//!
//! With several workers (Go's Ps), each has a local run queue, and a shared injection queue
//! takes new tasks and wakes from other threads. A task woken on a worker thread (by the
//! poller's dispatch, a timer or another task) is queued on that worker, which is running:
//! no other thread is woken for it (Go: `runqput` on the current P; tokio does the same). An
//! idle worker is woken to steal only for a backlog that outlasts [`BACKLOG_WAIT`], and every
//! worker steals before it blocks or parks (Go: `findRunnable`), so none sleeps while another
//! (perhaps preempted by the OS) holds runnable tasks. Measured on 2 cores: handing
//! each woken task to the worker that last ran it cost a futex every ~10 messages and left
//! tasks waiting up to a CPU time slice for a thread that the OS had not yet run.

mod task;
#[cfg(test)]
mod tests;
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
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::time::{Clock, Instant};
use task::{Runnable, Task};
use timer::{SleepSlot, TimerHeap, TimerKind};

/// How many tasks run between two non-blocking polls while the run queue stays busy.
/// Go's sysmon polls every 10 ms at most; a count bound keeps the interval short without a
/// clock read per task.
pub const POLL_INTERVAL_TASKS: u32 = 61;

/// How long a worker may run tasks without draining its queue before it wakes an idle worker
/// to steal from it (see `Shared::help_with_backlog`). Half a millisecond: several times the
/// wake-up latency of a parked thread, a twentieth of Go's 10 ms preemption bound. Measured on
/// 2 cores: 100 µs woke the idle worker for ordinary echo batches and cost 5–10% of
/// the throughput; 500 µs and 1 ms were alike.
pub const BACKLOG_WAIT: Duration = Duration::from_micros(500);

/// [`BACKLOG_WAIT`] in clock nanoseconds.
const BACKLOG_WAIT_NANOS: u64 = BACKLOG_WAIT.as_nanos() as u64;

/// `poll_until` value meaning "blocked without a timeout".
const POLL_FOREVER: u64 = u64::MAX;

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
const RUNNING: usize = 0;
/// Worker state: parked in [`Park::park`]; wake it with `unpark`.
const PARKED: usize = 1;
/// Worker state: blocked (or about to block) in the readiness source; wake it with the notifier.
const POLLING: usize = 2;

/// One worker's local run queue and state (Go: a P's `runq` plus its M's sleep state).
struct WorkerSlot {
    queue: Mutex<VecDeque<Arc<dyn Runnable>>>,
    state: AtomicUsize,
    /// Clock nanoseconds since which the worker has been running tasks without draining its
    /// queue, or since it last woke a helper; [`NOT_BUSY`] when its queue last ran dry. Read
    /// and written only by the worker's own thread.
    busy_since: AtomicU64,
}

/// `busy_since` value: the worker's queue last ran dry.
const NOT_BUSY: u64 = u64::MAX;

/// State shared by the scheduler, its handles and its wakers.
pub(crate) struct Shared {
    /// Tasks with no worker yet (new spawns, spawns from outside). Go: the global run queue.
    injector: Mutex<VecDeque<Arc<dyn Runnable>>>,
    workers: Vec<WorkerSlot>,
    park: Option<Arc<dyn Park>>,
    timers: Mutex<TimerHeap>,
    pds: PollCache,
    waiters: WaiterCount,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    /// Held by the one worker that polls the source (Go: `lastpoll.Swap(0)` / `pollingNet`).
    poll_token: AtomicBool,
    /// True while a worker is (about to be) blocked in the source. Go: `lastpoll == 0`.
    polling: AtomicBool,
    /// When the blocked poll will return by itself, in clock nanoseconds. Go: `sched.pollUntil`.
    poll_until: AtomicU64,
    /// Set when `block_on` returns: workers other than the caller leave their loops.
    shutdown: AtomicBool,
    /// A worker thread died (its task panicked): `block_on` stops with an error.
    poisoned: AtomicBool,
    /// Another worker's poll of the source failed: `block_on` returns its error
    /// (`Core::failure`).
    failed: AtomicBool,
}

impl Shared {
    /// Queues a runnable task: on the calling worker's own queue if it runs on one; from
    /// another thread, on the worker that last ran it (locality), else on the injector; then
    /// wakes whoever must run it (Go: `runqput` + `wakep`).
    fn push_task(&self, task: Arc<dyn Runnable>, affinity: usize) {
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
    fn help_with_backlog(&self, w: usize) {
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

    /// Makes worker `w` notice new work: unpark it, or break its poll.
    fn wake_worker(&self, w: usize) {
        let slot = &self.workers[w];
        // SeqCst: the load half of a Dekker pair with the worker's state store followed by its
        // queue re-check (`park_worker`, `poll_blocking`): either it sees our task, or we see
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
    fn wake_idle(&self) {
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
    fn wake_all(&self) {
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
        // Go: wakeNetPoller. SeqCst: pairs with the poller's `polling` store before it reads
        // the timer heap to compute its timeout.
        // `poll_until == 0`: the poller is still computing its timeout; break it to be safe
        // ("this can have a spurious wakeup but should never miss a wakeup").
        let until = self.poll_until.load(Ordering::SeqCst);
        // Nobody blocked in the source means some worker is running: it fires due timers at its
        // next turn, and becomes the poller (timeout = earliest timer) when it runs out of work.
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
        self.shared.push_task(task.clone(), usize::MAX);
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
            handle: self,
            pd,
            dir,
            registered: false,
        }
    }

    /// One poll of a wait on `pd` in `dir`, for hand-written futures; [`Handle::wait`] is the
    /// same as a future. A caller that stops polling after `Pending` must call
    /// [`Handle::cancel_wait`].
    pub fn poll_wait(
        &self,
        pd: &PollDesc,
        dir: Direction,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), PollError>> {
        pd.poll_wait(dir, cx, &self.shared.waiters)
    }

    /// Withdraws a pending [`Handle::poll_wait`] (a latched readiness is kept).
    pub fn cancel_wait(&self, pd: &PollDesc, dir: Direction) {
        pd.cancel_wait(dir, &self.shared.waiters);
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

    /// Marks the scheduler broken because a worker thread died (a task panicked on it): the
    /// thread in `block_on` stops with [`RunError::WorkerPanicked`], the workers stop.
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

/// The future of [`Handle::wait`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Wait<'a> {
    handle: &'a Handle,
    pd: &'a PollDesc,
    dir: Direction,
    registered: bool,
}

impl Future for Wait<'_> {
    type Output = Result<(), PollError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = self.handle.poll_wait(self.pd, self.dir, cx);
        self.registered = r.is_pending();
        r
    }
}

impl Drop for Wait<'_> {
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

/// The scheduler state shared by its workers.
struct Core<S: ReadinessSource> {
    source: S,
    handle: Handle,
    /// The first source error of a worker other than worker 0, for `try_block_on` to return.
    failure: Mutex<Option<S::Error>>,
}

/// A scheduler over one readiness source: one worker (the thread in `block_on`), or several
/// (Go: Ps and Ms around one netpoller).
///
/// Each worker has a local run queue; a task woken on a worker runs there (from another
/// thread, on the worker that last ran it), new ones go to a shared injection queue; a worker
/// with a backlog older than [`BACKLOG_WAIT`] wakes an idle one, and a worker about to block or
/// park first steals half of another's queue. One worker at a time blocks in the source (the
/// poll token); other idle workers park through [`Park`]. A busy worker still polls without
/// blocking every [`POLL_INTERVAL_TASKS`] tasks.
pub struct Scheduler<S: ReadinessSource> {
    core: Arc<Core<S>>,
}

impl<S: ReadinessSource> fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("handle", &self.core.handle)
            .field("workers", &self.core.handle.shared.workers.len())
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
        let shared = Arc::new(Shared {
            injector: Mutex::new(VecDeque::new()),
            workers: (0..workers)
                .map(|_| WorkerSlot {
                    queue: Mutex::new(VecDeque::new()),
                    state: AtomicUsize::new(RUNNING),
                    busy_since: AtomicU64::new(NOT_BUSY),
                })
                .collect(),
            park,
            timers: Mutex::new(TimerHeap::default()),
            pds: PollCache::new(),
            waiters: WaiterCount::new(),
            clock,
            notifier,
            poll_token: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            poll_until: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        Scheduler {
            core: Arc::new(Core {
                source,
                handle: Handle { shared },
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
        self.core.handle.shared.workers.len()
    }

    /// Re-arms the workers after a previous `block_on` stopped them. Call before starting the
    /// worker threads of a new `block_on`.
    pub fn prepare_workers(&self) {
        let shared = &self.core.handle.shared;
        // Release: pairs with the Acquire loads in the worker loop.
        shared.shutdown.store(false, Ordering::Release);
        shared.failed.store(false, Ordering::Release);
    }

    /// Marks the scheduler broken because a worker thread died (a task panicked on it); the
    /// thread in `block_on` stops with [`RunError::WorkerPanicked`]. Same as [`Handle::poison`].
    pub fn poison(&self) {
        self.core.handle.poison();
    }

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
        let shared = &self.core.handle.shared;
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
    /// [`Worker::run`] while some thread is in [`Scheduler::block_on`].
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
struct WorkerLoop<'a, S: ReadinessSource> {
    core: &'a Core<S>,
    id: usize,
    events: Vec<(Key, Readiness)>,
    /// Where the next steal attempt starts (round robin).
    steal_from: usize,
    /// Tasks picked so far (Go: `schedtick`).
    tick: u32,
}

impl<S: ReadinessSource> WorkerLoop<'_, S> {
    fn shared(&self) -> &Shared {
        &self.core.handle.shared
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
        let shared = &self.core.handle.shared;
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
    /// (see [`WorkerSlot::busy_since`]) if none is running.
    fn run_tasks(&mut self, main_woken: Option<&AtomicBool>, now: Instant) -> u32 {
        let mut ran = 0;
        let slot = &self.core.handle.shared.workers[self.id];
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
            task.run(self.id);
            ran += 1;
            // Relaxed: only a hint to give the main future its turn sooner; the swap at the top
            // of the loop is the synchronising access.
            if main_woken.is_some_and(|w| w.load(Ordering::Relaxed)) {
                if self.has_work() {
                    // Stopped early, not because the queue drained: stay busy.
                    return POLL_INTERVAL_TASKS;
                }
                break;
            }
        }
        ran
    }

    /// Whether this worker's queue or the injector holds a task.
    fn has_work(&self) -> bool {
        let shared = self.shared();
        !shared.workers[self.id].queue.lock().is_empty() || !shared.injector.lock().is_empty()
    }

    /// Takes half of another worker's queue (Go: `runqsteal`). Returns whether it got any.
    fn steal(&mut self) -> bool {
        let shared = &self.core.handle.shared;
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
        let shared = &self.core.handle.shared;
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
            let now = shared.clock.now();
            timeout = next.map(|t| t.saturating_duration_since(now));
            let until = next.map_or(POLL_FOREVER, |t| t.as_nanos());
            shared.poll_until.store(until, Ordering::SeqCst);
        }
        self.events.clear();
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
        self.core.source.poll(timeout, &mut self.events)?;
        self.dispatch();
        Ok(())
    }

    /// Wakes the tasks of the events just polled.
    fn dispatch(&self) {
        let shared = self.shared();
        for &(key, readiness) in &self.events {
            shared.pds.ready(key, readiness).wake(&shared.waiters);
        }
    }

    /// Parks this worker until woken (Go: `stopm`), unless work or the poller's role is free.
    fn park(&self, main_woken: Option<&AtomicBool>) {
        let shared = self.shared();
        let Some(park) = &shared.park else {
            // One worker: the poll token is always ours, so this is unreachable in practice;
            // spin once and retry rather than sleep without a way to be woken.
            crate::sync::spin_loop();
            return;
        };
        let slot = &shared.workers[self.id];
        // Idle: the busy period is over. Relaxed: only this worker's thread accesses it.
        slot.busy_since.store(NOT_BUSY, Ordering::Relaxed);
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
        park.park(self.id);
        // Woken by `unpark` (state already RUNNING) or spuriously (still PARKED).
        slot.state.store(RUNNING, Ordering::SeqCst);
    }
}
