//! The readiness-source contract.
//!
//! A readiness source must provide (Go: the header of `runtime/netpoll.go`):
//!
//! * [`ReadinessSource::poll`] (Go: `netpoll(delay)`): wait up to `timeout` for readiness edges
//!   and append them as `(Key, Readiness)` pairs. `Some(Duration::ZERO)` never blocks; `None`
//!   blocks until an edge or a [`Notifier::notify`]. A timed wait may return early and empty.
//!   Timeouts round **up** to the source's resolution, so a sub-millisecond timeout never
//!   becomes a busy `0`.
//! * a [`Notifier`] (Go: `netpollBreak`): interrupts a concurrent blocking `poll`, or, if none
//!   is running, makes the next blocking `poll` return at once. Coalescing, never lost.
//! * registration of its own handles (Go: `netpollopen` / `netpollclose`). Registration takes a
//!   backend-specific handle (a file descriptor, a smoltcp socket handle), so it is not part of
//!   this trait: the socket backend that owns the handle registers it with its own source,
//!   tagging it with the pollDesc's [`Key`].
//!
//! # Edge-triggered semantics
//!
//! A source reports *transitions* that could turn a previous `WouldBlock` into success or
//! error: new data, FIN, RST, freed send space, connection established or failed, an
//! accept-queue entry (`docs/semantics.md#try-first`). It need not report the state at
//! registration, because every operation tries first and waits only after `WouldBlock`.
//!
//! # Spurious events
//!
//! Events may be spurious or duplicated (`docs/semantics.md#spurious-events-are-allowed`); they
//! must never be missing. Consumers treat each
//! event as "retry the operation", nothing more.
//!
//! # Draining readiness
//!
//! After an edge, the consumer keeps operating until `WouldBlock` before it waits again: the
//! source reports no second edge while a socket stays ready
//! (`docs/semantics.md#no-repeated-events`).
//!
//! # Errors and hang-ups
//!
//! Errors and hang-ups are reported in both directions
//! (`docs/semantics.md#errors-wake-both-directions`). [`Readiness::ERROR`] is only for an
//! error-only event (Go: an event that is exactly `EPOLLERR`); ordinary socket errors arrive as
//! readable + writable and surface from the operation itself.

use core::fmt;
use core::time::Duration;

/// A readiness token: pollDesc slot plus generation (Go: `taggedPointerPack(pd, fdseq)`).
///
/// The generation is bumped whenever the slot is freed, so an event carrying an old key is
/// recognised and dropped (`docs/semantics.md#stale-events`, golang/go#59545). Both fields have
/// explicit widths and pack losslessly into the `u64` that `epoll_event.u64` carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    slot: u32,
    generation: u32,
}

impl Key {
    /// Generation zero is never used by a live pollDesc (Go: "fdseq is never 0 while in use"),
    /// so a zeroed `u64` can never alias a live key.
    pub const fn new(slot: u32, generation: u32) -> Key {
        Key { slot, generation }
    }

    /// The pollDesc slot index.
    pub const fn slot(self) -> u32 {
        self.slot
    }

    /// The slot's generation when this key was issued.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the key into 64 bits: generation in the high half, slot in the low half.
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.slot as u64
    }

    /// Unpacks [`Key::to_u64`].
    pub const fn from_u64(v: u64) -> Key {
        Key {
            slot: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}#{})", self.slot, self.generation)
    }
}

/// One I/O direction (Go: mode `'r'` or `'w'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Reads and accepts. Go: `'r'`.
    Read,
    /// Writes and connects. Go: `'w'`.
    Write,
}

impl Direction {
    /// Both directions, read first.
    pub const BOTH: [Direction; 2] = [Direction::Read, Direction::Write];

    pub(crate) const fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

/// A set of readiness edges reported by a source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Readiness(u8);

impl Readiness {
    /// No edge.
    pub const EMPTY: Readiness = Readiness(0);
    /// Read direction may make progress (data, FIN, RST, pending connection, error).
    pub const READABLE: Readiness = Readiness(1);
    /// Write direction may make progress (send space, connected, RST, error).
    pub const WRITABLE: Readiness = Readiness(2);
    /// An error-only event (Go: `ev.Events == EPOLLERR`): reads fail with `NotPollable` until
    /// the next non-error event. Implies [`Readiness::READABLE`] and [`Readiness::WRITABLE`].
    pub const ERROR: Readiness = Readiness(4 | 1 | 2);
    /// Both directions.
    pub const BOTH: Readiness = Readiness(1 | 2);
    /// The peer closed its side or the connection failed (Go: `EPOLLRDHUP`/`EPOLLHUP`/
    /// `EPOLLERR` in the event): the read side will end with EOF or an error however much data
    /// is left. Implies [`Readiness::READABLE`]. Sticky on the pollDesc until it is reused
    /// ([`crate::PollDesc::read_closed`]).
    pub const READ_CLOSED: Readiness = Readiness(8 | 1);

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether this set wakes direction `dir`.
    pub const fn has(self, dir: Direction) -> bool {
        match dir {
            Direction::Read => self.0 & 1 != 0,
            Direction::Write => self.0 & 2 != 0,
        }
    }

    /// Whether this is an error-only event.
    pub const fn is_error(self) -> bool {
        self.0 & 4 != 0
    }

    /// Whether this reports the read side closed (FIN, reset or error).
    pub const fn is_read_closed(self) -> bool {
        self.0 & 8 != 0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for Readiness {
    fn bitor_assign(&mut self, rhs: Readiness) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        f.write_str("Readiness(")?;
        for (bit, name) in [
            (1, "READABLE"),
            (2, "WRITABLE"),
            (4, "ERROR"),
            (8, "READ_CLOSED"),
        ] {
            if self.0 & bit != 0 {
                write!(f, "{sep}{name}")?;
                sep = "|";
            }
        }
        f.write_str(")")
    }
}

/// Where a source appends the edges it found. `Vec<(Key, Readiness)>` is one.
pub trait Events {
    /// Appends one edge.
    fn push_event(&mut self, key: Key, readiness: Readiness);
}

impl Events for alloc::vec::Vec<(Key, Readiness)> {
    fn push_event(&mut self, key: Key, readiness: Readiness) {
        self.push((key, readiness));
    }
}

/// A readiness source: the scheduler's only way to wait for I/O (Go: `netpoll`).
///
/// See the [module docs](self) for the contract.
pub trait ReadinessSource {
    /// What a failed poll reports.
    type Error: fmt::Debug;

    /// Waits up to `timeout` (`None`: without limit, `Some(ZERO)`: not at all) and appends the
    /// edges found to `events`. Go: `netpoll(delay)`.
    ///
    /// Must not block when `timeout` is `Some(Duration::ZERO)`. May return early with no
    /// events (a signal, a [`Notifier::notify`]). A [`Notifier::notify`] issued while nobody
    /// is blocked must make the *next* blocking call return promptly; only a blocking call
    /// consumes it (Go drains the eventfd only when `delay != 0`).
    fn poll(&self, timeout: Option<Duration>, events: &mut dyn Events) -> Result<(), Self::Error>;

    /// A handle that wakes this source from any thread.
    fn notifier(&self) -> alloc::sync::Arc<dyn Notifier>;
}

/// The cross-thread wake-up of a blocked [`ReadinessSource::poll`]. Go: `netpollBreak`.
///
/// Can be called from any context and any thread. Idempotent and coalescing: many calls while
/// a wake is in flight cost one wake. Never lost: a call while nobody polls makes the next
/// blocking poll return at once. Must NOT call [`ReadinessSource::poll`] from within.
pub trait Notifier: Send + Sync {
    /// Wakes the poller.
    fn notify(&self);
}
