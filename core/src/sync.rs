//! The synchronisation facade: every atomic, cell and lock in netpoll comes from here.
//!
//! Under `--cfg loom` these are loom's model-checked types; otherwise `core::sync::atomic`,
//! `core::cell` and `spin`. Nothing else in netpoll (`netpoll-core`, `netpoll-stack`,
//! `netpoll-drivers`) names `core::sync::atomic` directly, so the whole state machine can be
//! loom-checked and every crate builds where the target lacks some atomic width.
//!
//! # Targets without 64-bit atomics
//!
//! Where `target_has_atomic = "64"` holds (x86_64, aarch64, ...), [`AtomicU64`] is
//! `core::sync::atomic::AtomicU64`. On 32-bit microcontrollers that have 32-bit atomics but no
//! 64-bit ones (`thumbv7em-none-eabihf`, `riscv32imac-unknown-none-elf`) it is this module's
//! own `AtomicU64`, whose every operation runs inside `critical_section::with`: an interrupt
//! handler touching the same atomic cannot deadlock against the code it interrupted. The 8- to
//! 32-bit atomics stay the native ones.
//!
//! (`portable-atomic` is not used for this: on targets that do have 32-bit compare-and-swap,
//! its `AtomicU64` takes a global seqlock that spins with interrupts enabled even when its
//! `critical-section` feature is on; that feature only serves targets with no CAS at all.)
//!
//! The final binary must then link exactly one `critical-section` implementation, for
//! example on a single-core Cortex-M:
//!
//! ```toml
//! cortex-m = { version = "0.7", features = ["critical-section-single-core"] }
//! ```
//!
//! (`riscv`'s `critical-section-single-hart` on a single-hart RISC-V; a multi-core chip needs
//! one that also takes a hardware lock.) Without one the link fails with an undefined
//! `_critical_section_1_0_acquire`.
#![allow(unsafe_code)]

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

#[cfg(all(not(loom), target_has_atomic = "64"))]
pub use core::sync::atomic::AtomicU64;
#[cfg(all(not(loom), not(target_has_atomic = "64")))]
pub use critical_atomic::AtomicU64;
#[cfg(loom)]
pub use loom::sync::atomic::AtomicU64;

/// A 64-bit atomic made of a `u64` behind a critical section, for targets without native
/// 64-bit atomics. Host tests build it too (over `critical-section`'s `std` implementation).
#[cfg(all(not(loom), any(test, not(target_has_atomic = "64"))))]
mod critical_atomic {
    use core::cell::Cell;
    use core::fmt;

    use super::Ordering;

    /// `core::sync::atomic::AtomicU64`'s API over `critical_section::with`.
    ///
    /// Every `Ordering` argument is met by the critical section itself: its acquire and
    /// release order all memory accesses around it, which is at least `SeqCst` for the one
    /// value it guards.
    pub struct AtomicU64 {
        value: critical_section::Mutex<Cell<u64>>,
    }

    impl Default for AtomicU64 {
        fn default() -> Self {
            AtomicU64::new(0)
        }
    }

    impl fmt::Debug for AtomicU64 {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&self.load(Ordering::Relaxed), f)
        }
    }

    impl AtomicU64 {
        /// An atomic holding `value`.
        pub const fn new(value: u64) -> Self {
            AtomicU64 {
                value: critical_section::Mutex::new(Cell::new(value)),
            }
        }

        /// Runs `f` on the value inside one critical section.
        #[inline]
        fn with<R>(&self, f: impl FnOnce(&Cell<u64>) -> R) -> R {
            critical_section::with(|cs| f(self.value.borrow(cs)))
        }

        /// The value.
        pub fn load(&self, _order: Ordering) -> u64 {
            self.with(Cell::get)
        }

        /// Stores `value`.
        pub fn store(&self, value: u64, _order: Ordering) {
            self.with(|cell| cell.set(value));
        }

        /// Stores `value`, returning the previous value.
        pub fn swap(&self, value: u64, _order: Ordering) -> u64 {
            self.with(|cell| cell.replace(value))
        }

        /// Stores `new` if the value is `current`; `Ok(previous)` if it did, else
        /// `Err(actual)`.
        pub fn compare_exchange(
            &self,
            current: u64,
            new: u64,
            _success: Ordering,
            _failure: Ordering,
        ) -> Result<u64, u64> {
            self.with(|cell| {
                let previous = cell.get();
                if previous == current {
                    cell.set(new);
                    Ok(previous)
                } else {
                    Err(previous)
                }
            })
        }

        /// As [`AtomicU64::compare_exchange`]; it never fails spuriously.
        pub fn compare_exchange_weak(
            &self,
            current: u64,
            new: u64,
            success: Ordering,
            failure: Ordering,
        ) -> Result<u64, u64> {
            self.compare_exchange(current, new, success, failure)
        }

        /// Applies `f` to the value until it returns `None` (then `Err(value)`) or the value
        /// is replaced (then `Ok(previous)`); one critical section, so one call of `f`.
        pub fn fetch_update(
            &self,
            _set_order: Ordering,
            _fetch_order: Ordering,
            mut f: impl FnMut(u64) -> Option<u64>,
        ) -> Result<u64, u64> {
            self.with(|cell| {
                let previous = cell.get();
                match f(previous) {
                    Some(next) => {
                        cell.set(next);
                        Ok(previous)
                    }
                    None => Err(previous),
                }
            })
        }

        fn fetch_apply(&self, op: impl FnOnce(u64) -> u64) -> u64 {
            self.with(|cell| {
                let previous = cell.get();
                cell.set(op(previous));
                previous
            })
        }

        /// Adds `value` (wrapping), returning the previous value.
        pub fn fetch_add(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v.wrapping_add(value))
        }

        /// Subtracts `value` (wrapping), returning the previous value.
        pub fn fetch_sub(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v.wrapping_sub(value))
        }

        /// Bitwise and with `value`, returning the previous value.
        pub fn fetch_and(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v & value)
        }

        /// Bitwise or with `value`, returning the previous value.
        pub fn fetch_or(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v | value)
        }

        /// Bitwise xor with `value`, returning the previous value.
        pub fn fetch_xor(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v ^ value)
        }

        /// Maximum with `value`, returning the previous value.
        pub fn fetch_max(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v.max(value))
        }

        /// Minimum with `value`, returning the previous value.
        pub fn fetch_min(&self, value: u64, _order: Ordering) -> u64 {
            self.fetch_apply(|v| v.min(value))
        }

        /// The value, through exclusive access (no critical section needed).
        pub fn get_mut(&mut self) -> &mut u64 {
            self.value.get_mut().get_mut()
        }

        /// The value, consuming the atomic.
        pub fn into_inner(self) -> u64 {
            self.value.into_inner().into_inner()
        }
    }

    #[cfg(test)]
    mod tests {
        extern crate std;

        use super::{AtomicU64, Ordering};
        use std::sync::Arc;
        use std::vec::Vec;

        #[test]
        fn operations_match_core_atomic_semantics() {
            let a = AtomicU64::new(u64::MAX - 1);
            assert_eq!(a.fetch_add(3, Ordering::Relaxed), u64::MAX - 1);
            assert_eq!(a.load(Ordering::Acquire), 1, "fetch_add wraps");
            assert_eq!(a.fetch_sub(2, Ordering::Relaxed), 1);
            assert_eq!(a.load(Ordering::Relaxed), u64::MAX);
            assert_eq!(a.fetch_and(0xff00, Ordering::Relaxed), u64::MAX);
            assert_eq!(a.fetch_or(0x1_0000_0000, Ordering::Relaxed), 0xff00);
            assert_eq!(a.fetch_xor(0xff00, Ordering::Relaxed), 0x1_0000_ff00);
            assert_eq!(a.fetch_max(7, Ordering::Relaxed), 0x1_0000_0000);
            assert_eq!(a.fetch_min(7, Ordering::Relaxed), 0x1_0000_0000);
            assert_eq!(a.swap(9, Ordering::AcqRel), 7);
            let seq = Ordering::SeqCst;
            assert_eq!(a.compare_exchange(8, 1, seq, seq), Err(9));
            assert_eq!(a.compare_exchange_weak(9, 1, seq, seq), Ok(9));
            assert_eq!(a.fetch_update(seq, seq, |v| v.checked_sub(2)), Err(1));
            assert_eq!(a.fetch_update(seq, seq, |v| Some(v << 40)), Ok(1));
            a.store(a.load(seq) + 5, Ordering::Release);
            let mut a = a;
            *a.get_mut() += 1;
            assert_eq!(a.into_inner(), (1 << 40) + 6);
        }

        #[test]
        fn concurrent_increments_across_the_32_bit_boundary_are_not_lost() {
            const THREADS: u64 = 4;
            const PER_THREAD: u64 = 10_000;
            let start = u64::from(u32::MAX) - 2 * PER_THREAD;
            let a = Arc::new(AtomicU64::new(start));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let a = Arc::clone(&a);
                    std::thread::spawn(move || {
                        for _ in 0..PER_THREAD {
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("incrementing thread panicked");
            }
            assert_eq!(a.load(Ordering::Relaxed), start + THREADS * PER_THREAD);
        }
    }
}

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
