//! Tasks: a spawned future and its run state (Go: a `g`). The join handle is in `join.rs`.
//!
//! A task is one `Arc` holding the future inline (one allocation per spawn); its [`Waker`] is
//! the same `Arc` (through `alloc::task::Wake`), so waking needs no allocation and no
//! `unsafe`. The future is pinned where it lies: it is dropped there, never moved.
//!
//! ```text
//! IDLE ──wake──▶ SCHEDULED ──run──▶ RUNNING ──Pending──▶ IDLE
//!                    ▲                 │ wake                
//!                    │                 ▼                     
//!                    └──Pending── NOTIFIED          RUNNING ──Ready──▶ COMPLETE
//! ```
//! A task is in at most one run queue at a time, and only the worker that moved it to
//! `RUNNING` polls it, so several workers can share queues later without a second runner.

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use alloc::task::Wake;
use core::future::Future;
use core::task::{Context, Poll, Waker};

use super::join::JoinTarget;
use super::Shared;
use crate::sync::{AtomicU32, Mutex, Ordering};

/// Not queued, not running.
const IDLE: u32 = 0;
/// In a run queue.
const SCHEDULED: u32 = 1;
/// Being polled.
const RUNNING: u32 = 2;
/// Being polled, and woken meanwhile: requeue after the poll.
const NOTIFIED: u32 = 3;
/// The future finished; wakes are ignored.
const COMPLETE: u32 = 4;

/// `Task::worker` before the task first ran.
const NO_WORKER: u32 = u32::MAX;

/// What [`Runnable::run`] did, for the worker's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// The task was not in the scheduled state (a stale queue entry): not polled.
    Skipped,
    /// Polled; the future is pending.
    Polled,
    /// Polled, and the future completed.
    Completed,
}

/// A runnable unit of work in a run queue.
pub(crate) trait Runnable: Send + Sync {
    /// Polls the task once on worker `worker`. Called only by the worker that popped it from a
    /// run queue.
    fn run(self: Arc<Self>, worker: usize) -> Ran;
}

enum Stage<F: Future> {
    /// Pinned in place: never moved out of the task, only dropped there (when it finishes or
    /// the task is freed).
    Running(F),
    Finished(F::Output),
    Taken,
}

struct Core<F: Future> {
    stage: Stage<F>,
    /// The task awaiting this one's [`JoinHandle`](super::JoinHandle); boxed because most
    /// tasks are detached and every idle connection's task should stay small.
    join_waker: Option<Box<Waker>>,
}

pub(crate) struct Task<F: Future> {
    state: AtomicU32,
    /// The worker that last ran the task; a wake queues it there (`NO_WORKER`: none yet).
    worker: AtomicU32,
    shared: Weak<Shared>,
    core: Mutex<Core<F>>,
}

impl<F> Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub(crate) fn new(future: F, shared: Weak<Shared>) -> Arc<Self> {
        Arc::new(Task {
            state: AtomicU32::new(SCHEDULED),
            worker: AtomicU32::new(NO_WORKER),
            shared,
            core: Mutex::new(Core {
                stage: Stage::Running(future),
                join_waker: None,
            }),
        })
    }

    fn schedule(self: Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            // Relaxed: a placement hint; the queue lock orders the hand-over itself.
            let affinity = match self.worker.load(Ordering::Relaxed) {
                NO_WORKER => usize::MAX,
                w => w as usize,
            };
            shared.push_task(self, affinity);
        }
        // The scheduler is gone: the task can never run again; dropping it frees it.
    }
}

impl<F> Wake for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let next = match s {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            // AcqRel: pairs with the runner's CAS out of RUNNING, so a wake during a poll is
            // either seen as NOTIFIED by the runner or finds IDLE and queues the task.
            match self
                .state
                .compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        if s == IDLE {
            self.schedule();
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.clone().wake();
    }
}

impl<F> Runnable for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn run(self: Arc<Self>, worker: usize) -> Ran {
        // Relaxed: a placement hint (see `schedule`).
        self.worker.store(
            u32::try_from(worker).unwrap_or(NO_WORKER),
            Ordering::Relaxed,
        );
        // Acquire: pairs with the waker's AcqRel CAS that queued us.
        if self
            .state
            .compare_exchange(SCHEDULED, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Ran::Skipped;
        }
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let join_waker = {
            let mut core = self.core.lock();
            let Stage::Running(fut) = &mut core.stage else {
                unreachable!("task: RUNNING without a future");
            };
            // SAFETY: the future lives inside this task's `Arc` allocation and is never moved:
            // `Stage::Running` is only ever dropped in place (the assignment below, or the
            // task's drop); `poll_join` replaces only a `Finished` stage.
            #[allow(unsafe_code)]
            let fut = unsafe { crate::sync::pin_in_place(fut) };
            match fut.poll(&mut cx) {
                Poll::Pending => None,
                Poll::Ready(out) => {
                    // Drops the future in place.
                    core.stage = Stage::Finished(out);
                    // Release: publishes the output to the join handle's Acquire load.
                    self.state.store(COMPLETE, Ordering::Release);
                    Some(core.join_waker.take())
                }
            }
        };
        if let Some(join) = join_waker {
            // Woken outside the lock.
            if let Some(w) = join {
                w.wake();
            }
            return Ran::Completed;
        }
        // AcqRel: pairs with `wake`'s CAS (see there).
        match self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(NOTIFIED) => {
                self.state.store(SCHEDULED, Ordering::Release);
                self.schedule();
            }
            Err(s) => unreachable!("task: corrupt state after poll; state = {s}"),
        }
        Ran::Polled
    }
}

impl<F: Future> Drop for Task<F> {
    /// A task freed before it completed (its wakers all dropped while it was pending) is no
    /// longer alive: count it retired, as a completed one is by the worker that ran it.
    fn drop(&mut self) {
        // Relaxed: the last reference is ours; the state no longer changes.
        if self.state.load(Ordering::Relaxed) != COMPLETE {
            if let Some(shared) = self.shared.upgrade() {
                shared.counters_here().count_dropped_unfinished();
            }
        }
    }
}

impl<F> JoinTarget<F::Output> for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<F::Output> {
        // The runner holds this lock for the whole poll. Never wait for it: a join from
        // another worker would spin for the length of that poll, and a task awaiting its own
        // handle would spin forever on its own lock.
        let Some(mut core) = self.core.try_lock() else {
            let joiner_is_self = core::ptr::eq(cx.waker().data(), (self as *const Self).cast());
            if !joiner_is_self {
                // Being polled right now: look again after yielding (the result cannot be
                // ready before the poll ends).
                cx.waker().wake_by_ref();
            }
            // A task awaiting itself never completes (as a goroutine waiting on itself); it
            // is not woken again, so it costs nothing.
            return Poll::Pending;
        };
        match core.stage {
            // Only a finished stage is moved out: a running future stays pinned in place.
            Stage::Finished(_) => match core::mem::replace(&mut core.stage, Stage::Taken) {
                Stage::Finished(out) => Poll::Ready(out),
                _ => unreachable!("task: stage changed under the lock"),
            },
            Stage::Taken => panic!("JoinHandle polled after completion"),
            Stage::Running(_) => {
                if !core
                    .join_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    core.join_waker = Some(Box::new(cx.waker().clone()));
                }
                Poll::Pending
            }
        }
    }

    fn is_finished(&self) -> bool {
        // Acquire: pairs with the Release store of COMPLETE in `run`.
        self.state.load(Ordering::Acquire) == COMPLETE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a task adds around its future, which is stored inline (BENCHMARKS.md's s4
    /// budget: every idle connection is one task).
    #[test]
    fn task_overhead_is_small() {
        type Fut = core::future::Ready<[u64; 7]>;
        let overhead = size_of::<Task<Fut>>() - size_of::<Fut>();
        assert!(overhead <= 40, "a task adds {overhead} bytes to its future");
    }
}
