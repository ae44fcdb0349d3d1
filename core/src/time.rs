//! Time as the core sees it: injected, never read from a clock of its own.
//!
//! `core` and `stack` read no clock (`docs/design.md#no-clock-in-core`). An [`Instant`] is a count
//! of nanoseconds since an arbitrary, per-[`Clock`] epoch; the hosted backend maps it to
//! `CLOCK_MONOTONIC`, tests to a manual clock.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on a [`Clock`]'s monotonic timeline, in nanoseconds since the clock's epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The clock's epoch.
    pub const ZERO: Instant = Instant { nanos: 0 };
    /// The far future: a deadline here never expires (Go clamps overflowing deadlines the same
    /// way in `poll_runtime_pollSetDeadline`; `docs/semantics.md#setting-a-deadline`).
    pub const MAX: Instant = Instant { nanos: u64::MAX };

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant { nanos }
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// `self + d`, saturating at [`Instant::MAX`] so huge deadlines never wrap into the past.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant {
            nanos: self.nanos.saturating_add(d),
        }
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturates at [`Instant::ZERO`].
    fn sub(self, d: Duration) -> Instant {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant {
            nanos: self.nanos.saturating_sub(d),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Instant({}.{:09}s)",
            self.nanos / 1_000_000_000,
            self.nanos % 1_000_000_000
        )
    }
}

/// A monotonic clock. Go: `nanotime`.
///
/// Implementations must never go backwards and must be callable from any thread.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Instant;
}
