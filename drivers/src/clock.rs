//! Clocks for the driver: a simulated one (no_std) and, with `std`, the monotonic one.
//!
//! smoltcp needs a timestamp on every poll, and `core` reads no clock, so the host reads the
//! same [`Clock`] the scheduler was built with.

use alloc::sync::Arc;
use core::time::Duration;
use netpoll_core::sync::{AtomicU64, Ordering};

use netpoll_core::{Clock, Instant};

/// A clock that moves only when told to, or when a simulated-time wait sleeps
/// ([`crate::WireWaiter::simulated`]): tests run in simulated time, fast and deterministic.
#[derive(Debug, Default)]
pub struct SimClock {
    nanos: AtomicU64,
}

impl SimClock {
    /// A clock at [`Instant::ZERO`].
    pub fn new() -> Arc<Self> {
        Arc::new(SimClock::default())
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: the value is the only shared state; readers need no other memory ordered
        // with it, and a simulated clock is driven from the scheduler's thread.
        self.nanos.fetch_add(d, Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        // Relaxed: as in `advance`.
        Instant::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// `CLOCK_MONOTONIC` (through `std::time::Instant`) as a netpoll [`Clock`].
///
/// Its epoch, [`Instant::ZERO`], is the first time any `MonotonicClock` of the process is
/// read, and is shared by all of them: an instant from one is meaningful to another. With
/// its `tap` feature, `netpoll_hosted::MonotonicClock` is this type, so the runtime's clock
/// and a smoltcp host's agree too.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

#[cfg(feature = "std")]
impl MonotonicClock {
    /// The clock as the `Arc` that [`Host::new`](crate::Host::new) and `Scheduler::new` take
    /// (the same as `Arc::new(MonotonicClock)`).
    pub fn new() -> Arc<Self> {
        Arc::new(MonotonicClock)
    }

    /// The process-wide instant that reads as [`Instant::ZERO`].
    fn epoch() -> std::time::Instant {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }
}

#[cfg(feature = "std")]
impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        let d = Self::epoch().elapsed();
        Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Our instant as smoltcp's (microseconds; rounded down).
pub(crate) fn to_smol(t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(t.as_nanos() / 1_000).unwrap_or(i64::MAX))
}

/// smoltcp's duration as ours.
pub(crate) fn from_smol(d: smoltcp::time::Duration) -> Duration {
    Duration::from_micros(d.total_micros())
}

/// Our duration as smoltcp's (microseconds, rounded up so a timer never fires early).
pub(crate) fn dur_to_smol(d: Duration) -> smoltcp::time::Duration {
    let micros = d.as_nanos().div_ceil(1_000);
    smoltcp::time::Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}
