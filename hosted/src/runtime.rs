//! The runtime users start: a scheduler polling epoll, plus the kernel socket backend.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use netpoll_core::sched::{Park, RunError};
use netpoll_core::{Clock, Handle, Instant, JoinHandle, Metrics, ReadinessSource, Scheduler};

use crate::backend::KernelBackend;
use crate::source::{EpollSource, PollStats, Poller};

/// `CLOCK_MONOTONIC` as a netpoll [`Clock`]. All runtimes of a process share one epoch, so
/// an [`Instant`] from one is meaningful to another.
#[cfg(not(feature = "tap"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

/// With `tap`, the userspace engine's clock is this crate's: one type, one epoch, so smoltcp
/// hosts and kernel sockets on one scheduler read the same instants.
#[cfg(feature = "tap")]
pub use netpoll_drivers::MonotonicClock;

#[cfg(not(feature = "tap"))]
fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(not(feature = "tap"))]
impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        let nanos = epoch().elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<(Handle, KernelBackend)>> = const { RefCell::new(None) };
}

thread_local! {
    /// The worker this thread runs: (address of its runtime's [`ThreadPark`], worker id).
    static WORKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Parks worker threads with `std::thread::park` (a futex on Linux).
#[derive(Debug, Default)]
struct ThreadPark {
    threads: Mutex<Vec<Option<Thread>>>,
}

impl ThreadPark {
    /// Makes the calling thread worker `worker` until the returned guard drops.
    fn register(&self, worker: usize) -> WorkerGuard {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if threads.len() <= worker {
            threads.resize(worker + 1, None);
        }
        threads[worker] = Some(std::thread::current());
        WorkerGuard(WORKER.replace((self.id(), worker)))
    }

    /// Tells this runtime's threads from another's (the address is stable: it lives in an `Arc`).
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

/// Restores the thread's previous worker identity on drop.
struct WorkerGuard((usize, usize));

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        WORKER.set(self.0);
    }
}

impl Park for ThreadPark {
    fn park(&self, _worker: usize) {
        std::thread::park();
    }

    fn unpark(&self, worker: usize) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(t)) = threads.get(worker) {
            t.unpark();
        }
    }

    fn current(&self) -> Option<usize> {
        let (park, worker) = WORKER.get();
        (park == self.id()).then_some(worker)
    }
}

/// Where scheduler trace lines go: stderr unless [`Builder::schedtrace_to`] said otherwise.
type TraceSink = Arc<Mutex<dyn Write + Send>>;

/// The environment variable that turns the scheduler trace on (see [`Runtime`]).
const SCHEDTRACE_ENV: &str = "NETPOLL_SCHEDTRACE";

/// What [`SCHEDTRACE_ENV`] asks for, read and checked once per process. A bad value is
/// reported on stderr the first time and then ignored.
fn schedtrace_from_env() -> Option<Duration> {
    static FROM_ENV: OnceLock<Option<Duration>> = OnceLock::new();
    *FROM_ENV.get_or_init(|| {
        let value = std::env::var_os(SCHEDTRACE_ENV)?;
        match parse_schedtrace(value.to_str()) {
            Ok(interval) => interval,
            Err(()) => {
                eprintln!(
                    "netpoll: ignoring {SCHEDTRACE_ENV}={value:?}: expected a whole number of \
                     milliseconds, such as {SCHEDTRACE_ENV}=1000 (0 turns the trace off)"
                );
                None
            }
        }
    })
}

/// Parses a [`SCHEDTRACE_ENV`] value: milliseconds; `0` or empty means off.
fn parse_schedtrace(value: Option<&str>) -> Result<Option<Duration>, ()> {
    let value = value.ok_or(())?.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let ms: u64 = value.parse().map_err(|_| ())?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// Configures a [`Runtime`].
#[derive(Clone)]
pub struct Builder {
    workers: usize,
    schedtrace: Option<Duration>,
    schedtrace_sink: Option<TraceSink>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("schedtrace", &self.schedtrace)
            .field("schedtrace_to_stderr", &self.schedtrace_sink.is_none())
            .finish()
    }
}

impl Default for Builder {
    /// One worker per CPU; the scheduler trace as `NETPOLL_SCHEDTRACE` says (off if unset).
    fn default() -> Self {
        Builder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            schedtrace: schedtrace_from_env(),
            schedtrace_sink: None,
        }
    }
}

impl Builder {
    /// Worker threads, including the one that calls [`Runtime::block_on`] (at least 1;
    /// default: the number of CPUs). One worker is a single-threaded runtime.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Prints a line of scheduler [`Metrics`] every `interval` (Go: `GODEBUG=schedtrace`; see
    /// [`Runtime`]); `None` or a zero interval turns it off. Overrides the `NETPOLL_SCHEDTRACE`
    /// environment variable, which sets the default.
    pub fn schedtrace(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.schedtrace = interval.into().filter(|i| !i.is_zero());
        self
    }

    /// Writes the scheduler trace lines to `sink` instead of stderr (the trace itself is turned
    /// on by [`Builder::schedtrace`] or `NETPOLL_SCHEDTRACE`). Clones of this builder share it.
    pub fn schedtrace_to(mut self, sink: impl Write + Send + 'static) -> Self {
        self.schedtrace_sink = Some(Arc::new(Mutex::new(sink)));
        self
    }

    /// Creates the epoll instance, its eventfd and the scheduler, and starts the scheduler
    /// trace if asked.
    pub fn build(self) -> io::Result<Runtime> {
        let poller = Poller::new()?;
        let park = Arc::new(ThreadPark::default());
        let source = EpollSource::new(poller.clone());
        let clock = Arc::new(MonotonicClock);
        let scheduler = if self.workers == 1 {
            Scheduler::new(source, clock)
        } else {
            Scheduler::with_workers(source, clock, self.workers, park.clone())
        };
        let backend = KernelBackend::new(poller, scheduler.handle().clone());
        let schedtrace = match self.schedtrace {
            Some(interval) => {
                let sink = self
                    .schedtrace_sink
                    .unwrap_or_else(|| Arc::new(Mutex::new(io::stderr())));
                Some(SchedTrace::start(
                    scheduler.handle().clone(),
                    interval,
                    sink,
                )?)
            }
            None => None,
        };
        Ok(Runtime {
            scheduler,
            backend,
            park,
            _schedtrace: schedtrace,
        })
    }
}

/// The scheduler trace thread: a line of [`Metrics`] per interval until dropped.
struct SchedTrace {
    /// Dropping it ends the thread's wait at once.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SchedTrace {
    fn start(handle: Handle, interval: Duration, sink: TraceSink) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let start = std::time::Instant::now();
        let thread = std::thread::Builder::new()
            .name("netpoll-schedtrace".into())
            .spawn(move || {
                // Reads counters only: never wakes a worker.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let line = schedtrace_line(start.elapsed(), &handle.metrics());
                    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                    // A trace that cannot be written is not worth stopping the program for.
                    let _ = sink.write_all(line.as_bytes()).and_then(|()| sink.flush());
                }
            })?;
        Ok(SchedTrace {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for SchedTrace {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One trace line, as Go's `SCHED 1000ms: gomaxprocs=2 idleprocs=1 ...`.
fn schedtrace_line(since_start: Duration, metrics: &Metrics) -> String {
    format!("SCHED {}ms: {metrics}\n", since_start.as_millis())
}

/// A netpoll runtime on Linux: worker threads running tasks, one of them blocking in
/// `epoll_wait` when there is nothing to run, the others parked.
///
/// [`Runtime::metrics`] reads the scheduler's counters (tasks, polls, steals, parks, queue
/// depths, pollDescs, timers, readiness waits and events).
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let mut rt = netpoll_hosted::Runtime::new()?;
/// rt.block_on(async {
///     let listener = netpoll_hosted::TcpListener::bind(
///         &netpoll_hosted::backend(),
///         "127.0.0.1:0".parse().unwrap(),
///     )
///     .unwrap();
///     println!("listening on {}", listener.local_addr().unwrap());
/// });
/// # Ok(())
/// # }
/// ```
///
/// # Scheduler trace
///
/// `NETPOLL_SCHEDTRACE=<ms>` in the environment (or [`Builder::schedtrace`]) makes the runtime
/// print one line of [`Metrics`] to stderr every `<ms>` milliseconds, as Go's
/// `GODEBUG=schedtrace=<ms>` does:
///
/// ```text
/// SCHED 1000ms: workers=2 idle=1 tasks=5 spawned=9 runq=[0 3] inject=0 steals=2 parks=7 pds=4 timers=1 waits=40 events=38
/// ```
///
/// The time is since the runtime was built. `0` or an empty value turns the trace off; any
/// other value that is not a whole number of milliseconds is reported once on stderr and
/// ignored. The trace runs on a thread of its own that only reads counters: it never wakes an
/// idle runtime, and it stops when the runtime is dropped.
pub struct Runtime {
    scheduler: Scheduler<EpollSource>,
    backend: KernelBackend,
    park: Arc<ThreadPark>,
    /// Stopped and joined when the runtime drops.
    _schedtrace: Option<SchedTrace>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

/// Sets the thread's current runtime for the free functions, restoring the previous on drop.
struct EnterGuard(Option<(Handle, KernelBackend)>);

impl EnterGuard {
    fn enter(handle: &Handle, backend: &KernelBackend) -> Self {
        EnterGuard(CURRENT.with(|c| c.borrow_mut().replace((handle.clone(), backend.clone()))))
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

impl Runtime {
    /// A runtime with the default configuration (one worker per CPU).
    pub fn new() -> io::Result<Self> {
        Builder::default().build()
    }

    /// Configures a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Runs `future` to completion on this thread, with spawned tasks, timers and I/O on this
    /// thread and the other workers' threads (started here, stopped before this returns).
    /// Inside, the free functions ([`spawn`], [`backend`], [`now`], [`sleep`]) use this runtime.
    ///
    /// # Panics
    /// If epoll fails (see [`Runtime::try_block_on`], which returns that error instead), or a
    /// task panics (on any worker: the panic is re-raised here).
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match self.try_block_on(future) {
            Ok(v) => v,
            Err(e) => panic!("netpoll runtime: epoll failed: {e} (try_block_on returns it)"),
        }
    }

    /// [`Runtime::block_on`], but a failure of epoll, on any worker, stops the runtime and is
    /// returned instead of panicking. A task's panic is still re-raised here.
    pub fn try_block_on<F: Future>(&mut self, future: F) -> io::Result<F::Output> {
        let (handle, backend) = (self.scheduler.handle().clone(), self.backend.clone());
        let enter = move || EnterGuard::enter(&handle, &backend);
        run_workers(&mut self.scheduler, &self.park, enter, future)
    }

    /// How many worker threads run tasks (including the one in `block_on`).
    pub fn workers(&self) -> usize {
        self.scheduler.workers()
    }

    /// The scheduler handle (spawn, time, sleep, metrics).
    pub fn handle(&self) -> &Handle {
        self.scheduler.handle()
    }

    /// A snapshot of the scheduler's counters and queue depths (see [`Metrics`]).
    pub fn metrics(&self) -> Metrics {
        self.scheduler.metrics()
    }

    /// The kernel socket backend, for [`crate::TcpListener::bind`] and friends.
    pub fn backend(&self) -> &KernelBackend {
        &self.backend
    }

    /// Syscall counters of the poller.
    pub fn poll_stats(&self) -> &PollStats {
        self.scheduler.source().stats()
    }
}

/// Runs `future` on `scheduler` as worker 0, its other workers on threads of their own (each
/// calls `enter` first and keeps the guard while it runs). A source error on any worker is
/// returned; a task's panic on any worker is re-raised here.
fn run_workers<S, F, G>(
    scheduler: &mut Scheduler<S>,
    park: &Arc<ThreadPark>,
    enter: impl Fn() -> G + Clone + Send + 'static,
    future: F,
) -> Result<F::Output, S::Error>
where
    S: ReadinessSource + Send + Sync + 'static,
    S::Error: Send,
    F: Future,
{
    let _enter = enter();
    let _worker = park.register(0);
    scheduler.prepare_workers();
    let threads: Vec<_> = (1..scheduler.workers())
        .map(|id| {
            let worker = scheduler.worker(id);
            let (handle, park, enter) = (scheduler.handle().clone(), park.clone(), enter.clone());
            std::thread::Builder::new()
                .name(format!("netpoll-worker-{id}"))
                .spawn(move || {
                    let _enter = enter();
                    let _worker = park.register(id);
                    // A source error is handed to worker 0 by `run` itself.
                    std::panic::catch_unwind(AssertUnwindSafe(|| worker.run())).inspect_err(|_| {
                        // Go crashes on a panicking goroutine; we stop the runtime and
                        // re-raise the panic from `block_on`.
                        handle.io().poison();
                    })
                })
                .expect("spawn a netpoll worker thread")
        })
        .collect();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| scheduler.try_block_on(future)));
    if result.is_err() {
        // A task panicked on this thread: stop the other workers before joining them.
        scheduler.poison();
    }
    // `try_block_on` stopped the workers (or a worker poisoned the scheduler).
    let mut worker_panic = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(payload)) | Err(payload) => {
                worker_panic.get_or_insert(payload);
            }
        }
    }
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(RunError::Source(e))) => Err(e),
        Ok(Err(RunError::WorkerPanicked)) => match worker_panic {
            Some(payload) => std::panic::resume_unwind(payload),
            None => panic!("netpoll: a worker thread panicked"),
        },
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn with_current<R>(f: impl FnOnce(&Handle, &KernelBackend) -> R) -> R {
    CURRENT.with(|c| match &*c.borrow() {
        Some((h, b)) => f(h, b),
        None => panic!("netpoll: no runtime on this thread; call inside Runtime::block_on"),
    })
}

/// Spawns a task on the current runtime.
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    with_current(|h, _| h.spawn(future))
}

/// The current runtime's socket backend.
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn backend() -> KernelBackend {
    with_current(|_, b| b.clone())
}

/// The current runtime's scheduler handle.
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn handle() -> Handle {
    with_current(|h, _| h.clone())
}

/// The current time on the runtime clock (use it to compute deadlines).
pub fn now() -> Instant {
    MonotonicClock.now()
}

/// Sleeps on the current runtime.
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn sleep(duration: Duration) -> netpoll_core::sched::Sleep {
    with_current(|h, _| h.sleep(duration))
}

/// Runs `future` for at most `duration` on the current runtime: `Ok` with its output, or
/// `Err(Elapsed)` once the time is up, the future then dropped unfinished (see
/// [`Handle::timeout`]).
///
/// ```
/// use std::time::Duration;
/// use netpoll_hosted::{sleep, timeout, Runtime};
///
/// Runtime::new().unwrap().block_on(async {
///     assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
///     let slow = timeout(Duration::from_millis(5), sleep(Duration::from_secs(10))).await;
///     assert!(slow.is_err());
/// });
/// ```
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn timeout<F: Future>(
    duration: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, netpoll_core::Elapsed>> {
    with_current(|h, _| h.timeout(duration, future))
}

/// Runs `future` until `deadline` (an instant of [`now`]) on the current runtime (see
/// [`Handle::timeout_at`]).
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn timeout_at<F: Future>(
    deadline: Instant,
    future: F,
) -> impl Future<Output = Result<F::Output, netpoll_core::Elapsed>> {
    with_current(|h, _| h.timeout_at(deadline, future))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Poll, Waker};

    use super::*;

    /// Tasks parked on one gate: opening it wakes them all from the opener's worker.
    #[derive(Default)]
    struct Gate {
        open: AtomicBool,
        wakers: Mutex<Vec<Waker>>,
    }

    impl Gate {
        async fn wait(&self) {
            poll_fn(|cx| {
                let mut wakers = self.wakers.lock().unwrap();
                if self.open.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                wakers.push(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }

        fn open(&self) {
            self.open.store(true, Ordering::Release);
            for w in std::mem::take(&mut *self.wakers.lock().unwrap()) {
                w.wake();
            }
        }
    }

    /// Fails every poll made on a worker thread other than the caller's of `block_on`.
    struct FailsOnWorkers;

    struct NoNotify;

    impl netpoll_core::Notifier for NoNotify {
        fn notify(&self) {}
    }

    impl ReadinessSource for FailsOnWorkers {
        type Error = io::Error;

        fn poll(
            &self,
            timeout: Option<Duration>,
            _: &mut dyn netpoll_core::Events,
        ) -> io::Result<()> {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            if name.starts_with("netpoll-worker-") {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            // Never blocks long, so no notifier is needed.
            std::thread::sleep(timeout.map_or(Duration::from_millis(1), |t| {
                t.min(Duration::from_millis(1))
            }));
            Ok(())
        }

        fn notifier(&self) -> Arc<dyn netpoll_core::Notifier> {
            Arc::new(NoNotify)
        }
    }

    /// A source error on a worker thread stops the runtime with that error (`try_block_on`),
    /// where it used to panic the worker thread.
    #[test]
    fn a_source_error_on_a_worker_is_returned_not_panicked() {
        let park = Arc::new(ThreadPark::default());
        let mut sched =
            Scheduler::with_workers(FailsOnWorkers, Arc::new(MonotonicClock), 2, park.clone());
        let h = sched.handle().clone();
        let r = run_workers(&mut sched, &park, || (), async move {
            // Work for worker 1 (and so turns at the poll token) until it fails; bounded.
            for _ in 0..5000 {
                h.spawn(async {});
                h.sleep(Duration::from_millis(1)).await;
            }
        });
        let e = r.expect_err("the source failed");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    }

    /// Tasks woken on a worker queue there (no per-wake hand-off); a backlog that outlasts
    /// `BACKLOG_WAIT` still wakes the idle worker, which steals half.
    #[test]
    fn a_long_backlog_on_one_worker_is_shared() {
        let mut rt = Runtime::builder().workers(2).build().unwrap();
        let gate = Arc::new(Gate::default());
        let threads = Arc::new(Mutex::new(HashSet::new()));
        rt.block_on(async {
            let mut joins = Vec::new();
            for _ in 0..8 {
                let (gate, threads) = (gate.clone(), threads.clone());
                joins.push(spawn(async move {
                    gate.wait().await;
                    let start = std::time::Instant::now();
                    while start.elapsed() < Duration::from_millis(5) {
                        std::hint::spin_loop();
                    }
                    threads.lock().unwrap().insert(std::thread::current().id());
                }));
            }
            while gate.wakers.lock().unwrap().len() < 8 {
                sleep(Duration::from_millis(1)).await;
            }
            // Let the other worker go idle, then open the gate from the main future, so that
            // every wake queues on worker 0 and nothing else wakes worker 1.
            sleep(Duration::from_millis(20)).await;
            gate.open();
            for j in joins {
                j.await;
            }
        });
        assert_eq!(
            threads.lock().unwrap().len(),
            2,
            "both workers ran the woken tasks"
        );
        // Every wake queued on worker 0, so worker 1 ran its share by stealing.
        let m = rt.metrics();
        assert!(m.steals >= 1, "{m:?}");
        assert!(m.polls >= 16, "8 tasks polled at least twice each: {m:?}");
        assert_eq!((m.tasks_spawned, m.tasks_alive), (8, 0), "{m:?}");
    }

    #[test]
    fn schedtrace_values_parse_as_milliseconds() {
        assert_eq!(
            parse_schedtrace(Some("1000")),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            parse_schedtrace(Some(" 25 ")),
            Ok(Some(Duration::from_millis(25)))
        );
        assert_eq!(parse_schedtrace(Some("0")), Ok(None));
        assert_eq!(parse_schedtrace(Some("")), Ok(None));
        for bad in ["1s", "-5", "1.5", "many", "99999999999999999999999"] {
            assert_eq!(parse_schedtrace(Some(bad)), Err(()), "{bad}");
        }
        assert_eq!(parse_schedtrace(None), Err(()), "not UTF-8");
    }

    #[test]
    fn a_schedtrace_line_reads_like_go() {
        // `Metrics` is non-exhaustive: built field by field.
        let mut metrics = Metrics::default();
        (metrics.workers, metrics.idle_workers) = (2, 1);
        (metrics.tasks_alive, metrics.tasks_spawned) = (5, 9);
        metrics.local_queue_depths = vec![0, 3];
        (metrics.steals, metrics.parks) = (2, 7);
        (metrics.pds_in_use, metrics.timers_pending) = (4, 1);
        (metrics.readiness_waits, metrics.events_delivered) = (40, 38);
        assert_eq!(
            schedtrace_line(Duration::from_millis(1000), &metrics),
            "SCHED 1000ms: workers=2 idle=1 tasks=5 spawned=9 runq=[0 3] inject=0 steals=2 \
             parks=7 pds=4 timers=1 waits=40 events=38\n"
        );
    }
}
