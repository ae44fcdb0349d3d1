//! [`JoinHandle`]: the future of a spawned task's output (Go has none; a goroutine's result
//! travels over a channel).

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::task::Task;

/// Type-erased access to a task's output; implemented by `Task` in `task.rs`.
pub(super) trait JoinTarget<T>: Send + Sync {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<T>;
    fn is_finished(&self) -> bool;
}

/// Awaits a spawned task's output. Dropping it detaches the task, which keeps running.
///
/// A task that panics takes the scheduler down with it (as a panicking goroutine does), so a
/// join never observes a panic.
pub struct JoinHandle<T> {
    task: Arc<dyn JoinTarget<T>>,
}

impl<T> JoinHandle<T> {
    pub(super) fn new<F>(task: Arc<Task<F>>) -> Self
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        JoinHandle { task }
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.task.poll_join(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
