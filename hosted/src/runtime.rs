//! The runtime users start: a scheduler polling epoll, plus the kernel socket backend.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use netpoll_core::{Clock, Handle, Instant, JoinHandle, Scheduler};

use crate::backend::KernelBackend;
use crate::source::{EpollSource, PollStats, Poller};

/// `CLOCK_MONOTONIC` as a netpoll [`Clock`]. All runtimes of a process share one epoch, so
/// an [`Instant`] from one is meaningful to another.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        let nanos = epoch().elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<(Handle, KernelBackend)>> = const { RefCell::new(None) };
}

/// A netpoll runtime on Linux: one thread running tasks, blocking in `epoll_wait` when idle.
///
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
pub struct Runtime {
    scheduler: Scheduler<EpollSource>,
    backend: KernelBackend,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("handle", self.scheduler.handle())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the epoll instance, its eventfd and the scheduler.
    pub fn new() -> io::Result<Self> {
        let poller = Poller::new()?;
        let scheduler = Scheduler::new(EpollSource::new(poller.clone()), Arc::new(MonotonicClock));
        let backend = KernelBackend::new(poller, scheduler.handle().clone());
        Ok(Runtime { scheduler, backend })
    }

    /// Runs `future` to completion on this thread, with spawned tasks, timers and I/O.
    /// Inside, the free functions ([`spawn`], [`backend`], [`now`], [`sleep`]) use this runtime.
    ///
    /// # Panics
    /// If epoll fails (the epoll descriptor is broken) or a task panics.
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        let previous = CURRENT.with(|c| {
            c.borrow_mut()
                .replace((self.scheduler.handle().clone(), self.backend.clone()))
        });
        struct Restore(Option<(Handle, KernelBackend)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = prev);
            }
        }
        let _restore = Restore(previous);
        self.scheduler.block_on(future)
    }

    /// The scheduler handle (spawn, time, pollDescs).
    pub fn handle(&self) -> &Handle {
        self.scheduler.handle()
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
