//! Scheduler tests over the in-memory readiness source (`testing::ManualSource`) and a manual
//! clock: no OS, no threads, simulated time.
//!
//! `docs/semantics.md` states the behaviour these tests check. A blocking poll with
//! nothing that could ever end it makes `ManualSource` fail with `Deadlock` instead of hanging,
//! so a lost wake-up fails the test at once.
#![cfg(not(loom))]

use std::future::{poll_fn, Future};
use std::mem::ManuallyDrop;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use futures::future::{self, Either, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use netpoll_core::sched::{RunError, POLL_INTERVAL_TASKS};
use netpoll_core::testing::{ManualClock, ManualError, ManualSource, PollRecord};
use netpoll_core::{
    yield_now, Direction, Events, Handle, Instant, Notifier, PollError, Readiness, ReadinessSource,
    Scheduler,
};

const R: Direction = Direction::Read;
const W: Direction = Direction::Write;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The instant `n` ms after the manual clock's epoch.
fn at(n: u64) -> Instant {
    Instant::ZERO + ms(n)
}

/// A scheduler over a fresh `ManualSource`; the test keeps a clone of the source.
fn setup() -> (Scheduler<ManualSource>, ManualSource, Handle) {
    let clock = ManualClock::new();
    let source = ManualSource::new(clock.clone());
    let sched = Scheduler::new(source.clone(), clock);
    let handle = sched.handle().clone();
    (sched, source, handle)
}

/// A blocking poll record with `timeout`.
fn blocking(timeout: Duration, events: usize, notified: bool) -> PollRecord {
    PollRecord {
        timeout: Some(timeout),
        events,
        notified,
    }
}

/// The non-blocking poll the loop does when something is runnable.
const NONBLOCKING: PollRecord = PollRecord {
    timeout: Some(Duration::ZERO),
    events: 0,
    notified: false,
};

// ===== A readiness source with a hook: "another thread acts while the poller sleeps" =====

type PollHook = Box<dyn FnMut(Option<Duration>) + Send>;

/// Wraps a `ManualSource` and calls a hook at the start of every `poll`, before the inner
/// source decides whether to sleep. A hook that wakes a task or adds a timer plays another
/// thread doing so while the scheduler is blocked in the poller.
#[derive(Clone)]
struct HookSource {
    inner: ManualSource,
    hook: Arc<Mutex<Option<PollHook>>>,
}

impl HookSource {
    fn new(inner: ManualSource) -> Self {
        HookSource {
            inner,
            hook: Arc::new(Mutex::new(None)),
        }
    }

    fn set_hook(&self, hook: impl FnMut(Option<Duration>) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }
}

impl ReadinessSource for HookSource {
    type Error = ManualError;

    fn poll(&self, timeout: Option<Duration>, events: &mut dyn Events) -> Result<(), ManualError> {
        if let Some(hook) = self.hook.lock().unwrap().as_mut() {
            hook(timeout);
        }
        self.inner.poll(timeout, events)
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        self.inner.notifier()
    }
}

fn setup_hooked() -> (Scheduler<HookSource>, HookSource, Handle) {
    let clock = ManualClock::new();
    let source = HookSource::new(ManualSource::new(clock.clone()));
    let sched = Scheduler::new(source.clone(), clock);
    let handle = sched.handle().clone();
    (sched, source, handle)
}

/// Runs `f` once, on the first *blocking* poll.
fn on_first_blocking_poll(f: impl FnOnce() + Send + 'static) -> impl FnMut(Option<Duration>) {
    let mut f = Some(f);
    move |timeout| {
        if timeout != Some(Duration::ZERO) {
            if let Some(f) = f.take() {
                f();
            }
        }
    }
}

// ===== A waker whose first clone runs a hook =====
//
// `PollDesc::poll_wait` clones the task's waker exactly while its semaphore is in WAIT (after
// `NIL → WAIT`, before the commit). A hook there lands an unblocker in Go's
// `netpollblockcommit` window deterministically, through the public API.

struct HookWaker {
    inner: Waker,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

static HOOK_VTABLE: RawWakerVTable =
    RawWakerVTable::new(hook_clone, hook_wake, hook_wake_by_ref, hook_drop);

/// A waker that wakes `inner`, and runs `hook` the first time it is cloned.
fn hook_waker(inner: Waker, hook: impl FnOnce() + Send + 'static) -> Waker {
    let state = Arc::new(HookWaker {
        inner,
        hook: Mutex::new(Some(Box::new(hook))),
    });
    let raw = RawWaker::new(Arc::into_raw(state).cast::<()>(), &HOOK_VTABLE);
    // SAFETY: `raw` carries one strong count of an `Arc<HookWaker>` and `HOOK_VTABLE`'s
    // functions treat it as exactly that; `HookWaker` is `Send + Sync`.
    unsafe { Waker::from_raw(raw) }
}

/// Borrows the `Arc<HookWaker>` behind `data` without consuming its count.
///
/// # Safety
/// `data` must come from `Arc::into_raw` of an `Arc<HookWaker>` that is still alive.
unsafe fn borrow_hook(data: *const ()) -> ManuallyDrop<Arc<HookWaker>> {
    // SAFETY: the caller's contract; `ManuallyDrop` keeps the count unchanged.
    ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<HookWaker>()) })
}

unsafe fn hook_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is a live `Arc<HookWaker>` (the vtable contract).
    let state = unsafe { borrow_hook(data) };
    let hook = state.hook.lock().unwrap().take();
    if let Some(hook) = hook {
        hook();
    }
    let clone = Arc::clone(&state);
    RawWaker::new(Arc::into_raw(clone).cast::<()>(), &HOOK_VTABLE)
}

unsafe fn hook_wake(data: *const ()) {
    // SAFETY: `wake` consumes the waker's strong count, which `from_raw` takes back.
    let state = unsafe { Arc::from_raw(data.cast::<HookWaker>()) };
    state.inner.wake_by_ref();
}

unsafe fn hook_wake_by_ref(data: *const ()) {
    // SAFETY: `data` is a live `Arc<HookWaker>` (the vtable contract).
    let state = unsafe { borrow_hook(data) };
    state.inner.wake_by_ref();
}

unsafe fn hook_drop(data: *const ()) {
    // SAFETY: dropping the waker releases its strong count.
    drop(unsafe { Arc::from_raw(data.cast::<HookWaker>()) });
}

// ===== F. Poller core and scheduler =====

#[test]
fn readiness_between_wait_and_commit_not_lost() {
    // Row 6: the edge lands while the waiter is in WAIT. The commit fails, the waiter resumes at
    // once with "ready" (netpollblock returns true), and it never counted as parked.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    let (h2, key) = (h.clone(), pd.key());
    let first = sched.block_on(async {
        let mut wait = pin!(h.io().wait(&pd, R));
        poll_fn(|cx| {
            let h2 = h2.clone();
            let waker = hook_waker(cx.waker().clone(), move || {
                assert_eq!(h2.waiters(), 0, "the hook runs before the commit");
                h2.io().ready(key, Readiness::READABLE);
            });
            Poll::Ready(wait.as_mut().poll(&mut Context::from_waker(&waker)))
        })
        .await
    });
    assert_eq!(first, Poll::Ready(Ok(())));
    assert_eq!(h.waiters(), 0);
    assert!(
        source.trace().is_empty(),
        "never had to poll: {:?}",
        source.trace()
    );
}

#[test]
fn readiness_while_parked_wakes_the_task() {
    // Row 8 through the scheduler: the edge arrives from the source while the task is parked.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    source.push_at(at(7), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let r = h.io().wait(&pd, R).await;
        (r, h.now(), h.waiters())
    });
    assert_eq!(r, (Ok(()), at(7), 0));
    assert_eq!(
        source.trace()[0],
        PollRecord {
            timeout: None,
            events: 1,
            notified: false
        }
    );
}

#[test]
fn readiness_without_waiter_latches_and_prepare_discards_it() {
    // Rows 10, 2 and 14.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    sched.block_on(async {
        // Latched with nobody waiting: the next wait returns without parking.
        h.io().ready(pd.key(), Readiness::READABLE);
        assert_eq!(h.io().wait(&pd, R).await, Ok(()));
        assert_eq!(h.waiters(), 0);
        // Latched again, then discarded by prepare: the next wait parks.
        h.io().ready(pd.key(), Readiness::READABLE);
        assert_eq!(pd.prepare(R), Ok(()));
        let mut wait = pin!(h.io().wait(&pd, R));
        assert!(futures::poll!(wait.as_mut()).is_pending());
        assert_eq!(h.waiters(), 1);
    });
    // The pending wait was dropped at the end of the block: its registration is undone.
    assert_eq!(h.waiters(), 0);
    assert!(source.trace().is_empty(), "nothing ever blocked");
}

#[test]
fn timeout_or_close_without_waiter_latches_nothing() {
    // Row 12: the error is reported by the next prepare / wait, before parking.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    sched.block_on(async {
        h.io().set_deadline(&pd, &[R], Some(h.now()));
        assert_eq!(pd.prepare(R), Err(PollError::TimedOut));
        assert_eq!(h.io().wait(&pd, R).await, Err(PollError::TimedOut));
        // Expiry is per direction and sticky (Go: `netpolldeadlineimpl` sets `rd = -1`).
        assert_eq!(pd.prepare(W), Ok(()));
        assert_eq!(h.io().wait(&pd, R).await, Err(PollError::TimedOut));
        h.io().evict(&pd);
        assert_eq!(pd.prepare(W), Err(PollError::Closing));
        assert_eq!(h.io().wait(&pd, W).await, Err(PollError::Closing));
        // Closing wins over the expired deadline (Go: `netpollcheckerr` tests `closing` first).
        assert_eq!(h.io().wait(&pd, R).await, Err(PollError::Closing));
    });
    h.io().free(&pd);
    assert_eq!((h.waiters(), h.pds_in_use()), (0, 0));
    assert!(source.trace().is_empty());
}

#[test]
fn stale_generation_event_and_timer_are_dropped() {
    // Go's `fdseq` tag: events and deadline timers for a closed and reused descriptor must not
    // reach the new one; an error-only event from the old fd must not make reads fail.
    let (mut sched, source, h) = setup();
    let old = h.io().open();
    let old_key = old.key();
    h.io().set_deadline(&old, &[R], Some(at(30))); // armed for the old descriptor
    h.io().evict(&old);
    h.io().free(&old);
    let pd = h.io().open();
    assert_eq!(pd.key().slot(), old_key.slot(), "slot reused");
    assert_ne!(pd.key(), old_key, "with a new generation");
    source.push(old_key, Readiness::ERROR);
    source.push_at(at(10), old_key, Readiness::READABLE);
    h.io().set_deadline(&pd, &[R], Some(at(100)));
    let (waited, mid) = sched.block_on(async {
        let waiter = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone()
                .spawn(async move { (h.io().wait(&pd, R).await, h.now()) })
        };
        // After the stale timer (30 ms) and both stale events: nothing reached `pd`.
        h.sleep(ms(50)).await;
        let mid = (pd.check_err(R), h.waiters());
        (waiter.await, mid)
    });
    assert_eq!(mid, (Ok(()), 1));
    assert_eq!(waited, (Err(PollError::TimedOut), at(100)));
    assert_eq!(h.waiters(), 0);
    let delivered: usize = source.trace().iter().map(|p| p.events).sum();
    assert_eq!(delivered, 2, "the source did report both stale events");
}

#[test]
fn waiter_count_is_zero_after_all_io() {
    // Go's NetpollWaiters program: after every kind of wake-up the count is exactly zero, and it
    // matches the parked tasks in between.
    let (mut sched, source, h) = setup();
    let pds: Vec<_> = (0..5).map(|_| h.io().open()).collect();
    source.push_at(at(10), pds[0].key(), Readiness::READABLE); // I/O
    h.io().set_deadline(&pds[1], &[R], Some(at(20))); // deadline timer
    source.push_at(at(30), pds[4].key(), Readiness::BOTH); // both directions of one pd
    let counts = sched.block_on(async {
        let mut joins = Vec::new();
        for (i, pd) in pds.iter().enumerate() {
            let (h, pd) = (h.clone(), pd.clone());
            joins.push(h.clone().spawn(async move {
                if i == 4 {
                    let (r, w) = futures::join!(h.io().wait(&pd, R), h.io().wait(&pd, W));
                    r.and(w)
                } else if i == 3 {
                    // Cancelled: loses a select against a sleep.
                    futures::select! {
                        r = h.io().wait(&pd, R).fuse() => r,
                        _ = h.sleep(ms(25)).fuse() => Err(PollError::TimedOut),
                    }
                } else {
                    h.io().wait(&pd, R).await
                }
            }));
        }
        let mut counts = Vec::new();
        for t in [1, 5, 15, 22, 27, 35, 45] {
            h.sleep_until(at(t)).await;
            counts.push(h.waiters());
            if t == 35 {
                h.io().evict(&pds[2]); // close
            }
        }
        let mut results = Vec::new();
        for j in joins {
            results.push(j.await);
        }
        assert_eq!(
            results,
            [
                Ok(()),
                Err(PollError::TimedOut),
                Err(PollError::Closing),
                Err(PollError::TimedOut),
                Ok(())
            ]
        );
        counts
    });
    // t=1: 6 parked (pd4 has two); 10: pd0 done; 20: pd1 timed out; 25: pd3 cancelled;
    // 30: pd4 both done; 35: pd2 closed.
    assert_eq!(counts, [6, 6, 5, 4, 3, 1, 0]);
    assert_eq!(h.waiters(), 0);
    for pd in &pds[..2] {
        h.io().evict(pd);
    }
    h.io().evict(&pds[3]);
    h.io().evict(&pds[4]);
    for pd in &pds {
        h.io().free(pd);
    }
    assert_eq!((h.waiters(), h.pds_in_use()), (0, 0));
}

#[test]
fn break_before_blocking_poll_makes_it_return_and_coalesces() {
    // TestNetpollBreak: a break issued while nobody blocks makes the *next* blocking poll
    // return at once; repeated breaks coalesce into one early return.
    let (mut sched, source, h) = setup();
    h.io().notify();
    h.io().notify();
    h.io().notify();
    sched.block_on(h.sleep(Duration::from_secs(10)));
    assert_eq!(source.notify_count(), 3);
    assert_eq!(
        source.trace(),
        [
            // Broken at once: the clock did not move.
            blocking(Duration::from_secs(10), 0, true),
            // Slept the whole timeout: the three breaks were consumed by one poll.
            blocking(Duration::from_secs(10), 0, false),
            // The sleep fired: the main future is runnable, so the poll does not block.
            NONBLOCKING,
        ]
    );
    assert_eq!(h.now(), at(10_000));
}

#[test]
fn nonblocking_poll_does_not_consume_break() {
    // Only a blocking poll drains the break (Go drains the eventfd only when delay != 0).
    let (mut sched, source, h) = setup();
    sched.block_on(async {
        yield_now().await; // forces a non-blocking poll
        h.io().notify();
        yield_now().await; // another non-blocking poll: the break stays pending
        h.sleep(ms(5)).await; // the first blocking poll consumes it
    });
    let trace = source.trace();
    let first_blocking = trace
        .iter()
        .position(|p| p.timeout != Some(Duration::ZERO))
        .unwrap();
    assert!(trace[..first_blocking].iter().all(|p| !p.notified));
    assert_eq!(trace[first_blocking], blocking(ms(5), 0, true));
    assert_eq!(trace[first_blocking + 1], blocking(ms(5), 0, false));
}

#[test]
fn wake_during_blocking_poll_breaks_it() {
    // Go: `wakeNetPoller`: whoever readies a task while the poller sleeps must break the poll,
    // so the task runs now and not when the 10 s timer expires.
    let (mut sched, source, h) = setup_hooked();
    let pd = h.io().open();
    let (h2, key) = (h.clone(), pd.key());
    source.set_hook(on_first_blocking_poll(move || {
        h2.io().ready(key, Readiness::READABLE)
    }));
    let r = sched.block_on(async {
        let waiter = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone()
                .spawn(async move { (h.io().wait(&pd, R).await, h.now()) })
        };
        let sleeper = h.spawn(h.sleep(Duration::from_secs(10)));
        let r = waiter.await;
        sleeper.await;
        r
    });
    assert_eq!(
        r,
        (Ok(()), Instant::ZERO),
        "the waiter ran without waiting 10 s"
    );
    let trace = source.inner.trace();
    let first_blocking = trace
        .iter()
        .find(|p| p.timeout != Some(Duration::ZERO))
        .copied();
    assert_eq!(
        first_blocking,
        Some(blocking(Duration::from_secs(10), 0, true))
    );
    assert_eq!(source.inner.notify_count(), 1);
}

#[test]
fn deadline_timer_wakes_poller() {
    // The only activity is one wait with a 50 ms deadline: the poller sleeps exactly until the
    // deadline and the wait times out then (wakeNetPoller + the timer-driven poll delay).
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    let r = sched.block_on(async {
        h.io().set_deadline(&pd, &[R], Some(h.now() + ms(50)));
        (h.io().wait(&pd, R).await, h.now())
    });
    assert_eq!(r, (Err(PollError::TimedOut), at(50)));
    assert_eq!(source.trace(), [blocking(ms(50), 0, false), NONBLOCKING]);
    assert_eq!((h.waiters(), h.timers_pending()), (0, 0));
}

#[test]
fn earlier_timer_during_blocking_poll_breaks_it() {
    // A deadline set (by "another thread") while the poller sleeps 10 s, earlier than that
    // sleep, breaks the poll; the poller re-sleeps until the new deadline.
    let (mut sched, source, h) = setup_hooked();
    let pd = h.io().open();
    let (h2, pd2) = (h.clone(), pd.clone());
    source.set_hook(on_first_blocking_poll(move || {
        h2.io().set_deadline(&pd2, &[R], Some(at(50)));
    }));
    let r = sched.block_on(async {
        let waiter = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone()
                .spawn(async move { (h.io().wait(&pd, R).await, h.now()) })
        };
        let sleeper = h.spawn(h.sleep(Duration::from_secs(10)));
        let r = waiter.await;
        drop(sleeper);
        r
    });
    assert_eq!(r, (Err(PollError::TimedOut), at(50)));
    let blocking_polls: Vec<_> = source
        .inner
        .trace()
        .into_iter()
        .filter(|p| p.timeout != Some(Duration::ZERO))
        .collect();
    assert_eq!(
        blocking_polls,
        [
            blocking(Duration::from_secs(10), 0, true),
            blocking(ms(50), 0, false)
        ]
    );
}

#[test]
fn later_timer_during_blocking_poll_does_not_break_it() {
    // Go: wakeNetPoller breaks only if the new timer is earlier than pollUntil.
    let (mut sched, source, h) = setup_hooked();
    let pd = h.io().open();
    let (h2, pd2) = (h.clone(), pd.clone());
    source.set_hook(on_first_blocking_poll(move || {
        h2.io().set_deadline(&pd2, &[R], Some(at(20_000)));
    }));
    sched.block_on(h.sleep(Duration::from_secs(10)));
    assert_eq!(source.inner.notify_count(), 0);
    assert_eq!(
        source.inner.trace()[0],
        blocking(Duration::from_secs(10), 0, false)
    );
    assert_eq!(h.now(), at(10_000));
}

#[test]
fn busy_tasks_still_poll_io() {
    // A task that never blocks (it only yields) must not starve I/O: the loop polls without
    // blocking every POLL_INTERVAL_TASKS tasks (Go: sysmon's netpoll(0)), so a waiter readied
    // by an event runs long before the busy task finishes.
    const ITERATIONS: usize = 10_000;
    const PUSH_AT: usize = 100;
    let clock = ManualClock::new();
    let manual = ManualSource::new(clock.clone());
    let source = HookSource::new(manual.clone());
    let busy_iter = Arc::new(AtomicUsize::new(0));
    let polled_at = Arc::new(Mutex::new(Vec::new()));
    {
        let (busy_iter, polled_at) = (busy_iter.clone(), polled_at.clone());
        source.set_hook(move |timeout| {
            polled_at
                .lock()
                .unwrap()
                .push((busy_iter.load(Ordering::SeqCst), timeout));
        });
    }
    let mut sched = Scheduler::new(source, clock);
    let h = sched.handle().clone();
    let pd = h.io().open();
    let (waiter_done_at, busy_done) = sched.block_on(async {
        let waiter = {
            let (h, pd, busy_iter) = (h.clone(), pd.clone(), busy_iter.clone());
            h.clone().spawn(async move {
                h.io().wait(&pd, R).await.unwrap();
                busy_iter.load(Ordering::SeqCst)
            })
        };
        let busy = {
            let (busy_iter, manual, key) = (busy_iter.clone(), manual.clone(), pd.key());
            h.spawn(async move {
                for i in 1..=ITERATIONS {
                    busy_iter.store(i, Ordering::SeqCst);
                    if i == PUSH_AT {
                        manual.push(key, Readiness::READABLE);
                    }
                    yield_now().await;
                }
            })
        };
        let done = waiter.await;
        busy.await;
        (done, busy_iter.load(Ordering::SeqCst))
    });
    assert_eq!(busy_done, ITERATIONS);
    let interval = POLL_INTERVAL_TASKS as usize;
    assert!(
        waiter_done_at <= PUSH_AT + 2 * interval,
        "the waiter ran only at busy iteration {waiter_done_at}"
    );
    // Every poll while the busy task ran was non-blocking, and they came at most
    // POLL_INTERVAL_TASKS tasks apart.
    let polls = polled_at.lock().unwrap().clone();
    let during: Vec<_> = polls.iter().filter(|(i, _)| *i < ITERATIONS).collect();
    assert!(during.iter().all(|(_, t)| *t == Some(Duration::ZERO)));
    assert!(
        during.len() >= ITERATIONS / interval,
        "only {} polls for {ITERATIONS} tasks",
        during.len()
    );
    let max_gap = during.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
    assert!(max_gap <= interval, "{max_gap} tasks between two polls");
    // The event was delivered by one of those non-blocking polls.
    let trace = manual.trace();
    let delivered = trace.iter().find(|p| p.events == 1).copied();
    assert_eq!(
        delivered,
        Some(PollRecord {
            timeout: Some(Duration::ZERO),
            events: 1,
            notified: false
        })
    );
    assert_eq!(h.waiters(), 0);
}

// ===== Timers, tasks and the run loop =====

#[test]
fn sleeps_complete_in_deadline_order_then_fifo() {
    let (mut sched, source, h) = setup();
    let log = Arc::new(Mutex::new(Vec::new()));
    sched.block_on(async {
        let mut joins = Vec::new();
        for (name, d) in [("a", 30), ("b", 10), ("c", 20), ("d", 10), ("e", 0)] {
            let (h, log) = (h.clone(), log.clone());
            joins.push(h.clone().spawn(async move {
                h.sleep(ms(d)).await;
                log.lock().unwrap().push((name, h.now()));
            }));
        }
        for j in joins {
            j.await;
        }
    });
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("e", at(0)),
            ("b", at(10)),
            ("d", at(10)),
            ("c", at(20)),
            ("a", at(30))
        ]
    );
    // One blocking poll per distinct deadline, each exactly as long as the gap.
    let sleeps: Vec<_> = source
        .trace()
        .into_iter()
        .filter_map(|p| p.timeout.filter(|t| !t.is_zero()))
        .collect();
    assert_eq!(sleeps, [ms(10), ms(10), ms(10)]);
    assert_eq!(h.timers_pending(), 0);
}

#[test]
fn sleep_until_past_instant_is_ready_at_once() {
    let (mut sched, source, h) = setup();
    sched.block_on(async {
        h.sleep(ms(5)).await;
        h.sleep_until(at(1)).await;
        h.sleep(Duration::ZERO).await;
    });
    assert_eq!(h.now(), at(5));
    assert_eq!(
        source
            .trace()
            .iter()
            .filter(|p| p.timeout == Some(ms(5)))
            .count(),
        1
    );
}

#[test]
fn spawn_join_handle_is_a_future() {
    let (mut sched, _source, h) = setup();
    let detached_ran = Arc::new(AtomicBool::new(false));
    let out = sched.block_on(async {
        let a = h.spawn(async { 40 });
        assert!(
            !a.is_finished(),
            "a task starts on the scheduler's next turn"
        );
        // A JoinHandle awaited from another task.
        let b = {
            let h2 = h.clone();
            h.spawn(async move {
                h2.sleep(ms(3)).await;
                a.await + 2
            })
        };
        // A detached task keeps running.
        {
            let (h2, flag) = (h.clone(), detached_ran.clone());
            drop(h.spawn(async move {
                h2.sleep(ms(1)).await;
                flag.store(true, Ordering::SeqCst);
            }));
        }
        let c = h.spawn(async { "done" });
        let d = h.spawn(async {});
        assert!(!d.is_finished());
        h.sleep(ms(2)).await;
        assert!(
            d.is_finished(),
            "finished tasks report it before being joined"
        );
        (b.await, c.await, h.now())
    });
    assert_eq!(out, (42, "done", at(3)));
    assert!(detached_ran.load(Ordering::SeqCst));
}

#[test]
fn yield_now_interleaves_tasks() {
    let (mut sched, source, h) = setup();
    let log = Arc::new(Mutex::new(Vec::new()));
    sched.block_on(async {
        let mut joins = Vec::new();
        for name in ["a", "b"] {
            let log = log.clone();
            joins.push(h.spawn(async move {
                for i in 0..3 {
                    log.lock().unwrap().push(format!("{name}{i}"));
                    yield_now().await;
                }
            }));
        }
        for j in joins {
            j.await;
        }
    });
    assert_eq!(*log.lock().unwrap(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    assert!(
        source
            .trace()
            .iter()
            .all(|p| p.timeout == Some(Duration::ZERO)),
        "runnable tasks never let the poller block"
    );
}

#[test]
fn deadlock_is_reported_not_hung() {
    // Go: "all goroutines are asleep - deadlock!". A wait nothing can end.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    let r = sched.try_block_on(h.io().wait(&pd, R));
    assert_eq!(r, Err(RunError::Source(ManualError::Deadlock)));
    assert_eq!(source.trace().last().map(|p| p.timeout), Some(None));
}

#[test]
fn close_unblocks_parked_waiter() {
    // Go: `poll_runtime_pollUnblock`: evict from another task wakes both directions with
    // Closing; the descriptor can then be freed.
    let (mut sched, _source, h) = setup();
    let pd = h.io().open();
    let r = sched.block_on(async {
        let closer = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone().spawn(async move {
                h.sleep(ms(10)).await;
                assert_eq!(h.waiters(), 2);
                h.io().evict(&pd);
            })
        };
        let r = futures::join!(h.io().wait(&pd, R), h.io().wait(&pd, W));
        closer.await;
        (r, h.now())
    });
    assert_eq!(
        r,
        ((Err(PollError::Closing), Err(PollError::Closing)), at(10))
    );
    h.io().free(&pd);
    assert_eq!((h.waiters(), h.pds_in_use()), (0, 0));
}

#[test]
fn past_deadline_while_parked_unblocks_promptly() {
    // Moving the deadline into the past wakes the waiter now, not later.
    let (mut sched, _source, h) = setup();
    let pd = h.io().open();
    h.io().set_deadline(&pd, &[R], Some(at(1_000)));
    let r = sched.block_on(async {
        let setter = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone().spawn(async move {
                h.sleep(ms(10)).await;
                h.io().set_deadline(&pd, &[R], Some(at(0)));
            })
        };
        let r = h.io().wait(&pd, R).await;
        setter.await;
        (r, h.now())
    });
    assert_eq!(r, (Err(PollError::TimedOut), at(10)));
}

#[test]
fn deadline_extended_while_parked_times_out_at_new_deadline() {
    // Extending the deadline while blocked: no timeout at the old deadline.
    let (mut sched, _source, h) = setup();
    let pd = h.io().open();
    h.io().set_deadline(&pd, &[R], Some(at(10)));
    let r = sched.block_on(async {
        let setter = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone().spawn(async move {
                h.sleep(ms(5)).await;
                h.io().set_deadline(&pd, &[R], Some(at(30)));
            })
        };
        let r = h.io().wait(&pd, R).await;
        setter.await;
        (r, h.now())
    });
    assert_eq!(r, (Err(PollError::TimedOut), at(30)));
    assert_eq!(h.timers_pending(), 0);
}

#[test]
fn deadline_cleared_while_parked_keeps_waiting() {
    // Clearing the deadline leaves the waiter blocked until I/O arrives.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    h.io().set_deadline(&pd, &[R], Some(at(10)));
    source.push_at(at(40), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let setter = {
            let (h, pd) = (h.clone(), pd.clone());
            h.clone().spawn(async move {
                h.sleep(ms(5)).await;
                h.io().set_deadline(&pd, &[R], None);
            })
        };
        let r = h.io().wait(&pd, R).await;
        setter.await;
        (r, h.now())
    });
    assert_eq!(r, (Ok(()), at(40)));
}

// ===== Other [C] items =====

#[test]
fn spurious_readiness_lets_waiter_wait_again() {
    // A readiness event with nothing to read makes the reader retry, find nothing, and
    // block again; it never returns (0, nil) or EOF spuriously.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    let buffer: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    // A latched spurious edge before the read, and one while it is parked.
    h.io().ready(pd.key(), Readiness::READABLE);
    source.push_at(at(10), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let writer = {
            let (h, pd, buffer) = (h.clone(), pd.clone(), buffer.clone());
            h.clone().spawn(async move {
                h.sleep(ms(20)).await;
                buffer.lock().unwrap().extend_from_slice(b"data");
                h.io().ready(pd.key(), Readiness::READABLE);
            })
        };
        let watcher = {
            let h = h.clone();
            h.clone().spawn(async move {
                h.sleep(ms(15)).await;
                h.waiters() // the reader is parked again after the spurious edge
            })
        };
        // Go's internal/poll read loop.
        let mut wakeups = 0;
        let data = loop {
            let got = std::mem::take(&mut *buffer.lock().unwrap());
            if !got.is_empty() {
                break got;
            }
            h.io().wait(&pd, R).await.unwrap();
            wakeups += 1;
        };
        writer.await;
        (data, wakeups, watcher.await, h.now())
    });
    assert_eq!(r, (b"data".to_vec(), 3, 1, at(20)));
    assert_eq!(h.waiters(), 0);
}

#[test]
fn stale_timer_has_no_effect() {
    // A timer armed for a deadline that was since moved earlier or cleared fires
    // without effect; only the current deadline times the waiter out.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    h.io().set_deadline(&pd, &[R], Some(at(50)));
    h.io().set_deadline(&pd, &[R], Some(at(20))); // the 50 ms timer is now stale
    source.push_at(at(80), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let first = (h.io().wait(&pd, R).await, h.now());
        h.io().set_deadline(&pd, &[R], None);
        let second = (h.io().wait(&pd, R).await, h.now());
        (first, second)
    });
    assert_eq!(r, ((Err(PollError::TimedOut), at(20)), (Ok(()), at(80))));
    // The stale 50 ms timer did fire (the poller woke for it) and was ignored.
    assert!(source.trace().contains(&blocking(ms(30), 0, false)));
    assert_eq!(h.timers_pending(), 0);
}

#[test]
fn cleared_deadline_timer_has_no_effect() {
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    h.io().set_deadline(&pd, &[R], Some(at(10)));
    h.io().set_deadline(&pd, &[R], None);
    source.push_at(at(30), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async { (h.io().wait(&pd, R).await, h.now()) });
    assert_eq!(r, (Ok(()), at(30)));
}

// ===== The wait future inside futures combinators =====

/// Which branch of a `select!` won.
#[derive(Debug, PartialEq)]
enum Won {
    Wait(Result<(), PollError>),
    Sleep(Instant),
}

#[test]
fn combinator_select_wait_wins() {
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    source.push_at(at(5), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        futures::select! {
            r = h.io().wait(&pd, R).fuse() => (Won::Wait(r), h.now()),
            _ = h.sleep(ms(10)).fuse() => (Won::Sleep(h.now()), h.now()),
        }
    });
    assert_eq!(r, (Won::Wait(Ok(())), at(5)));
    assert_eq!(h.waiters(), 0);
}

#[test]
fn combinator_select_sleep_wins_and_cancels_wait() {
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    source.push_at(at(20), pd.key(), Readiness::READABLE);
    source.push_at(at(40), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let first = futures::select! {
            r = h.io().wait(&pd, R).fuse() => Won::Wait(r),
            _ = h.sleep(ms(10)).fuse() => Won::Sleep(h.now()),
        };
        // The losing wait was dropped and unregistered.
        let after_drop = h.waiters();
        // The 20 ms edge arrives with nobody waiting and is latched; prepare drops it
        // (Go's pollReset before each operation), so the next wait parks until 40 ms.
        h.sleep(ms(15)).await;
        assert_eq!(pd.prepare(R), Ok(()));
        let second = (h.io().wait(&pd, R).await, h.now());
        (first, after_drop, second)
    });
    assert_eq!(r, (Won::Sleep(at(10)), 0, (Ok(()), at(40))));
}

#[test]
fn combinator_join_waits_on_both_directions() {
    // Both waits share the task's waker; each must still be woken by its own edge.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    source.push_at(at(10), pd.key(), Readiness::WRITABLE);
    source.push_at(at(20), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let (r, w) = futures::join!(async { (h.io().wait(&pd, R).await, h.now()) }, async {
            (h.io().wait(&pd, W).await, h.now())
        });
        (r, w)
    });
    assert_eq!(r, ((Ok(()), at(20)), (Ok(()), at(10))));
    assert_eq!(h.waiters(), 0);
}

#[test]
fn combinator_futures_unordered_completes_in_event_order() {
    // FuturesUnordered gives each future its own waker: every edge must reach the right one.
    let (mut sched, source, h) = setup();
    let pds: Vec<_> = (0..4).map(|_| h.io().open()).collect();
    for (pd, t) in pds.iter().zip([40, 10, 30, 20]) {
        source.push_at(at(t), pd.key(), Readiness::READABLE);
    }
    let order = sched.block_on(async {
        let mut set: FuturesUnordered<_> = pds
            .iter()
            .enumerate()
            .map(|(i, pd)| h.io().wait(pd, R).map(move |r| (i, r)))
            .collect();
        let mut order = Vec::new();
        while let Some((i, r)) = set.next().await {
            order.push((i, r, h.now()));
        }
        order
    });
    assert_eq!(
        order,
        [
            (1, Ok(()), at(10)),
            (3, Ok(()), at(20)),
            (2, Ok(()), at(30)),
            (0, Ok(()), at(40))
        ]
    );
    assert_eq!(h.waiters(), 0);
}

#[test]
fn combinator_wait_moved_to_another_waker() {
    // A wait first polled by the task (inside `select`), then handed to a FuturesUnordered,
    // which polls it with a different waker. The edge must wake the new waker; a pollDesc that
    // kept the old one would wake the task, FuturesUnordered would find nothing to poll, and
    // the scheduler would report a deadlock.
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    source.push_at(at(20), pd.key(), Readiness::READABLE);
    let r = sched.block_on(async {
        let wait = h.io().wait(&pd, R);
        let sleep = h.sleep(ms(10));
        let Either::Right(((), wait)) = future::select(wait, sleep).await else {
            panic!("the edge comes after the sleep");
        };
        assert_eq!(h.waiters(), 1);
        let mut set = FuturesUnordered::new();
        set.push(wait);
        let r = set.next().await;
        (r, h.now())
    });
    assert_eq!(r, (Some(Ok(())), at(20)));
    assert_eq!(h.waiters(), 0);
}

// ===== Timer heap hygiene =====

/// Closed descriptors' deadline timers and dropped sleeps do not pile up in the heap until
/// they fall due (Go stops a closed descriptor's timers in `pollUnblock`; servers churn
/// deadlines).
#[test]
fn dead_timers_are_compacted_away() {
    let (mut sched, _source, handle) = setup();
    let h = handle.clone();
    sched.block_on(async move {
        let hour = h.now() + Duration::from_secs(3600);
        for i in 0..10_000u64 {
            let pd = h.io().open();
            // Ever-earlier deadlines: each one supersedes the previous timer.
            for j in 0..4 {
                h.io()
                    .set_deadline(&pd, &Direction::BOTH, Some(hour - ms(i * 4 + j)));
            }
            h.io().evict(&pd);
            h.io().free(&pd);
            // A sleep polled once and dropped leaves a timer behind.
            let mut sleep = pin!(h.sleep(Duration::from_secs(7200)));
            let _ = poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await;
        }
        // 10,000 × (8 deadline timers + 1 sleep) were added; nothing is live.
        let pending = h.timers_pending();
        assert!(pending < 1_000, "{pending} dead timers kept");
        // A live deadline survives compaction and still fires.
        let pd = h.io().open();
        h.io().set_deadline(&pd, &[R], Some(h.now() + ms(5)));
        for _ in 0..200 {
            let mut sleep = pin!(h.sleep(Duration::from_secs(7200)));
            let _ = poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await;
        }
        assert_eq!(h.io().wait(&pd, R).await, Err(PollError::TimedOut));
        h.io().evict(&pd);
        h.io().free(&pd);
    });
}

/// A task that awaits its own `JoinHandle` never completes (as a goroutine waiting on itself),
/// but its worker is not stuck: other tasks run and `block_on` returns. (The join once took
/// the lock the running poll holds, and spun forever.)
#[test]
fn a_task_awaiting_its_own_join_handle_does_not_stall_its_worker() {
    let (mut sched, _source, handle) = setup();
    let slot: Arc<Mutex<Option<netpoll_core::JoinHandle<()>>>> = Arc::new(Mutex::new(None));
    let own = slot.clone();
    let polled = Arc::new(AtomicBool::new(false));
    let polled_in_task = polled.clone();
    let selfish = handle.spawn(async move {
        polled_in_task.store(true, Ordering::SeqCst);
        let me = own
            .lock()
            .unwrap()
            .take()
            .expect("the handle is stored before the first poll");
        me.await;
    });
    *slot.lock().unwrap() = Some(selfish);
    let other = handle.spawn(async { 7 });
    assert_eq!(sched.block_on(other), 7);
    assert!(polled.load(Ordering::SeqCst), "the self-joining task ran");
}

/// A join polled while the task has not finished registers and is woken at completion, and
/// one polled after completion returns the output at once.
#[test]
fn join_before_and_after_completion() {
    let (mut sched, _source, handle) = setup();
    let h2 = handle.clone();
    let out = sched.block_on(async move {
        let early = h2.spawn(async {
            yield_now().await;
            yield_now().await;
            1
        });
        let late = h2.spawn(async { 2 });
        // `late` finishes while we wait for `early`.
        let a = early.await;
        assert!(late.is_finished());
        a + late.await
    });
    assert_eq!(out, 3);
}

// ===== Metrics =====

/// Spawned tasks are counted once, polled at least once each, and no longer alive once they
/// completed; a task dropped unfinished is no longer alive either.
#[test]
fn metrics_count_spawned_polled_and_finished_tasks() {
    let (mut sched, _source, h) = setup();
    let before = sched.metrics();
    assert_eq!((before.tasks_spawned, before.tasks_alive), (0, 0));
    assert_eq!((before.workers, before.local_queue_depths.len()), (1, 1));
    let h2 = h.clone();
    let during = sched.block_on(async move {
        let joins: Vec<_> = (0..10)
            .map(|i| {
                h2.spawn(async move {
                    yield_now().await;
                    i
                })
            })
            .collect();
        let queued = h2.metrics();
        let mut sum = 0;
        for j in joins {
            sum += j.await;
        }
        assert_eq!(sum, 45);
        queued
    });
    // Spawned from the main future: queued, not yet run.
    assert_eq!((during.tasks_spawned, during.tasks_alive), (10, 10));
    assert_eq!(
        during.injection_queue_depth + during.local_queue_depths[0],
        10
    );
    let after = sched.metrics();
    assert_eq!((after.tasks_spawned, after.tasks_alive), (10, 0));
    // Each task yields once: two polls each.
    assert_eq!(after.polls, 20);
    assert_eq!(after.steals, 0, "one worker has no one to steal from");
    assert_eq!(after.injection_queue_depth + after.local_queue_depths[0], 0);

    // A task whose only waker is dropped is freed unfinished: not alive any more.
    let (mut sched, _source, h) = setup();
    let h2 = h.clone();
    sched.block_on(async move {
        h2.spawn(future::pending::<()>());
        yield_now().await;
    });
    assert_eq!(sched.metrics().tasks_alive, 0);
    assert_eq!(h.metrics().tasks_spawned, 1);
}

/// A pending sleep is one pending timer; a blocking poll and the events it returns are counted.
#[test]
fn metrics_count_timers_readiness_waits_and_events() {
    let (mut sched, source, h) = setup();
    let pd = h.io().open();
    let h2 = h.clone();
    let sleeping = sched.block_on(async move {
        let mut sleep = pin!(h2.sleep(ms(10)));
        assert!(futures::poll!(sleep.as_mut()).is_pending());
        let m = h2.metrics();
        sleep.await;
        m
    });
    assert_eq!((sleeping.timers_pending, sleeping.pds_in_use), (1, 1));
    let after_sleep = sched.metrics();
    assert_eq!(after_sleep.timers_pending, 0);
    assert_eq!(
        after_sleep.readiness_waits,
        source.trace().len() as u64,
        "every poll of the source is a readiness wait"
    );
    assert_eq!(after_sleep.events_delivered, 0);

    // One event through the source, one in-line through `IoHandle::ready`.
    source.push_at(at(20), pd.key(), Readiness::READABLE);
    let h2 = h.clone();
    let pd2 = pd.clone();
    sched.block_on(async move {
        assert_eq!(h2.io().wait(&pd2, R).await, Ok(()));
        h2.io().ready(pd2.key(), Readiness::WRITABLE);
        assert_eq!(h2.io().wait(&pd2, W).await, Ok(()));
    });
    let m = sched.metrics();
    assert_eq!(m.events_delivered, 2);
    assert_eq!(m.readiness_waits, source.trace().len() as u64);
    assert_eq!(m.io_waiters, 0);
    h.io().evict(&pd);
    h.io().free(&pd);
    assert_eq!(sched.metrics().pds_in_use, 0);
}

/// `Display` prints the fields in schedtrace order, one line.
#[test]
fn metrics_display_is_one_schedtrace_line() {
    let (mut sched, _source, h) = setup();
    let h2 = h.clone();
    sched.block_on(async move {
        h2.spawn(async {}).await;
    });
    let line = sched.metrics().to_string();
    assert!(
        line.starts_with("workers=1 idle=") && !line.contains('\n'),
        "{line}"
    );
    let middle = " tasks=0 spawned=1 runq=[0] inject=0 steals=0 parks=0 pds=0 timers=0 waits=";
    assert!(line.contains(middle), "{line}");
    assert!(line.ends_with(" events=0"), "{line}");
}
