//! The synchronisation facade: every atomic, cell and lock in `netpoll-core` comes from here.
//!
//! Under `--cfg loom` these are loom's model-checked types; otherwise `core::sync::atomic`,
//! `core::cell` and `spin`. Nothing else in the crate names `core::sync::atomic` directly, so the
//! whole state machine can be loom-checked (house style §13).
#![allow(unsafe_code)]

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Busy-wait hint used by the few bounded spins (a waker hand-off in progress).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A mutual-exclusion lock with a guard API that is the same under loom and without it.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
}

/// The guard returned by [`Mutex::lock`].
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
/// The guard returned by [`Mutex::lock`].
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(not(loom))]
            inner: spin::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        return self.inner.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(not(loom))]
        return self.inner.lock();
    }

    /// The guard if the lock is free now, else `None`.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        // Under loom a poisoned lock (a panicking model) also reads as taken.
        #[cfg(loom)]
        return self.inner.try_lock().ok();
        #[cfg(not(loom))]
        return self.inner.try_lock();
    }
}

/// An `UnsafeCell` with loom's closure-based access API.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T> {
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))]
    inner: core::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell {
            #[cfg(loom)]
            inner: loom::cell::UnsafeCell::new(value),
            #[cfg(not(loom))]
            inner: core::cell::UnsafeCell::new(value),
        }
    }

    /// Runs `f` with a mutable pointer to the contents.
    ///
    /// # Safety
    /// The caller must hold exclusive access to the cell for the duration of `f` (for the waker
    /// slots: the caller owns the slot by the pollDesc protocol, see `poll_desc/state.rs`).
    #[inline]
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        return self.inner.with_mut(f);
        #[cfg(not(loom))]
        return f(self.inner.get());
    }
}

/// A slot holding at most one `Waker`, whose ownership is decided by an external protocol
/// (the pollDesc semaphore, `poll_desc/state.rs`). Go stores the parked G pointer in the
/// semaphore word itself; a `Waker` does not fit, so it lives here.
#[derive(Debug)]
pub(crate) struct WakerCell {
    cell: UnsafeCell<Option<core::task::Waker>>,
}

// SAFETY: every access goes through the `unsafe` methods below, whose callers guarantee
// exclusive access (slot ownership by the semaphore protocol); `Waker` is `Send + Sync`.
unsafe impl Sync for WakerCell {}
// SAFETY: moving a `WakerCell` moves an `Option<Waker>`, which is `Send`.
unsafe impl Send for WakerCell {}

impl WakerCell {
    pub(crate) fn new() -> Self {
        WakerCell {
            cell: UnsafeCell::new(None),
        }
    }

    /// Replaces the contents, returning the old waker.
    ///
    /// # Safety
    /// The caller must own the slot: no other thread may access it until the caller hands
    /// ownership over (for the pollDesc: the caller moved the semaphore to WAIT or WAKING).
    pub(crate) unsafe fn replace(
        &self,
        waker: Option<core::task::Waker>,
    ) -> Option<core::task::Waker> {
        // SAFETY: exclusive access is the caller's contract.
        unsafe {
            self.cell
                .with_mut(|slot| core::mem::replace(&mut *slot, waker))
        }
    }

    /// Whether the slot holds a waker that wakes the same task as `w`.
    ///
    /// # Safety
    /// As [`WakerCell::replace`].
    pub(crate) unsafe fn will_wake(&self, w: &core::task::Waker) -> bool {
        // SAFETY: exclusive access is the caller's contract.
        unsafe {
            self.cell
                .with_mut(|slot| (*slot).as_ref().is_some_and(|cur| cur.will_wake(w)))
        }
    }
}

/// Pins a value in place: a future stored inline in its task, which lives in an `Arc`
/// allocation until it is dropped there (async-task and tokio keep the future inside the task
/// the same way; a `Pin<Box<F>>` would cost a second allocation per task).
///
/// # Safety
/// `value` must never be moved again: not out of its place, not by `mem::swap`/`replace`,
/// until it is dropped in place.
#[inline]
pub(crate) unsafe fn pin_in_place<T: ?Sized>(value: &mut T) -> core::pin::Pin<&mut T> {
    // SAFETY: the caller's contract is exactly `Pin::new_unchecked`'s.
    unsafe { core::pin::Pin::new_unchecked(value) }
}
