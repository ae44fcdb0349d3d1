//! State-by-state unit tests of [`PollDesc`], in the manner of smoltcp's TCP tests.
//!
//! Each banner names the semaphore state a test starts from (`docs/semantics.md#semaphore-states`),
//! and each test names the rows of `docs/semantics.md#transition-table` it covers ("row 6") and
//! the conformance checklist items of `docs/semantics.md` it checks ("#53"). A [`CountingWaker`]
//! double stands in for the parked task; its counters and the descriptor's fields ([`sanity!`]) are
//! asserted after every step, so an extra wake, a leaked waker clone or an off-by-one waiter count
//! fails at the step that caused it.
//!
//! The WAIT state exists only inside [`PollDesc::poll_wait`], between its `NIL → WAIT` CAS and
//! the commit. Those tests drive the waiter's two halves ([`begin_wait`], then
//! [`PollDesc::commit`]) separately and put the racing unblocker between them, exactly where Go's
//! `netpollblockcommit` race happens. `tests/loom.rs` checks the same races under every
//! interleaving.

extern crate std;

use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::task::{Context, Poll, Waker};
use std::thread;

use super::state::*;
use super::*;
use crate::sync::AtomicUsize;

const R: Direction = Direction::Read;
const W: Direction = Direction::Write;

// ===== Doubles and helpers =====

/// Counts the wakes of one simulated task. Built on `alloc::task::Wake`, so every `Waker` made
/// from it is a clone of the same `Arc`: the number of clones alive outside the test is the
/// `Arc`'s strong count minus the test's own reference, which shows both clones (the pollDesc
/// stores one when parking) and drops (it releases it on wake-up or cancellation).
#[derive(Debug, Default)]
struct CountingWaker {
    /// `Waker::wake` calls (by value).
    wakes: AtomicUsize,
    /// `Waker::wake_by_ref` calls.
    wakes_by_ref: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes_by_ref.fetch_add(1, Ordering::SeqCst);
    }
}

/// The test's handle on a [`CountingWaker`].
#[derive(Debug, Clone)]
struct Task(Arc<CountingWaker>);

impl Task {
    fn new() -> Self {
        Task(Arc::new(CountingWaker::default()))
    }

    /// A fresh `Waker` (one clone, dropped by whoever ends up holding it).
    fn waker(&self) -> Waker {
        Waker::from(self.0.clone())
    }

    /// Total wakes, by value and by reference.
    fn wakes(&self) -> usize {
        self.0.wakes.load(Ordering::SeqCst) + self.0.wakes_by_ref.load(Ordering::SeqCst)
    }

    /// Waker clones alive outside this handle. A cloned `Task` counts too, so tests that hand
    /// one to a thread assert only after joining it.
    fn clones(&self) -> usize {
        Arc::strong_count(&self.0) - 1
    }
}

/// Asserts a [`Task`]'s counters: `wakes` woken so far, `clones` wakers still held elsewhere.
macro_rules! assert_task {
    ($task:expr, wakes: $wakes:expr, clones: $clones:expr) => {{
        let t: &Task = &$task;
        assert_eq!(
            (t.wakes(), t.clones()),
            ($wakes, $clones),
            "(wakes, waker clones held)"
        );
    }};
}

/// Everything observable about a descriptor, compared field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    rg: &'static str,
    wg: &'static str,
    closing: bool,
    expired_read: bool,
    expired_write: bool,
    event_err: bool,
    waiters: usize,
}

/// The state of a freshly opened descriptor with nobody waiting.
const FRESH: Snapshot = Snapshot {
    rg: "NIL",
    wg: "NIL",
    closing: false,
    expired_read: false,
    expired_write: false,
    event_err: false,
    waiters: 0,
};

fn snapshot(pd: &PollDesc, waiters: &WaiterCount) -> Snapshot {
    let info = pd.info.load(Ordering::SeqCst);
    let closing = pd.inner.lock().closing;
    assert_eq!(
        closing,
        info & CLOSING != 0,
        "summary word out of sync with `closing`"
    );
    Snapshot {
        rg: sem_name(pd.sem(0).load()),
        wg: sem_name(pd.sem(1).load()),
        closing,
        expired_read: info & EXPIRED_READ != 0,
        expired_write: info & EXPIRED_WRITE != 0,
        event_err: info & EVENT_ERR != 0,
        waiters: waiters.get(),
    }
}

/// `sanity!(pd, waiters, Snapshot { .. })`: the whole observable state, compared at once.
macro_rules! sanity {
    ($pd:expr, $waiters:expr, $expected:expr) => {{
        let expected: Snapshot = $expected;
        assert_eq!(snapshot(&$pd, &$waiters), expected);
    }};
}

/// A cache with one open descriptor and a waiter count.
fn setup() -> (PollCache, Arc<PollDesc>, WaiterCount) {
    let cache = PollCache::new();
    let pd = cache.alloc();
    let waiters = WaiterCount::new();
    sanity!(pd, waiters, FRESH);
    (cache, pd, waiters)
}

/// One `poll_wait` with a fresh waker of `task`.
#[track_caller]
fn poll(
    pd: &PollDesc,
    dir: Direction,
    task: &Task,
    waiters: &WaiterCount,
) -> Poll<Result<(), PollError>> {
    let waker = task.waker();
    let mut cx = Context::from_waker(&waker);
    pd.poll_wait(dir, &mut cx, waiters)
}

/// `poll_wait` must park.
#[track_caller]
fn park(pd: &PollDesc, dir: Direction, task: &Task, waiters: &WaiterCount) {
    assert_eq!(
        poll(pd, dir, task, waiters),
        Poll::Pending,
        "expected to park"
    );
}

/// Wakes what a transition returned, asserting how many tasks it wakes.
#[track_caller]
fn wake(woken: Woken, n: usize, waiters: &WaiterCount) {
    assert_eq!(woken.len(), n, "tasks woken");
    woken.wake(waiters);
}

/// The waiter's first half inside `poll_wait`: `NIL → WAIT` and storing its waker (Go:
/// `netpollblock` up to `gopark`). The test then races an unblocker before `commit`.
#[track_caller]
fn begin_wait(pd: &PollDesc, dir: Direction, task: &Task) {
    let sem = pd.sem(dir.index());
    assert_eq!(sem.cas(NIL, WAIT), Ok(NIL), "begin_wait from NIL");
    assert_eq!(pd.check_err(dir), Ok(()));
    assert!(sem.set_waker(Some(task.waker())).is_none());
}

/// Sets a deadline and checks no timer or wake-up is asked for (past or cleared deadlines).
#[track_caller]
fn set_deadline_now(
    pd: &PollDesc,
    now: u64,
    dirs: &[Direction],
    deadline: Option<u64>,
    woken: usize,
    waiters: &WaiterCount,
) {
    let u = pd.set_deadline(
        Instant::from_nanos(now),
        dirs,
        deadline.map(Instant::from_nanos),
    );
    assert!(u.arm.is_empty(), "no timer expected; got {:?}", u.arm);
    wake(u.woken, woken, waiters);
}

/// Sets a future deadline and returns the single timer it asks for.
#[track_caller]
fn arm(pd: &PollDesc, now: u64, dir: Direction, at: u64) -> TimerArm {
    let u = pd.set_deadline(
        Instant::from_nanos(now),
        &[dir],
        Some(Instant::from_nanos(at)),
    );
    assert!(u.woken.is_empty(), "a future deadline wakes nobody");
    assert_eq!(u.arm.len(), 1, "one timer expected; got {:?}", u.arm);
    let a = u.arm[0];
    assert_eq!(
        (a.key, a.dir, a.when),
        (pd.key(), dir, Instant::from_nanos(at))
    );
    a
}

// ===== Tests for the NIL state =====

#[test]
fn nil_fresh_descriptor() {
    let (cache, pd, _waiters) = setup();
    assert_eq!(
        pd.key().generation(),
        1,
        "generation is never 0 while in use"
    );
    assert_eq!(pd.check_err(R), Ok(()));
    assert_eq!(pd.check_err(W), Ok(()));
    assert_eq!(cache.in_use(), 1);
    assert_eq!(cache.get(pd.key()).map(|p| p.key()), Some(pd.key()));
}

#[test]
fn nil_ready_latches_without_waking() {
    // Row 10: readiness with nobody waiting is latched.
    let (_cache, pd, waiters) = setup();
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            ..FRESH
        }
    );
    wake(pd.ready(pd.key(), Readiness::WRITABLE), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            wg: "READY",
            ..FRESH
        }
    );
}

#[test]
fn nil_empty_readiness_changes_nothing() {
    let (_cache, pd, waiters) = setup();
    wake(pd.ready(pd.key(), Readiness::EMPTY), 0, &waiters);
    sanity!(pd, waiters, FRESH);
}

#[test]
fn nil_poll_wait_parks() {
    // Rows 1 and 4: NIL → WAIT → PARKED, counted once, the waker stored once.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn nil_prepare_is_a_no_op() {
    let (_cache, pd, waiters) = setup();
    assert_eq!(pd.prepare(R), Ok(()));
    assert_eq!(pd.prepare(W), Ok(()));
    sanity!(pd, waiters, FRESH);
}

#[test]
fn nil_past_deadline_latches_nothing() {
    // Row 12: a timeout with nobody waiting changes no semaphore; the error lives in the
    // summary word and the next prepare / poll_wait reports it before parking (#53).
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    set_deadline_now(&pd, 100, &[R], Some(50), 0, &waiters);
    let expired = Snapshot {
        expired_read: true,
        ..FRESH
    };
    sanity!(pd, waiters, expired);
    assert_eq!(pd.prepare(R), Err(PollError::TimedOut));
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    assert_task!(t, wakes: 0, clones: 0);
    sanity!(pd, waiters, expired);
    // #34: the write direction is unaffected.
    assert_eq!(pd.prepare(W), Ok(()));
    park(&pd, W, &t, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
}

#[test]
fn nil_close_latches_nothing() {
    // Row 12 for close: evict with nobody waiting wakes nobody and latches nothing.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.evict(), 0, &waiters);
    let closing = Snapshot {
        closing: true,
        ..FRESH
    };
    sanity!(pd, waiters, closing);
    assert_eq!(pd.prepare(R), Err(PollError::Closing));
    assert_eq!(pd.prepare(W), Err(PollError::Closing));
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    assert_eq!(
        poll(&pd, W, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    assert_task!(t, wakes: 0, clones: 0);
    sanity!(pd, waiters, closing);
}

#[test]
fn nil_deadline_equal_to_now_is_expired() {
    // #36 (Go's `setDeadlineImpl`): "don't confuse deadline right now with no deadline".
    let (_cache, pd, waiters) = setup();
    set_deadline_now(&pd, 100, &[W], Some(100), 0, &waiters);
    assert_eq!(pd.check_err(W), Err(PollError::TimedOut));
    assert_eq!(pd.check_err(R), Ok(()));
}

#[test]
fn nil_huge_deadline_never_expires() {
    // #37: the far future arms a timer and is not "expired".
    let (_cache, pd, waiters) = setup();
    let a = arm(&pd, 100, R, u64::MAX);
    assert_eq!(a.when, Instant::MAX);
    assert_eq!(pd.check_err(R), Ok(()));
    sanity!(pd, waiters, FRESH);
}

#[test]
fn nil_clearing_expiry_wakes_nobody() {
    // #33: `None` clears the expired bit and stops timers; it never wakes a waiter.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    set_deadline_now(&pd, 100, &[R], Some(1), 0, &waiters);
    set_deadline_now(&pd, 100, &[R], None, 0, &waiters);
    sanity!(pd, waiters, FRESH);
    park(&pd, R, &t, &waiters);
    set_deadline_now(&pd, 100, &[R], None, 0, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn nil_error_event_is_read_only_and_cleared_by_next_event() {
    // Go: pollEventErr applies to reads only; the next non-error event clears it.
    let (_cache, pd, waiters) = setup();
    wake(pd.ready(pd.key(), Readiness::ERROR), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            wg: "READY",
            event_err: true,
            ..FRESH
        }
    );
    assert_eq!(pd.prepare(R), Err(PollError::NotPollable));
    assert_eq!(pd.prepare(W), Ok(()));
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    assert_eq!(pd.check_err(R), Ok(()));
}

#[test]
fn nil_error_priority_closing_then_timeout_then_event_err() {
    // `netpollcheckerr`'s priority, `docs/semantics.md#poll-errors` (and #45: closed wins over an
    // expired deadline).
    let (_cache, pd, waiters) = setup();
    wake(pd.ready(pd.key(), Readiness::ERROR), 0, &waiters);
    assert_eq!(pd.check_err(R), Err(PollError::NotPollable));
    set_deadline_now(&pd, 10, &[R, W], Some(5), 0, &waiters);
    assert_eq!(pd.check_err(R), Err(PollError::TimedOut));
    wake(pd.evict(), 0, &waiters);
    assert_eq!(pd.check_err(R), Err(PollError::Closing));
    assert_eq!(pd.check_err(W), Err(PollError::Closing));
}

// ===== Tests for the READY state =====

#[test]
fn ready_is_consumed_without_parking() {
    // Row 2: a latched readiness is consumed; nothing parks, no waker is kept.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    assert_eq!(poll(&pd, R, &t, &waiters), Poll::Ready(Ok(())));
    assert_task!(t, wakes: 0, clones: 0);
    sanity!(pd, waiters, FRESH);
}

#[test]
fn ready_is_binary() {
    // Row 11: a second edge while READY is a no-op, so it is consumed once.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    wake(pd.ready(pd.key(), Readiness::BOTH), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            wg: "READY",
            ..FRESH
        }
    );
    assert_eq!(poll(&pd, R, &t, &waiters), Poll::Ready(Ok(())));
    park(&pd, R, &t, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            wg: "READY",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn ready_prepare_drops_stale_readiness() {
    // Row 14: pollReset discards a stale latched readiness, so the next wait parks.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.ready(pd.key(), Readiness::BOTH), 0, &waiters);
    assert_eq!(pd.prepare(R), Ok(()));
    sanity!(
        pd,
        waiters,
        Snapshot {
            wg: "READY",
            ..FRESH
        }
    );
    park(&pd, R, &t, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
}

#[test]
fn ready_timeout_does_not_clear_but_wait_reports_it_first() {
    // Row 13: a timeout leaves READY latched. Go's pollWait checks netpollcheckerr at entry,
    // *before* netpollblock consumes pdReady, so the fresh wait reports the timeout (#26) and
    // the latched readiness survives for after the deadline is reset.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    set_deadline_now(&pd, 100, &[R], Some(50), 0, &waiters);
    let latched = Snapshot {
        rg: "READY",
        expired_read: true,
        ..FRESH
    };
    sanity!(pd, waiters, latched);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    sanity!(pd, waiters, latched);
    // #30: sticky. prepare also reports it and keeps READY (it resets only without an error).
    assert_eq!(pd.prepare(R), Err(PollError::TimedOut));
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    sanity!(pd, waiters, latched);
    // `docs/semantics.md#timeout-does-not-poison`: after the deadline is cleared, the descriptor
    // works again.
    set_deadline_now(&pd, 100, &[R], None, 0, &waiters);
    assert_eq!(poll(&pd, R, &t, &waiters), Poll::Ready(Ok(())));
    sanity!(pd, waiters, FRESH);
    assert_task!(t, wakes: 0, clones: 0);
}

#[test]
fn ready_close_does_not_clear_but_wait_reports_closing() {
    // Row 13 for close: READY survives evict; the entry check reports Closing, so no operation
    // is retried on a closing descriptor.
    let (cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.ready(pd.key(), Readiness::BOTH), 0, &waiters);
    wake(pd.evict(), 0, &waiters);
    let closing = Snapshot {
        rg: "READY",
        wg: "READY",
        closing: true,
        ..FRESH
    };
    sanity!(pd, waiters, closing);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    assert_eq!(
        poll(&pd, W, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    sanity!(pd, waiters, closing);
    // A latched READY is allowed at close (Go: "blocked" means a waiter, not pdReady).
    cache.free(&pd);
    assert_eq!(cache.in_use(), 0);
}

#[test]
fn ready_directions_are_independent() {
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    wake(pd.ready(pd.key(), Readiness::WRITABLE), 0, &waiters);
    park(&pd, R, &t, &waiters);
    assert_eq!(poll(&pd, W, &t, &waiters), Poll::Ready(Ok(())));
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

// ===== Tests for the WAIT state (racing the commit) =====

#[test]
fn wait_readiness_makes_commit_fail() {
    // Row 6 (#51): readiness between WAIT and the commit is not lost: the commit fails, the
    // waiter resumes at once with "ready", and it is never counted as parked.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    begin_wait(&pd, R, &t);
    assert_task!(t, wakes: 0, clones: 1);
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            ..FRESH
        }
    );
    assert_eq!(
        PollDesc::commit(pd.sem(0), &waiters),
        Some(Poll::Ready(Ok(())))
    );
    assert_task!(t, wakes: 0, clones: 0);
    sanity!(pd, waiters, FRESH);
}

#[test]
fn wait_close_makes_commit_fail() {
    // Row 7: close between WAIT and the commit: the commit fails, nothing is latched, and the
    // re-check (pollWait's loop) reports Closing.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    begin_wait(&pd, R, &t);
    wake(pd.evict(), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            closing: true,
            ..FRESH
        }
    );
    assert_eq!(PollDesc::commit(pd.sem(0), &waiters), None);
    assert_task!(t, wakes: 0, clones: 0);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    assert_eq!(waiters.get(), 0);
}

#[test]
fn wait_past_deadline_makes_commit_fail() {
    // Row 7 for a deadline set in the past (#31).
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    begin_wait(&pd, R, &t);
    set_deadline_now(&pd, 10, &[R], Some(1), 0, &waiters);
    assert_eq!(PollDesc::commit(pd.sem(0), &waiters), None);
    assert_task!(t, wakes: 0, clones: 0);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    sanity!(
        pd,
        waiters,
        Snapshot {
            expired_read: true,
            ..FRESH
        }
    );
}

#[test]
fn wait_deadline_fired_then_reset_parks_again() {
    // Row 7 then `docs/semantics.md#fired-then-reset-deadline`: the timer fires during WAIT, but
    // the deadline is cleared before the waiter re-checks: pollWait's loop finds no error and parks
    // again.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let a = arm(&pd, 0, R, 10);
    begin_wait(&pd, R, &t);
    let fired = pd.deadline_fired(Instant::from_nanos(10), a);
    assert!(fired.rearm.is_none());
    wake(fired.woken, 0, &waiters);
    set_deadline_now(&pd, 10, &[R], None, 0, &waiters);
    assert_eq!(PollDesc::commit(pd.sem(0), &waiters), None);
    park(&pd, R, &t, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn wait_readiness_then_close_still_reports_ready() {
    // Rows 6 + 13: an edge lands in WAIT, then close; the commit sees READY and returns
    // "retry" (Go: netpollblock returns old == pdReady); the next wait reports Closing.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    begin_wait(&pd, R, &t);
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    wake(pd.evict(), 0, &waiters);
    assert_eq!(
        PollDesc::commit(pd.sem(0), &waiters),
        Some(Poll::Ready(Ok(())))
    );
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    assert_task!(t, wakes: 0, clones: 0);
    assert_eq!(waiters.get(), 0);
}

// ===== Tests for the PARKED state =====

#[test]
fn parked_ready_wakes_exactly_once() {
    // Row 8: the edge takes the parked waker and leaves READY for the re-poll.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    let woken = pd.ready(pd.key(), Readiness::READABLE);
    assert_task!(t, wakes: 0, clones: 1); // taken, not yet woken
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            waiters: 1,
            ..FRESH
        }
    );
    wake(woken, 1, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            ..FRESH
        }
    );
    // A duplicate edge before the task runs wakes nobody.
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    assert_eq!(poll(&pd, R, &t, &waiters), Poll::Ready(Ok(())));
    assert_task!(t, wakes: 1, clones: 0);
    sanity!(pd, waiters, FRESH);
}

#[test]
fn parked_ready_other_direction_does_not_wake() {
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    wake(pd.ready(pd.key(), Readiness::WRITABLE), 0, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            wg: "READY",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn parked_evict_wakes_with_closing() {
    // Row 9: close takes the waker, leaves NIL; the re-poll reports Closing.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    wake(pd.evict(), 1, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    let closing = Snapshot {
        closing: true,
        ..FRESH
    };
    sanity!(pd, waiters, closing);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::Closing))
    );
    sanity!(pd, waiters, closing);
}

#[test]
fn parked_evict_wakes_both_directions() {
    let (_cache, pd, waiters) = setup();
    let (r, w) = (Task::new(), Task::new());
    park(&pd, R, &r, &waiters);
    park(&pd, W, &w, &waiters);
    assert_eq!(waiters.get(), 2);
    wake(pd.evict(), 2, &waiters);
    assert_task!(r, wakes: 1, clones: 0);
    assert_task!(w, wakes: 1, clones: 0);
    assert_eq!(waiters.get(), 0);
}

#[test]
fn parked_past_deadline_wakes_with_timeout() {
    // #31: moving the deadline into the past while blocked unblocks promptly.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    set_deadline_now(&pd, 100, &[R], Some(99), 1, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    sanity!(
        pd,
        waiters,
        Snapshot {
            expired_read: true,
            ..FRESH
        }
    );
}

#[test]
fn parked_combined_past_deadline_wakes_both() {
    // #35: one deadline for both directions times out both waiters.
    let (_cache, pd, waiters) = setup();
    let (r, w) = (Task::new(), Task::new());
    park(&pd, R, &r, &waiters);
    park(&pd, W, &w, &waiters);
    set_deadline_now(&pd, 100, &Direction::BOTH, Some(1), 2, &waiters);
    assert_task!(r, wakes: 1, clones: 0);
    assert_task!(w, wakes: 1, clones: 0);
    assert_eq!(
        poll(&pd, R, &r, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    assert_eq!(
        poll(&pd, W, &w, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
}

#[test]
fn parked_deadline_fires_then_expiry_is_sticky() {
    // `netpolldeadlineimpl` + #30: the timer expires the deadline and wakes the waiter; every later
    // wait times out at once until the deadline is changed.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let a = arm(&pd, 0, R, 10);
    park(&pd, R, &t, &waiters);
    let fired = pd.deadline_fired(Instant::from_nanos(10), a);
    assert!(fired.rearm.is_none());
    wake(fired.woken, 1, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    for _ in 0..3 {
        assert_eq!(
            poll(&pd, R, &t, &waiters),
            Poll::Ready(Err(PollError::TimedOut))
        );
        assert_eq!(pd.prepare(R), Err(PollError::TimedOut));
    }
    // The same timer firing again is stale (it was consumed).
    let again = pd.deadline_fired(Instant::from_nanos(20), a);
    assert!(again.woken.is_empty() && again.rearm.is_none());
    sanity!(
        pd,
        waiters,
        Snapshot {
            expired_read: true,
            ..FRESH
        }
    );
    assert_task!(t, wakes: 1, clones: 0);
}

#[test]
fn parked_deadline_moved_later_rearms() {
    // #32: extending the deadline while armed keeps the pending timer, which re-arms itself when
    // it fires early; the waiter times out only at the new deadline.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let a = arm(&pd, 0, R, 10);
    park(&pd, R, &t, &waiters);
    let u = pd.set_deadline(Instant::ZERO, &[R], Some(Instant::from_nanos(20)));
    assert!(
        u.arm.is_empty(),
        "a later deadline reuses the pending timer"
    );
    wake(u.woken, 0, &waiters);
    let fired = pd.deadline_fired(Instant::from_nanos(10), a);
    assert_eq!(
        fired.rearm,
        Some(TimerArm {
            when: Instant::from_nanos(20),
            ..a
        })
    );
    wake(fired.woken, 0, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    assert_eq!(pd.check_err(R), Ok(()));
    let rearm = fired.rearm.unwrap_or(a);
    let fired = pd.deadline_fired(Instant::from_nanos(20), rearm);
    assert!(fired.rearm.is_none());
    wake(fired.woken, 1, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
}

#[test]
fn parked_deadline_moved_earlier_supersedes_old_timer() {
    // `docs/semantics.md#shortening` and #39: an earlier deadline asks for a new timer; the old one
    // becomes stale.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let late = arm(&pd, 0, R, 50);
    let early = arm(&pd, 0, R, 10);
    assert_ne!(late.seq, early.seq);
    park(&pd, R, &t, &waiters);
    let fired = pd.deadline_fired(Instant::from_nanos(10), early);
    wake(fired.woken, 1, &waiters);
    assert_eq!(
        poll(&pd, R, &t, &waiters),
        Poll::Ready(Err(PollError::TimedOut))
    );
    // Reset the deadline, park again: the superseded 50 ns timer must not time us out.
    set_deadline_now(&pd, 10, &[R], None, 0, &waiters);
    park(&pd, R, &t, &waiters);
    let stale = pd.deadline_fired(Instant::from_nanos(50), late);
    assert!(stale.woken.is_empty() && stale.rearm.is_none());
    assert_task!(t, wakes: 1, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn parked_stale_timer_after_clear_is_ignored() {
    // #39: a timer armed for a deadline since cleared does nothing when it fires.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let a = arm(&pd, 0, R, 10);
    park(&pd, R, &t, &waiters);
    set_deadline_now(&pd, 5, &[R], None, 0, &waiters);
    let fired = pd.deadline_fired(Instant::from_nanos(10), a);
    assert!(fired.woken.is_empty() && fired.rearm.is_none());
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn parked_timer_fired_then_reset_parks_again() {
    // #32 (`docs/semantics.md#fired-then-reset-deadline`): the timer woke the waiter, but the
    // deadline was cleared before it ran: the re-poll finds no error and parks again instead of
    // reporting a timeout.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let a = arm(&pd, 0, R, 10);
    park(&pd, R, &t, &waiters);
    wake(
        pd.deadline_fired(Instant::from_nanos(10), a).woken,
        1,
        &waiters,
    );
    set_deadline_now(&pd, 10, &[R], None, 0, &waiters);
    park(&pd, R, &t, &waiters);
    assert_task!(t, wakes: 1, clones: 1);
    assert_eq!(waiters.get(), 1);
}

#[test]
fn parked_repoll_with_same_waker_keeps_registration() {
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    park(&pd, R, &t, &waiters);
    park(&pd, R, &t, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
}

#[test]
fn parked_repoll_with_different_waker_replaces_it() {
    // The select!/join!/FuturesUnordered case: the same wait future is polled again from a
    // context with another waker; only the newest waker may be woken.
    let (_cache, pd, waiters) = setup();
    let (old, new) = (Task::new(), Task::new());
    park(&pd, R, &old, &waiters);
    park(&pd, R, &new, &waiters);
    assert_task!(old, wakes: 0, clones: 0);
    assert_task!(new, wakes: 0, clones: 1);
    assert_eq!(waiters.get(), 1);
    wake(pd.ready(pd.key(), Readiness::READABLE), 1, &waiters);
    assert_task!(old, wakes: 0, clones: 0);
    assert_task!(new, wakes: 1, clones: 0);
    assert_eq!(poll(&pd, R, &new, &waiters), Poll::Ready(Ok(())));
    sanity!(pd, waiters, FRESH);
}

#[test]
fn parked_cancel_wait_releases_registration() {
    // The waiting future was dropped: its waker is released, it is no longer counted, and a
    // later edge is latched instead of waking a dead task.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    pd.cancel_wait(R, &waiters);
    assert_task!(t, wakes: 0, clones: 0);
    sanity!(pd, waiters, FRESH);
    wake(pd.ready(pd.key(), Readiness::READABLE), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            ..FRESH
        }
    );
    // Idempotent: nothing is registered any more.
    pd.cancel_wait(R, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            ..FRESH
        }
    );
}

#[test]
fn parked_cancel_wait_after_wake_keeps_readiness() {
    // Woken by an edge, then dropped before it ran: the unblocker already un-counted it, so the
    // cancel must not decrement again (no underflow), and the edge stays latched.
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    wake(pd.ready(pd.key(), Readiness::READABLE), 1, &waiters);
    pd.cancel_wait(R, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            ..FRESH
        }
    );
    // The same after a close wake: nothing latched, nothing counted.
    let (_cache2, pd2, waiters2) = setup();
    park(&pd2, W, &t, &waiters2);
    wake(pd2.evict(), 1, &waiters2);
    pd2.cancel_wait(W, &waiters2);
    sanity!(
        pd2,
        waiters2,
        Snapshot {
            closing: true,
            ..FRESH
        }
    );
}

#[test]
fn parked_waiter_count_drops_only_after_wake() {
    // `docs/semantics.md#waiter-count` (golang/go#61454): the count is decremented after the task
    // is made runnable, never before: the waker observes the count still including its task.
    struct Observer {
        waiters: Arc<WaiterCount>,
        seen: crate::sync::Mutex<Vec<usize>>,
    }
    impl Wake for Observer {
        fn wake(self: Arc<Self>) {
            self.seen.lock().push(self.waiters.get());
        }
    }
    let cache = PollCache::new();
    let pd = cache.alloc();
    let waiters = Arc::new(WaiterCount::new());
    let obs = Arc::new(Observer {
        waiters: waiters.clone(),
        seen: crate::sync::Mutex::new(Vec::new()),
    });
    let waker = Waker::from(obs.clone());
    let mut cx = Context::from_waker(&waker);
    assert_eq!(pd.poll_wait(R, &mut cx, &waiters), Poll::Pending);
    assert_eq!(pd.poll_wait(W, &mut cx, &waiters), Poll::Pending);
    assert_eq!(waiters.get(), 2);
    pd.evict().wake(&waiters);
    assert_eq!(*obs.seen.lock(), [2, 2]);
    assert_eq!(waiters.get(), 0);
}

// ===== Tests for the WAKING state =====
//
// WAKING lasts only while an unblocker moves the waker out of the slot. These tests stop an
// unblocker half-way (the test thread plays it, by hand) and check that everyone else waits for
// the hand-off to finish instead of touching the slot or losing the edge.

/// The unblocker's first half: `PARKED → WAKING`, taking the waker.
#[track_caller]
fn begin_handoff(pd: &PollDesc, dir: Direction) -> Option<Waker> {
    let sem = pd.sem(dir.index());
    assert_eq!(sem.cas(PARKED, WAKING), Ok(PARKED));
    sem.set_waker(None)
}

#[test]
fn waking_poll_wait_waits_for_handoff() {
    let (_cache, pd, waiters) = setup();
    let waiters = Arc::new(waiters);
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    let taken = begin_handoff(&pd, R);
    let poller = {
        let (pd, waiters, t) = (pd.clone(), waiters.clone(), t.clone());
        thread::spawn(move || poll(&pd, R, &t, &waiters))
    };
    // Give the poller time to reach the spin (the outcome does not depend on it), then finish
    // the I/O hand-off: publish READY, then wake.
    thread::sleep(std::time::Duration::from_millis(5));
    pd.sem(0).state.store(READY, Ordering::SeqCst);
    let mut woken = Woken::default();
    woken.push(taken);
    wake(woken, 1, &waiters);
    let r = poller.join().map_err(|_| "poller panicked");
    assert_eq!(r, Ok(Poll::Ready(Ok(()))));
    assert_task!(t, wakes: 1, clones: 0);
    sanity!(pd, waiters, FRESH);
}

#[test]
fn waking_second_unblocker_does_not_overwrite_edge() {
    // An I/O edge is mid-hand-off when close arrives: close must wait, then see READY and
    // leave it (rows 11/13), not replace the edge with its NIL.
    let (_cache, pd, waiters) = setup();
    let waiters = Arc::new(waiters);
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    let taken = begin_handoff(&pd, R);
    let closer = {
        let pd = pd.clone();
        thread::spawn(move || pd.evict().len())
    };
    thread::sleep(std::time::Duration::from_millis(5));
    pd.sem(0).state.store(READY, Ordering::SeqCst);
    let mut woken = Woken::default();
    woken.push(taken);
    wake(woken, 1, &waiters);
    assert_eq!(closer.join().map_err(|_| "closer panicked"), Ok(0));
    sanity!(
        pd,
        waiters,
        Snapshot {
            rg: "READY",
            closing: true,
            ..FRESH
        }
    );
    assert_task!(t, wakes: 1, clones: 0);
}

#[test]
fn waking_cancel_wait_defers_to_unblocker() {
    let (_cache, pd, waiters) = setup();
    let waiters = Arc::new(waiters);
    let t = Task::new();
    park(&pd, R, &t, &waiters);
    let taken = begin_handoff(&pd, R);
    let canceller = {
        let (pd, waiters) = (pd.clone(), waiters.clone());
        thread::spawn(move || pd.cancel_wait(R, &waiters))
    };
    thread::sleep(std::time::Duration::from_millis(5));
    pd.sem(0).state.store(NIL, Ordering::SeqCst);
    let mut woken = Woken::default();
    woken.push(taken);
    wake(woken, 1, &waiters);
    assert!(canceller.join().is_ok());
    // Counted down once, by the unblocker.
    sanity!(pd, waiters, FRESH);
    assert_task!(t, wakes: 1, clones: 0);
}

// ===== Tests for close, free and reuse (PollCache) =====

#[test]
#[should_panic(expected = "unblock on closing polldesc")]
fn evict_twice_panics() {
    let (_cache, pd, waiters) = setup();
    wake(pd.evict(), 0, &waiters);
    let _ = pd.evict();
}

#[test]
#[should_panic(expected = "close polldesc w/o unblock")]
fn free_without_evict_panics() {
    let (cache, pd, _waiters) = setup();
    cache.free(&pd);
}

#[test]
#[should_panic(expected = "blocked read on closing polldesc")]
fn free_with_parked_reader_panics() {
    // Evict wakes every waiter, so a parked waiter at free time means the caller parked after
    // close without the entry check: forge that state to check the assertion (#50).
    let (cache, pd, waiters) = setup();
    wake(pd.evict(), 0, &waiters);
    pd.sem(0).state.store(PARKED, Ordering::SeqCst);
    cache.free(&pd);
}

#[test]
fn set_deadline_after_close_is_a_no_op() {
    // `poll_runtime_pollSetDeadline` is a no-op on a closing descriptor
    // (`docs/semantics.md#setting-a-deadline`).
    let (_cache, pd, waiters) = setup();
    wake(pd.evict(), 0, &waiters);
    let u = pd.set_deadline(Instant::from_nanos(10), &[R], Some(Instant::from_nanos(20)));
    assert!(u.arm.is_empty() && u.woken.is_empty());
    set_deadline_now(&pd, 10, &[R], Some(1), 0, &waiters);
    sanity!(
        pd,
        waiters,
        Snapshot {
            closing: true,
            ..FRESH
        }
    );
}

#[test]
fn deadline_timer_after_close_is_ignored() {
    let (_cache, pd, waiters) = setup();
    let t = Task::new();
    let a = arm(&pd, 0, R, 10);
    park(&pd, R, &t, &waiters);
    wake(pd.evict(), 1, &waiters);
    let fired = pd.deadline_fired(Instant::from_nanos(10), a);
    assert!(fired.woken.is_empty() && fired.rearm.is_none());
    assert_eq!(pd.check_err(R), Err(PollError::Closing));
}

#[test]
fn reuse_bumps_generation_and_drops_stale_events() {
    // #54: an event carrying the old key is dropped, by the cache and by the pollDesc.
    let (cache, pd, waiters) = setup();
    let t = Task::new();
    let old = pd.key();
    wake(pd.evict(), 0, &waiters);
    cache.free(&pd);
    assert_eq!(cache.in_use(), 0);
    assert!(cache.get(old).is_none());
    let pd2 = cache.alloc();
    assert!(Arc::ptr_eq(&pd, &pd2), "the slot is reused");
    assert_eq!(pd2.key().slot(), old.slot());
    assert_eq!(pd2.key().generation(), old.generation() + 1);
    sanity!(pd2, waiters, FRESH);
    park(&pd2, R, &t, &waiters);
    wake(cache.ready(old, Readiness::BOTH), 0, &waiters);
    wake(pd2.ready(old, Readiness::BOTH), 0, &waiters);
    assert_task!(t, wakes: 0, clones: 1);
    sanity!(
        pd2,
        waiters,
        Snapshot {
            rg: "PARKED",
            waiters: 1,
            ..FRESH
        }
    );
    // The current key still works.
    wake(cache.ready(pd2.key(), Readiness::READABLE), 1, &waiters);
    assert_task!(t, wakes: 1, clones: 0);
    // An event for a slot that was never allocated is dropped too.
    wake(cache.ready(Key::new(99, 1), Readiness::BOTH), 0, &waiters);
}

#[test]
fn reuse_does_not_leak_event_err() {
    // #54 / golang/go#59545: an error-only event for the old descriptor must not make reads on the
    // new one fail with NotPollable, whether it arrived before the free or after the reuse.
    let (cache, pd, waiters) = setup();
    let old = pd.key();
    wake(pd.ready(old, Readiness::ERROR), 0, &waiters);
    assert_eq!(pd.check_err(R), Err(PollError::NotPollable));
    wake(pd.evict(), 0, &waiters);
    cache.free(&pd);
    let pd2 = cache.alloc();
    assert_eq!(pd2.check_err(R), Ok(()));
    wake(cache.ready(old, Readiness::ERROR), 0, &waiters);
    assert_eq!(pd2.check_err(R), Ok(()));
    // The lock-free setter re-checks the generation itself (the race after the tag check).
    pd2.set_event_err(true, old.generation());
    assert_eq!(pd2.check_err(R), Ok(()));
    pd2.set_event_err(true, pd2.key().generation());
    assert_eq!(pd2.check_err(R), Err(PollError::NotPollable));
}

#[test]
fn reuse_clears_latched_readiness_and_deadlines() {
    // Go: poll_runtime_pollOpen resets rg/wg (READY allowed at close), rd/wd and the seqs.
    let (cache, pd, waiters) = setup();
    let a = arm(&pd, 0, R, 10);
    set_deadline_now(&pd, 0, &[W], Some(0), 0, &waiters);
    wake(pd.ready(pd.key(), Readiness::BOTH), 0, &waiters);
    wake(pd.evict(), 0, &waiters);
    cache.free(&pd);
    let pd2 = cache.alloc();
    sanity!(pd2, waiters, FRESH);
    // The old descriptor's timer fires on the reused slot: stale.
    let fired = pd2.deadline_fired(Instant::from_nanos(10), a);
    assert!(fired.woken.is_empty() && fired.rearm.is_none());
    assert_eq!(pd2.check_err(R), Ok(()));
}

#[test]
fn generation_skips_zero_on_wrap() {
    // Key generation 0 is never live (Go: "fdseq is never 0 while in use").
    let (cache, pd, waiters) = setup();
    wake(pd.evict(), 0, &waiters);
    pd.info
        .store(((u32::MAX as u64) << GEN_SHIFT) | CLOSING, Ordering::SeqCst);
    cache.free(&pd);
    let pd2 = cache.alloc();
    assert_eq!(pd2.key().generation(), 1);
}

#[test]
fn separate_slots_for_live_descriptors() {
    let cache = PollCache::new();
    let a = cache.alloc();
    let b = cache.alloc();
    assert_ne!(a.key().slot(), b.key().slot());
    assert_eq!(cache.in_use(), 2);
    let waiters = WaiterCount::new();
    wake(a.ready(b.key(), Readiness::READABLE), 0, &waiters);
    sanity!(a, waiters, FRESH);
}

// ===== Whole-life waiter accounting =====

#[test]
fn waiter_count_returns_to_exactly_zero() {
    // #55 (Go's NetpollWaiters program): every way out of PARKED un-counts exactly once.
    let cache = PollCache::new();
    let waiters = WaiterCount::new();
    let t = Task::new();
    let pds: Vec<_> = (0..3).map(|_| cache.alloc()).collect();
    for pd in &pds {
        park(pd, R, &t, &waiters);
        park(pd, W, &t, &waiters);
    }
    assert_eq!(waiters.get(), 6);
    // I/O on pds[0] read, a timer on pds[0] write.
    wake(pds[0].ready(pds[0].key(), Readiness::READABLE), 1, &waiters);
    set_deadline_now(&pds[0], 5, &[W], Some(5), 1, &waiters);
    assert_eq!(waiters.get(), 4);
    // Both directions of pds[1] at once.
    wake(pds[1].ready(pds[1].key(), Readiness::BOTH), 2, &waiters);
    // Re-polling with another waker and cancelling pds[2] read; closing pds[2].
    park(&pds[2], R, &Task::new(), &waiters);
    assert_eq!(waiters.get(), 2);
    pds[2].cancel_wait(R, &waiters);
    wake(pds[2].evict(), 1, &waiters);
    assert_eq!(waiters.get(), 0);
    assert_eq!(t.clones(), 0, "no waker leaked");
    // And the survivors are usable: consume, re-park, close.
    assert_eq!(poll(&pds[0], R, &t, &waiters), Poll::Ready(Ok(())));
    park(&pds[0], R, &t, &waiters);
    wake(pds[0].evict(), 1, &waiters);
    wake(pds[1].evict(), 0, &waiters);
    for pd in &pds {
        cache.free(pd);
    }
    assert_eq!(waiters.get(), 0);
    assert_eq!(cache.in_use(), 0);
}

#[test]
fn poll_error_messages_are_go_strings() {
    use alloc::string::ToString;
    assert_eq!(
        PollError::Closing.to_string(),
        "use of closed network connection"
    );
    assert_eq!(PollError::TimedOut.to_string(), "i/o timeout");
    assert_eq!(PollError::NotPollable.to_string(), "not pollable");
}

// ===== READ_CLOSED (netpoll extension, no Go equivalent) =====

#[test]
fn read_closed_is_sticky_generation_checked_and_cleared_on_reuse() {
    let cache = PollCache::new();
    let pd = cache.alloc();
    let key = pd.key();
    assert!(!pd.read_closed());
    // An event for another generation does not mark this one.
    let stale = Key::new(key.slot(), key.generation().wrapping_add(7));
    drop(pd.ready(stale, Readiness::READ_CLOSED));
    assert!(!pd.read_closed());
    drop(pd.ready(key, Readiness::READ_CLOSED));
    assert!(pd.read_closed());
    // Later ordinary events and deadline changes keep it.
    drop(pd.ready(key, Readiness::READABLE));
    let update = pd.set_deadline(Instant::ZERO, &[Direction::Read], None);
    assert!(update.arm.is_empty() && update.woken.is_empty());
    assert!(pd.read_closed());
    drop(pd.evict());
    cache.free(&pd);
    let again = cache.alloc();
    assert_eq!(again.key().slot(), key.slot());
    assert!(
        !again.read_closed(),
        "a reused slot starts with its read side open"
    );
}
