//! loom models of the three races Go's `netpollblock` comments call out
//! (`docs/semantics.md#why-no-wake-up-is-lost`):
//! readiness vs. the park commit, close vs. park, deadline vs. park; plus the Rust-only
//! re-registration and cancellation paths.
//!
//! The invariant in every model is Go's "no lost wake-up": a waiter that returned `Pending`
//! is woken exactly once by the racing unblocker, and afterwards its re-poll returns the
//! outcome (retry or the error); a waiter that did not park was not woken and holds no waker.
//! The waiter count returns to exactly zero (checklist #55 of `docs/semantics.md`) and the
//! descriptor can be freed (no parked waiter left behind, #50).
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p netpoll-core --test loom --release`
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loom::thread;
use netpoll_core::poll_desc::WaiterCount;
use netpoll_core::{Direction, Instant, PollCache, PollDesc, PollError, Readiness};

/// A waker double that counts its wakes; clones alive are the `Arc`'s strong count.
#[derive(Default)]
struct Recorder {
    wakes: AtomicUsize,
}

impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst: test bookkeeping, read after `join`.
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder {
    fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

/// Waker clones held by others (the pollDesc, a pending `Woken`).
fn clones(r: &Arc<Recorder>) -> usize {
    Arc::strong_count(r) - 1
}

fn poll(
    pd: &PollDesc,
    dir: Direction,
    r: &Arc<Recorder>,
    waiters: &WaiterCount,
) -> Poll<Result<(), PollError>> {
    let waker = Waker::from(r.clone());
    let mut cx = Context::from_waker(&waker);
    pd.poll_wait(dir, &mut cx, waiters)
}

/// One waiter racing one unblocker that ends in `expected` (`Ok` for readiness).
fn check_single_race(
    first: Poll<Result<(), PollError>>,
    pd: &PollDesc,
    r: &Arc<Recorder>,
    waiters: &WaiterCount,
    expected: Result<(), PollError>,
) {
    match first {
        Poll::Ready(res) => {
            // Did not park: either the unblocker came first (latched / error at entry) or it
            // hit WAIT and the commit failed (rows 5, 6, 7).
            assert_eq!(res, expected);
            assert_eq!(r.wakes(), 0, "woken although it never parked");
        }
        Poll::Pending => {
            // Parked: the unblocker must have taken and woken the waker (rows 8, 9).
            assert_eq!(r.wakes(), 1, "lost wake-up");
            assert_eq!(poll(pd, Direction::Read, r, waiters), Poll::Ready(expected));
        }
    }
    assert_eq!(clones(r), 0, "waker leaked");
    assert_eq!(waiters.get(), 0, "waiter count");
}

#[test]
fn ready_vs_park() {
    // Go: netpollready (netpollunblock ioready=true) vs netpollblock + netpollblockcommit.
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let r = Arc::new(Recorder::default());
        let notifier = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || pd.ready(pd.key(), Readiness::READABLE).wake(&waiters))
        };
        let first = poll(&pd, Direction::Read, &r, &waiters);
        notifier.join().unwrap();
        check_single_race(first, &pd, &r, &waiters, Ok(()));
        pd.evict().wake(&waiters);
        cache.free(&pd);
    });
}

#[test]
fn evict_vs_park() {
    // Go: poll_runtime_pollUnblock (publishInfo, then netpollunblock) vs netpollblock's
    // "recheck error states after setting gpp to pdWait" (the Dekker pair,
    // `docs/semantics.md#error-versus-park`).
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let r = Arc::new(Recorder::default());
        let closer = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || pd.evict().wake(&waiters))
        };
        let first = poll(&pd, Direction::Read, &r, &waiters);
        closer.join().unwrap();
        check_single_race(first, &pd, &r, &waiters, Err(PollError::Closing));
        // No waiter may be left parked on a closed descriptor.
        cache.free(&pd);
    });
}

#[test]
fn past_deadline_vs_park() {
    // Go: poll_runtime_pollSetDeadline with d < 0 (publishInfo, then netpollunblock) vs
    // netpollblock (checklist #31).
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let r = Arc::new(Recorder::default());
        let setter = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || {
                let u = pd.set_deadline(
                    Instant::from_nanos(100),
                    &[Direction::Read],
                    Some(Instant::from_nanos(50)),
                );
                assert!(u.arm.is_empty());
                u.woken.wake(&waiters);
            })
        };
        let first = poll(&pd, Direction::Read, &r, &waiters);
        setter.join().unwrap();
        check_single_race(first, &pd, &r, &waiters, Err(PollError::TimedOut));
        pd.evict().wake(&waiters);
        cache.free(&pd);
    });
}

#[test]
fn deadline_timer_vs_park() {
    // Go: netpolldeadlineimpl (the timer callback) vs netpollblock.
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let r = Arc::new(Recorder::default());
        let u = pd.set_deadline(
            Instant::ZERO,
            &[Direction::Read],
            Some(Instant::from_nanos(10)),
        );
        assert!(u.woken.is_empty());
        let arm = u.arm[0];
        let timer = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || {
                let fired = pd.deadline_fired(Instant::from_nanos(10), arm);
                assert!(fired.rearm.is_none());
                fired.woken.wake(&waiters);
            })
        };
        let first = poll(&pd, Direction::Read, &r, &waiters);
        timer.join().unwrap();
        check_single_race(first, &pd, &r, &waiters, Err(PollError::TimedOut));
        pd.evict().wake(&waiters);
        cache.free(&pd);
    });
}

#[test]
fn ready_vs_repoll_with_new_waker() {
    // The select!/FuturesUnordered case: a parked wait is polled again with another waker
    // while an edge arrives. Whoever holds the slot last must be the one woken.
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let (old, new) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        assert_eq!(poll(&pd, Direction::Read, &old, &waiters), Poll::Pending);
        let notifier = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || pd.ready(pd.key(), Readiness::READABLE).wake(&waiters))
        };
        let second = poll(&pd, Direction::Read, &new, &waiters);
        notifier.join().unwrap();
        match second {
            // The edge took the old waker first (the task was woken; the re-poll consumed the
            // edge), or landed while the re-registration was in WAIT (commit failed).
            Poll::Ready(res) => {
                assert_eq!(res, Ok(()));
                assert!(old.wakes() <= 1);
                assert_eq!(new.wakes(), 0);
            }
            // Re-registered before the edge: the new waker, and only it, is woken.
            Poll::Pending => {
                assert_eq!((old.wakes(), new.wakes()), (0, 1), "woke a stale waker");
                assert_eq!(
                    poll(&pd, Direction::Read, &new, &waiters),
                    Poll::Ready(Ok(()))
                );
            }
        }
        assert_eq!((clones(&old), clones(&new)), (0, 0), "waker leaked");
        assert_eq!(waiters.get(), 0);
        pd.evict().wake(&waiters);
        cache.free(&pd);
    });
}

#[test]
fn ready_vs_cancel_wait() {
    // The waiting future is dropped while an edge arrives: counted down exactly once, no waker
    // kept, and the edge is either delivered to the (dying) task or stays latched.
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let r = Arc::new(Recorder::default());
        assert_eq!(poll(&pd, Direction::Read, &r, &waiters), Poll::Pending);
        let notifier = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || pd.ready(pd.key(), Readiness::READABLE).wake(&waiters))
        };
        pd.cancel_wait(Direction::Read, &waiters);
        notifier.join().unwrap();
        assert!(r.wakes() <= 1);
        assert_eq!(clones(&r), 0, "waker leaked");
        assert_eq!(waiters.get(), 0);
        // The edge is never lost: it is latched (cancel came first) or was delivered.
        let again = Arc::new(Recorder::default());
        let latched = poll(&pd, Direction::Read, &again, &waiters);
        assert!(
            latched == Poll::Ready(Ok(())) || r.wakes() == 1,
            "edge lost: neither latched nor delivered"
        );
        pd.evict().wake(&waiters);
        cache.free(&pd);
    });
}

#[test]
fn ready_and_evict_vs_park() {
    // Three parties: an edge and a close race the waiter. The waiter ends with "retry" or
    // Closing, never hangs, and the descriptor can be freed.
    loom::model(|| {
        let cache = PollCache::new();
        let pd = cache.alloc();
        let waiters = Arc::new(WaiterCount::new());
        let r = Arc::new(Recorder::default());
        let notifier = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || pd.ready(pd.key(), Readiness::READABLE).wake(&waiters))
        };
        let closer = {
            let (pd, waiters) = (pd.clone(), waiters.clone());
            thread::spawn(move || pd.evict().wake(&waiters))
        };
        let first = poll(&pd, Direction::Read, &r, &waiters);
        notifier.join().unwrap();
        closer.join().unwrap();
        let outcome = match first {
            Poll::Ready(res) => {
                assert_eq!(r.wakes(), 0);
                res
            }
            Poll::Pending => {
                assert_eq!(r.wakes(), 1, "lost wake-up");
                match poll(&pd, Direction::Read, &r, &waiters) {
                    Poll::Ready(res) => res,
                    Poll::Pending => panic!("parked again after close"),
                }
            }
        };
        assert!(
            outcome == Ok(()) || outcome == Err(PollError::Closing),
            "{outcome:?}"
        );
        // Once closed, a fresh wait always reports Closing.
        assert_eq!(
            poll(&pd, Direction::Read, &r, &waiters),
            Poll::Ready(Err(PollError::Closing))
        );
        assert_eq!(clones(&r), 0);
        assert_eq!(waiters.get(), 0);
        cache.free(&pd);
    });
}
