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
//! (perhaps preempted by the OS) holds runnable tasks. `docs/design.md` explains the choice.
//!
//! # Layout
//!
//! | file | contents | Go |
//! |---|---|---|
//! | `handle.rs` | [`Handle`]: what applications use (spawn, time, sleep, metrics) | `go`, `time.Sleep` |
//! | `io.rs` | [`IoHandle`]: what the stack, socket backends and readiness sources call | `poll_runtime_*`, `netpollready`, `netpollBreak` |
//! | `future.rs` | [`Sleep`], [`ReadinessWait`], [`YieldNow`] | `timeSleep`, `netpollblock`, `Gosched` |
//! | `task.rs`, `join.rs` | a spawned task and its [`JoinHandle`] | a `g` |
//! | `scheduler.rs` | [`Scheduler`]: construction and accessors | `schedinit` |
//! | `worker.rs` | the worker loop, `block_on`, [`Worker`] | `schedule`, `findRunnable` |
//! | `wake.rs` | where a woken task is queued, and when a busy worker asks for help | `runqput`, `wakep` |
//! | `idle.rs` | [`Park`], worker states, waking and parking idle workers | `stopm`, `notewakeup` |
//! | `timer.rs` | the timer heap and timer insertion | the per-P timer heap, `wakeNetPoller` |
//! | `timeout.rs` | [`Handle::timeout`], [`Elapsed`]: a future against a deadline | `context.WithTimeout` |
//! | `metrics.rs` | [`Metrics`] and the per-worker counters behind it | `schedtrace` |

mod future;
mod handle;
mod idle;
mod io;
mod join;
mod metrics;
mod scheduler;
mod task;
#[cfg(test)]
mod tests;
mod timeout;
mod timer;
mod wake;
mod worker;

pub use future::{yield_now, ReadinessWait, Sleep, YieldNow};
pub use handle::Handle;
pub use idle::Park;
pub use io::IoHandle;
pub use join::JoinHandle;
pub use metrics::Metrics;
pub use scheduler::Scheduler;
pub use timeout::Elapsed;
pub use wake::BACKLOG_WAIT;
pub use worker::{RunError, Worker};

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::poll_desc::{PollCache, WaiterCount};
use crate::source::Notifier;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex};
use crate::time::Clock;
use metrics::Counters;
use task::Runnable;
use timer::TimerHeap;

/// How many tasks run between two non-blocking polls while the run queue stays busy.
/// Go's sysmon polls every 10 ms at most; a count bound keeps the interval short without a
/// clock read per task.
pub const POLL_INTERVAL_TASKS: u32 = 61;

/// One worker's local run queue and state (Go: a P's `runq` plus its M's sleep state).
struct WorkerSlot {
    queue: Mutex<VecDeque<Arc<dyn Runnable>>>,
    /// `idle::RUNNING`, `idle::PARKED` or `idle::POLLING`.
    state: AtomicUsize,
    /// Clock nanoseconds since which the worker has been running tasks without draining its
    /// queue, or since it last woke a helper; [`wake::NOT_BUSY`] when its queue last ran dry.
    /// Read and written only by the worker's own thread.
    busy_since: AtomicU64,
}

/// State shared by the scheduler, its handles and its wakers.
pub(crate) struct Shared {
    /// Tasks with no worker yet (new spawns, spawns from outside). Go: the global run queue.
    injector: Mutex<VecDeque<Arc<dyn Runnable>>>,
    workers: Vec<WorkerSlot>,
    /// One set of counters per worker, then one for threads that are not workers; each on its
    /// own cache line (see `metrics.rs`).
    counters: Vec<Counters>,
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
    /// (`Core::failure` in `scheduler.rs`).
    failed: AtomicBool,
}

impl Shared {
    fn new(
        workers: usize,
        park: Option<Arc<dyn Park>>,
        clock: Arc<dyn Clock>,
        notifier: Arc<dyn Notifier>,
    ) -> Self {
        Shared {
            injector: Mutex::new(VecDeque::new()),
            workers: (0..workers)
                .map(|_| WorkerSlot {
                    queue: Mutex::new(VecDeque::new()),
                    state: AtomicUsize::new(idle::RUNNING),
                    busy_since: AtomicU64::new(wake::NOT_BUSY),
                })
                .collect(),
            counters: (0..=workers).map(|_| Counters::new()).collect(),
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
        }
    }
}
