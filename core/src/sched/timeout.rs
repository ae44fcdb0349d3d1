//! [`Handle::timeout`] and [`Handle::timeout_at`]: run a future against a deadline on the
//! scheduler's timer heap (Go: `context.WithTimeout` around a call; tokio: `time::timeout`).
//!
//! The deadline is a [`Sleep`](super::Sleep) polled beside the future, so it costs one timer
//! entry and no clock read per poll. When the sleep fires first, the inner future is dropped
//! in place at once (closing whatever it held, withdrawing its pollDesc waits) and the result
//! is [`Elapsed`]. A future that is ready on the poll where the deadline passes wins: the
//! inner future is always polled first, as tokio does.
//!
//! For socket operations, a pollDesc deadline (`set_read_deadline` and friends in
//! `netpoll-stack`) is the Go-shaped tool: it fails the operation with a timeout error and
//! leaves the connection usable. `timeout` is for any future, socket or not.

use core::fmt;
use core::future::{poll_fn, Future};
use core::pin::{pin, Pin};
use core::task::Poll;
use core::time::Duration;

use super::handle::Handle;
use crate::backend::ErrorKind;
use crate::time::Instant;

/// The error of [`Handle::timeout`] and [`Handle::timeout_at`]: the deadline passed before the
/// future completed. Converts into [`ErrorKind::TimedOut`], netpoll's timeout error (Go:
/// `os.ErrDeadlineExceeded`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    deadline: Instant,
}

impl Elapsed {
    /// The deadline that passed.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl fmt::Debug for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Elapsed")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl core::error::Error for Elapsed {}

impl From<Elapsed> for ErrorKind {
    fn from(_: Elapsed) -> Self {
        ErrorKind::TimedOut
    }
}

impl Handle {
    /// Runs `future` for at most `duration` on this scheduler's clock: `Ok` with its output,
    /// or `Err(Elapsed)` once the time is up, the future then dropped unfinished.
    ///
    /// ```
    /// use core::time::Duration;
    /// use netpoll_core::testing::{ManualClock, ManualSource};
    /// use netpoll_core::Scheduler;
    ///
    /// let clock = ManualClock::new();
    /// let mut sched = Scheduler::new(ManualSource::new(clock.clone()), clock);
    /// let h = sched.handle().clone();
    /// let (quick, slow) = sched.block_on(async {
    ///     let quick = h.timeout(Duration::from_millis(50), async { 7 }).await;
    ///     let slow = h.timeout(Duration::from_millis(50), h.sleep(Duration::from_secs(1))).await;
    ///     (quick, slow)
    /// });
    /// assert_eq!(quick, Ok(7));
    /// assert_eq!(slow.unwrap_err().to_string(), "deadline has elapsed");
    /// ```
    pub fn timeout<F: Future>(
        &self,
        duration: Duration,
        future: F,
    ) -> impl Future<Output = Result<F::Output, Elapsed>> {
        self.timeout_at(self.now() + duration, future)
    }

    /// Runs `future` until `deadline` on this scheduler's clock: `Ok` with its output, or
    /// `Err(Elapsed)` once the deadline passes, the future then dropped unfinished. A
    /// deadline already past still polls the future once.
    pub fn timeout_at<F: Future>(
        &self,
        deadline: Instant,
        future: F,
    ) -> impl Future<Output = Result<F::Output, Elapsed>> {
        let mut sleep = self.sleep_until(deadline);
        async move {
            // An `Option` pinned in place, so that expiry can drop the future before this one
            // completes (`Pin::set`), without unsafe pin projection.
            let mut inner = pin!(Some(future));
            poll_fn(move |cx| {
                if let Some(future) = inner.as_mut().as_pin_mut() {
                    if let Poll::Ready(output) = future.poll(cx) {
                        return Poll::Ready(Ok(output));
                    }
                }
                if Pin::new(&mut sleep).poll(cx).is_ready() {
                    inner.set(None);
                    return Poll::Ready(Err(Elapsed { deadline }));
                }
                Poll::Pending
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::sync::Arc;
    use core::time::Duration;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Elapsed;
    use crate::backend::ErrorKind;
    use crate::testing::{ManualClock, ManualSource};
    use crate::time::Instant;
    use crate::{Handle, Scheduler};

    fn setup() -> (Scheduler<ManualSource>, Handle) {
        let clock = ManualClock::new();
        let sched = Scheduler::new(ManualSource::new(clock.clone()), clock);
        let handle = sched.handle().clone();
        (sched, handle)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sets its flag when dropped: shows when the inner future goes away.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_future_done_in_time_returns_its_output_at_its_own_time() {
        let (mut sched, h) = setup();
        let out = sched.block_on(async {
            h.timeout(ms(30), async {
                h.sleep(ms(10)).await;
                "done"
            })
            .await
        });
        assert_eq!(out, Ok("done"));
        assert_eq!(h.now(), Instant::ZERO + ms(10));
    }

    #[test]
    fn expiry_returns_elapsed_at_the_deadline_and_drops_the_future_first() {
        let (mut sched, h) = setup();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let (out, dropped_at_expiry) = sched.block_on(async {
            let long_sleep = h.sleep(ms(1000));
            let out = h
                .timeout(ms(25), async move {
                    let _flag = flag;
                    long_sleep.await;
                })
                .await;
            (out, dropped.load(Ordering::SeqCst))
        });
        let elapsed = out.unwrap_err();
        assert_eq!(elapsed.deadline(), Instant::ZERO + ms(25));
        assert!(dropped_at_expiry, "the inner future is dropped on expiry");
        assert_eq!(h.now(), Instant::ZERO + ms(25));
    }

    #[test]
    fn a_past_deadline_still_polls_the_future_once() {
        let (mut sched, h) = setup();
        let (ready, pending) = sched.block_on(async {
            h.sleep(ms(5)).await;
            let past = Instant::ZERO + ms(1);
            let ready = h.timeout_at(past, async { 1 }).await;
            let pending = h.timeout_at(past, h.sleep(ms(10))).await;
            (ready, pending)
        });
        assert_eq!(ready, Ok(1));
        assert_eq!(
            pending,
            Err(Elapsed {
                deadline: Instant::ZERO + ms(1)
            })
        );
        assert_eq!(h.now(), Instant::ZERO + ms(5));
    }

    #[test]
    fn elapsed_is_netpolls_timeout_error() {
        let e = Elapsed {
            deadline: Instant::ZERO,
        };
        assert_eq!(ErrorKind::from(e), ErrorKind::TimedOut);
        assert_eq!(std::format!("{e}"), "deadline has elapsed");
        assert!(std::format!("{e:?}").starts_with("Elapsed { deadline:"));
    }

    #[test]
    fn timeouts_in_spawned_tasks_fire_in_deadline_order() {
        let (mut sched, h) = setup();
        let results = sched.block_on(async {
            let tasks: alloc::vec::Vec<_> = [30u64, 10, 20]
                .into_iter()
                .map(|limit| {
                    let h2 = h.clone();
                    h.spawn(async move {
                        let r = h2.timeout(ms(limit), h2.sleep(ms(15))).await;
                        (limit, r.is_ok(), h2.now())
                    })
                })
                .collect();
            let mut out = alloc::vec::Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        });
        assert_eq!(
            results,
            [
                (30, true, Instant::ZERO + ms(15)),
                (10, false, Instant::ZERO + ms(10)),
                (20, true, Instant::ZERO + ms(15)),
            ]
        );
    }
}
