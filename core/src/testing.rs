//! An in-memory readiness source and a manual clock: the scheduler with no OS and no threads.
//!
//! The test pushes `(Key, Readiness)` edges (now or at a simulated time) and the source
//! returns them from `poll`. A timed blocking poll with nothing to deliver *advances the
//! clock* by its timeout, so timer tests run in simulated time and are deterministic. A
//! blocking poll that could never return (no timeout, no events, no notification) is a
//! deadlock and fails with [`ManualError::Deadlock`] instead of hanging (Go: "all goroutines
//! are asleep").

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::source::{Events, Key, Notifier, Readiness, ReadinessSource};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::time::{Clock, Instant};

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at [`Instant::ZERO`].
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock::default())
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: a test clock; the scheduler reads it on the same thread.
        self.nanos.fetch_add(d, Ordering::Relaxed);
    }

    /// Sets the clock to `t` if that is later.
    pub fn advance_to(&self, t: Instant) {
        // Relaxed: as in `advance`.
        self.nanos.fetch_max(t.as_nanos(), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        // Relaxed: as in `advance`.
        Instant::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// Why a [`ManualSource`] poll failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualError {
    /// A blocking poll with no timeout, no pending event, no scheduled event and no
    /// notification: nothing could ever wake the scheduler.
    Deadlock,
}

impl fmt::Display for ManualError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadlock: the scheduler would block forever")
    }
}

/// One call of [`ReadinessSource::poll`], as recorded by [`ManualSource::trace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRecord {
    /// The timeout the scheduler passed.
    pub timeout: Option<Duration>,
    /// How many events were returned.
    pub events: usize,
    /// Whether a pending notification ended the poll.
    pub notified: bool,
}

#[derive(Debug, Default)]
struct Queues {
    now: VecDeque<(Key, Readiness)>,
    /// Edges delivered once the clock reaches their time, sorted by time.
    later: Vec<(Instant, Key, Readiness)>,
    trace: Vec<PollRecord>,
}

#[derive(Debug)]
struct ManualNotifier {
    pending: AtomicBool,
    count: AtomicUsize,
}

impl Notifier for ManualNotifier {
    fn notify(&self) {
        // Relaxed count: statistics only.
        self.count.fetch_add(1, Ordering::Relaxed);
        // SeqCst: pairs with the swap in `ManualSource::poll`.
        self.pending.store(true, Ordering::SeqCst);
    }
}

/// An in-memory [`ReadinessSource`]. Cloning gives another handle to the same queues, so a
/// test keeps one while the scheduler owns the other.
#[derive(Debug, Clone)]
pub struct ManualSource {
    clock: Arc<ManualClock>,
    queues: Arc<Mutex<Queues>>,
    notifier: Arc<ManualNotifier>,
}

impl ManualSource {
    /// A source whose timed waits advance `clock`.
    pub fn new(clock: Arc<ManualClock>) -> Self {
        ManualSource {
            clock,
            queues: Arc::new(Mutex::new(Queues::default())),
            notifier: Arc::new(ManualNotifier {
                pending: AtomicBool::new(false),
                count: AtomicUsize::new(0),
            }),
        }
    }

    /// Queues an edge for the next poll.
    pub fn push(&self, key: Key, readiness: Readiness) {
        self.queues.lock().now.push_back((key, readiness));
    }

    /// Queues an edge that arrives when the clock reaches `at`.
    pub fn push_at(&self, at: Instant, key: Key, readiness: Readiness) {
        let mut q = self.queues.lock();
        let i = q.later.partition_point(|e| e.0 <= at);
        q.later.insert(i, (at, key, readiness));
    }

    /// Every poll so far.
    pub fn trace(&self) -> Vec<PollRecord> {
        self.queues.lock().trace.clone()
    }

    /// How many times the notifier was called.
    pub fn notify_count(&self) -> usize {
        // Relaxed: statistics only.
        self.notifier.count.load(Ordering::Relaxed)
    }
}

impl ReadinessSource for ManualSource {
    type Error = ManualError;

    fn poll(&self, timeout: Option<Duration>, events: &mut dyn Events) -> Result<(), ManualError> {
        let mut q = self.queues.lock();
        let blocking = timeout != Some(Duration::ZERO);
        // A blocking poll consumes a pending notification (Go drains the eventfd only then).
        // SeqCst: pairs with the store in `ManualNotifier::notify`.
        let notified = blocking && self.notifier.pending.swap(false, Ordering::SeqCst);
        let now = self.clock.now();
        let mut wake_at = None;
        if q.now.is_empty() && !notified && blocking {
            // Simulated sleep: until the timeout or the next scheduled edge, whichever is first.
            let limit = timeout.map(|d| now + d);
            let next = q.later.first().map(|e| e.0);
            wake_at = match (limit, next) {
                (Some(l), Some(n)) => Some(l.min(n)),
                (l, n) => l.or(n),
            };
            if wake_at.is_none() {
                q.trace.push(PollRecord {
                    timeout,
                    events: 0,
                    notified,
                });
                return Err(ManualError::Deadlock);
            }
        }
        if let Some(t) = wake_at {
            self.clock.advance_to(t);
        }
        let now = self.clock.now();
        let due = q.later.partition_point(|e| e.0 <= now);
        let due: Vec<_> = q.later.drain(..due).collect();
        let mut n = 0;
        for (key, r) in q
            .now
            .drain(..)
            .chain(due.into_iter().map(|(_, k, r)| (k, r)))
        {
            events.push_event(key, r);
            n += 1;
        }
        q.trace.push(PollRecord {
            timeout,
            events: n,
            notified,
        });
        Ok(())
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        self.notifier.clone()
    }
}
