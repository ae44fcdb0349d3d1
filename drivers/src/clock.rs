//! Clocks for the driver: a simulated one (no_std) and, with `std`, the monotonic one.
//!
//! smoltcp needs a timestamp on every poll, and `core` reads no clock, so the host reads the
//! same [`Clock`] the scheduler was built with.

use alloc::sync::Arc;
use netpoll_core::sync::{AtomicU64, Ordering};
use core::time::Duration;

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

/// `CLOCK_MONOTONIC` through `std::time::Instant`, with its epoch at construction.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct MonotonicClock {
    epoch: std::time::Instant,
}

#[cfg(feature = "std")]
impl MonotonicClock {
    /// A clock whose [`Instant::ZERO`] is now.
    pub fn new() -> Arc<Self> {
        Arc::new(MonotonicClock {
            epoch: std::time::Instant::now(),
        })
    }
}

#[cfg(feature = "std")]
impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        let d = self.epoch.elapsed();
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
