//! A failing readiness source stops `try_block_on` with the error, on one worker or several:
//! never a panic, never a hang.

extern crate std;

use alloc::sync::Arc;
use core::time::Duration;
use std::string::String;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Park, RunError, Scheduler};
use crate::source::{Events, Notifier, ReadinessSource};
use crate::time::{Clock, Instant};

struct StdClock(std::time::Instant);

impl Clock for StdClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.elapsed().as_nanos() as u64)
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(StdClock(std::time::Instant::now()))
}

#[derive(Debug, PartialEq, Eq)]
struct Broken(&'static str);

struct NoNotify;

impl Notifier for NoNotify {
    fn notify(&self) {}
}

/// Fails its `fail_at`th poll (1-based) on a thread whose name starts with `on`. Never blocks
/// for more than a millisecond, so a notifier is not needed.
struct FailingSource {
    polls: AtomicUsize,
    fail_at: usize,
    on: &'static str,
}

impl ReadinessSource for FailingSource {
    type Error = Broken;

    fn poll(&self, timeout: Option<Duration>, _: &mut dyn Events) -> Result<(), Broken> {
        let thread = std::thread::current();
        if thread.name().unwrap_or("").starts_with(self.on)
            && self.polls.fetch_add(1, Ordering::Relaxed) + 1 >= self.fail_at
        {
            return Err(Broken("the device is gone"));
        }
        let nap = timeout.map_or(Duration::from_millis(1), |t| {
            t.min(Duration::from_millis(1))
        });
        std::thread::sleep(nap);
        Ok(())
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        Arc::new(NoNotify)
    }
}

#[test]
fn a_failing_source_is_an_error_from_try_block_on() {
    let source = FailingSource {
        polls: AtomicUsize::new(0),
        fail_at: 3,
        on: "",
    };
    let mut sched = Scheduler::new(source, clock());
    let h = sched.handle().clone();
    let r = sched.try_block_on(async move {
        // Bounded: the source fails long before.
        for _ in 0..1000 {
            h.sleep(Duration::from_millis(1)).await;
        }
    });
    assert_eq!(r, Err(RunError::Source(Broken("the device is gone"))));
}

/// Thread park for the workers of the multi-worker test.
#[derive(Default)]
struct ThreadPark(std::sync::Mutex<std::vec::Vec<Option<std::thread::Thread>>>);

impl Park for ThreadPark {
    fn park(&self, _worker: usize) {
        std::thread::park_timeout(Duration::from_millis(10));
    }

    fn unpark(&self, worker: usize) {
        if let Some(Some(t)) = self.0.lock().unwrap().get(worker) {
            t.unpark();
        }
    }
}

/// The source fails on another worker's thread: that worker hands the error over and stops
/// (no panic on its thread), and `try_block_on` returns it.
#[test]
fn a_source_failing_on_another_worker_is_returned_by_try_block_on() {
    let source = FailingSource {
        polls: AtomicUsize::new(0),
        fail_at: 1,
        on: "npA-worker",
    };
    let park = Arc::new(ThreadPark::default());
    let mut sched = Scheduler::with_workers(source, clock(), 2, park.clone());
    let h = sched.handle().clone();
    sched.prepare_workers();
    let worker = sched.worker(1);
    let thread = std::thread::Builder::new()
        .name(String::from("npA-worker-1"))
        .spawn(move || worker.run())
        .unwrap();
    park.0
        .lock()
        .unwrap()
        .extend([None, Some(thread.thread().clone())]);
    let r = sched.try_block_on(async move {
        // Give worker 1 work (and so turns at the poll token) until it fails; bounded.
        for _ in 0..5000 {
            h.spawn(async {});
            h.sleep(Duration::from_millis(1)).await;
        }
    });
    assert_eq!(r, Err(RunError::Source(Broken("the device is gone"))));
    thread
        .join()
        .expect("the failing worker returns, it does not panic");
}
