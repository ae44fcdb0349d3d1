//! Runtime metrics: a [`Metrics`] snapshot, read from per-worker counters (Go: the numbers
//! `GODEBUG=schedtrace` prints).
//!
//! Every count goes to the counters of the worker whose thread does the work (threads that are
//! not workers share one extra set), each set on its own cache line, so counting never makes
//! workers contend; a snapshot sums them. What only the worker loop counts (polls, steals,
//! parks, source polls and their events) has one writer, its worker's thread, and is a plain
//! Relaxed load and store; spawns, unfinished drops and in-line events may come from any
//! thread and use a Relaxed add. The sums are not one
//! atomic picture: while tasks run, `tasks_alive` may be off by the tasks that started or
//! finished during the read. On a quiescent scheduler they are exact.

use alloc::vec::Vec;
use core::fmt;

use super::idle::RUNNING;
use super::Shared;
use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a scheduler's activity: [`Handle::metrics`](super::Handle::metrics),
/// [`Scheduler::metrics`](super::Scheduler::metrics).
///
/// Counts (`tasks_spawned`, `polls`, ...) only grow, from the scheduler's creation; depths
/// (`injection_queue_depth`, `timers_pending`, ...) are the state at the time of the read.
/// `Display` prints it on one line, in the field order of Go's `GODEBUG=schedtrace`:
/// `workers=2 idle=1 tasks=5 spawned=9 runq=[0 3] inject=0 steals=2 parks=7 pds=4 timers=1
/// waits=40 events=38`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Workers of the scheduler (Go: `gomaxprocs`).
    pub workers: usize,
    /// Workers parked or blocked in the readiness source (Go: `idleprocs`).
    pub idle_workers: usize,
    /// Tasks spawned and not yet finished: neither completed nor dropped unfinished.
    pub tasks_alive: u64,
    /// Tasks ever spawned.
    pub tasks_spawned: u64,
    /// Task polls: how many times a worker ran a task.
    pub polls: u64,
    /// Successful steals: how many times a worker took half of another's queue (Go:
    /// `runqsteal`).
    pub steals: u64,
    /// How many times a worker parked through [`Park::park`](super::Park::park) (Go: `stopm`).
    pub parks: u64,
    /// Tasks in the shared injection queue (Go: `runqsize`, the global run queue).
    pub injection_queue_depth: usize,
    /// Tasks in each worker's local run queue, by worker id (Go: each P's `runq` length).
    pub local_queue_depths: Vec<usize>,
    /// pollDescs open (allocated and not yet freed).
    pub pds_in_use: usize,
    /// Entries in the timer heap: sleeps and deadlines, including dead ones not yet compacted
    /// away (see [`Handle::timers_pending`](super::Handle::timers_pending)).
    pub timers_pending: usize,
    /// Tasks parked on pollDescs (Go: `netpollWaiters`).
    pub io_waiters: usize,
    /// Calls into the readiness source's `poll`, blocking or not (Go: `netpoll(delay)` calls).
    pub readiness_waits: u64,
    /// Readiness events handed to pollDescs: those the source reported, plus those delivered
    /// in-line with [`IoHandle::ready`](super::IoHandle::ready) (Go: `netpollready` calls).
    pub events_delivered: u64,
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workers={} idle={} tasks={} spawned={} runq=[",
            self.workers, self.idle_workers, self.tasks_alive, self.tasks_spawned
        )?;
        for (i, depth) in self.local_queue_depths.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{depth}")?;
        }
        write!(
            f,
            "] inject={} steals={} parks={} pds={} timers={} waits={} events={}",
            self.injection_queue_depth,
            self.steals,
            self.parks,
            self.pds_in_use,
            self.timers_pending,
            self.readiness_waits,
            self.events_delivered
        )
    }
}

/// One worker's counters (or the non-workers' set). Aligned to 128 bytes so that two sets
/// never share a cache line (two lines: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
pub(super) struct Counters {
    // Written by any thread (`bump`).
    spawned: AtomicU64,
    /// Tasks dropped before they completed.
    dropped_unfinished: AtomicU64,
    /// Events delivered through `IoHandle::ready`.
    events_inline: AtomicU64,
    // Written only by this worker's thread (`bump_owned`).
    completed: AtomicU64,
    polls: AtomicU64,
    steals: AtomicU64,
    parks: AtomicU64,
    source_waits: AtomicU64,
    /// Events returned by this worker's polls of the source.
    events_polled: AtomicU64,
}

/// Adds `n` to a counter any thread may write. Relaxed: a statistic, ordered with nothing; a
/// snapshot only sums.
fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Adds `n` to a counter that only the calling worker's thread writes: a load and a store, no
/// locked read-modify-write on the hot path. Relaxed: as [`bump`].
fn bump_owned(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Reads a counter. Relaxed: as [`bump`].
fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    pub(super) fn new() -> Self {
        Counters {
            spawned: AtomicU64::new(0),
            dropped_unfinished: AtomicU64::new(0),
            events_inline: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            steals: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            source_waits: AtomicU64::new(0),
            events_polled: AtomicU64::new(0),
        }
    }

    // Any thread, through `Shared::counters_here`.

    pub(super) fn count_spawn(&self) {
        bump(&self.spawned, 1);
    }

    pub(super) fn count_dropped_unfinished(&self) {
        bump(&self.dropped_unfinished, 1);
    }

    pub(super) fn count_inline_event(&self) {
        bump(&self.events_inline, 1);
    }

    // Only the worker loop of this set's worker, on its thread.

    pub(super) fn count_polls(&self, polled: u64, completed: u64) {
        bump_owned(&self.polls, polled);
        bump_owned(&self.completed, completed);
    }

    pub(super) fn count_steal(&self) {
        bump_owned(&self.steals, 1);
    }

    pub(super) fn count_park(&self) {
        bump_owned(&self.parks, 1);
    }

    pub(super) fn count_source_wait(&self) {
        bump_owned(&self.source_waits, 1);
    }

    pub(super) fn count_polled_events(&self, n: usize) {
        bump_owned(&self.events_polled, n as u64);
    }
}

impl Shared {
    /// The counters of the calling thread: its worker's if it runs one (or if there is only
    /// one worker, whose set then also takes the rare counts from other threads), else the
    /// set shared by non-worker threads.
    pub(super) fn counters_here(&self) -> &Counters {
        let workers = self.workers.len();
        let id = if workers == 1 {
            0
        } else {
            match self.park.as_ref().and_then(|p| p.current()) {
                Some(w) if w < workers => w,
                _ => workers,
            }
        };
        &self.counters[id]
    }

    /// Sums the counters and reads the queue, timer and pollDesc depths.
    pub(super) fn metrics(&self) -> Metrics {
        let mut m = Metrics {
            workers: self.workers.len(),
            ..Metrics::default()
        };
        let (mut spawned, mut retired) = (0, 0);
        for c in &self.counters {
            spawned += read(&c.spawned);
            retired += read(&c.completed) + read(&c.dropped_unfinished);
            m.polls += read(&c.polls);
            m.steals += read(&c.steals);
            m.parks += read(&c.parks);
            m.readiness_waits += read(&c.source_waits);
            m.events_delivered += read(&c.events_polled) + read(&c.events_inline);
        }
        m.tasks_spawned = spawned;
        // The sums are not taken at one instant; never report a negative count.
        m.tasks_alive = spawned.saturating_sub(retired);
        m.idle_workers = self
            .workers
            .iter()
            // Relaxed: a statistic; the states change under our feet anyway.
            .filter(|s| s.state.load(Ordering::Relaxed) != RUNNING)
            .count();
        m.local_queue_depths = self.workers.iter().map(|s| s.queue.lock().len()).collect();
        m.injection_queue_depth = self.injector.lock().len();
        m.pds_in_use = self.pds.in_use();
        m.timers_pending = self.timers.lock().len();
        m.io_waiters = self.waiters.get();
        m
    }
}
