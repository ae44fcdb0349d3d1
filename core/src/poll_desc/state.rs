//! Bit constants and packing helpers of the pollDesc words.
//!
//! # The per-direction semaphore (`rg` / `wg`)
//!
//! Go's automaton (comment above `pdNil` in `runtime/netpoll.go`), translated. Go stores the
//! parked goroutine pointer in the word itself; a Rust waiter is a `Waker`, which does not fit in
//! a word, so it lives in a side slot and the word says who owns that slot. `WAKING` is the one
//! state Go does not need: an unblocker holds the slot while it moves the waker out.
//!
//! * `NIL`: nothing pending, nobody waiting. Others may: N → `READY`.
//! * `READY`: an I/O notification is pending. The waiter consumes it (`READY → NIL`).
//!   Others may: nothing (N is a no-op, timeout/close do not clear it, table rows 11 and 13).
//! * `WAIT`: the waiter is preparing to park and **owns the waker slot**. It commits with
//!   `WAIT → PARKED`. Others may: N → `READY`, timeout/close → `NIL`; either makes the commit
//!   fail, and the waiter resumes at once (rows 6, 7).
//! * `PARKED`: the waker slot holds the waiter's waker. Others may: an unblocker takes the slot
//!   with `PARKED → WAKING`. The waiter itself may reclaim it with `PARKED → WAIT` (re-polled
//!   with a new waker, or dropped).
//! * `WAKING`: an unblocker owns the slot and is moving the waker out; it then stores `READY`
//!   (I/O) or `NIL` (timeout/close). Everyone else spins until then (a few instructions).
//!
//! ```text
//!            (1) wait: NIL→WAIT            (4) commit: WAIT→PARKED
//!   NIL ───────────────────────────▶ WAIT ─────────────────────────▶ PARKED
//!    ▲ ▲  (2) wait: READY→NIL          │ (6) ready: →READY              │ (8/9) unblock:
//!    │ └──────── READY ◀───────────────┤ (7) timeout/close: →NIL        │ PARKED→WAKING
//!    │            ▲ (10) ready: NIL→READY                                ▼
//!    └────────────┴──────────────────────────────────────────────── WAKING
//!                      WAKING→READY (I/O) or WAKING→NIL (timeout/close), then wake
//! ```
//!
//! # The summary word (`info`, Go: `atomicInfo`)
//!
//! ```text
//! | 63 ......... 32 | 31 .... 5 |      4      |      3       |      2      |     1     |    0    |
//! | generation (32) | slot (27) | READ_CLOSED | EXPIRED_WRITE| EXPIRED_READ| EVENT_ERR | CLOSING |
//! ```
//!
//! `READ_CLOSED` (no Go equivalent) is set lock-free, like `EVENT_ERR`, and never cleared until
//! the slot is reused. Everything but those two is written under the pollDesc lock by
//! `publish_info`;
//! `EVENT_ERR` is set lock-free by `set_event_err`, which re-checks the generation held in
//! the same word (`docs/semantics.md#stale-events`). Explicit widths: the generation is the
//! full 32 bits (Go's `pollFDSeq` shift kept only 16 of its 20;
//! `docs/semantics.md#lessons-from-gos-history`).

/// Nothing pending, nobody waiting. Go: `pdNil`.
pub(crate) const NIL: u32 = 0;
/// A readiness notification is latched. Go: `pdReady`.
pub(crate) const READY: u32 = 1;
/// The waiter is about to park and owns the waker slot. Go: `pdWait`.
pub(crate) const WAIT: u32 = 2;
/// The waiter is parked; its waker is in the slot. Go: the `*g` value.
pub(crate) const PARKED: u32 = 3;
/// An unblocker owns the slot and is taking the waker out. No Go equivalent.
pub(crate) const WAKING: u32 = 4;

/// Set once by `evict` (Go: `pollClosing`); never cleared until the slot is reused.
pub(crate) const CLOSING: u64 = 1 << 0;
/// An error-only event was seen for this generation (Go: `pollEventErr`); cleared by the next
/// non-error event. Read errors only.
pub(crate) const EVENT_ERR: u64 = 1 << 1;
/// An event reported the read side closed (FIN, reset, error): the next read ends in EOF or
/// an error. Sticky until reuse. Lets a read skip its syscall after a drained read only when
/// no such end is pending. No Go equivalent (Go always retries the syscall).
pub(crate) const READ_CLOSED: u64 = 1 << 4;
/// The read deadline has passed (Go: `pollExpiredReadDeadline`); cleared by a new deadline.
pub(crate) const EXPIRED_READ: u64 = 1 << 2;
/// The write deadline has passed (Go: `pollExpiredWriteDeadline`).
pub(crate) const EXPIRED_WRITE: u64 = 1 << 3;
/// Shift of the generation inside the summary word.
pub(crate) const GEN_SHIFT: u32 = 32;

/// Shift of the slot index inside the summary word (below it: the flags).
pub(crate) const SLOT_SHIFT: u32 = 5;
/// The largest slot index the summary word holds (27 bits).
pub(crate) const MAX_SLOT: u32 = (1 << (GEN_SHIFT - SLOT_SHIFT)) - 1;

/// A summary word with generation `gen`, slot `slot` and no flags.
#[inline]
pub(crate) const fn info_pack(gen: u32, slot: u32) -> u64 {
    ((gen as u64) << GEN_SHIFT) | ((slot as u64) << SLOT_SHIFT)
}

/// The slot index stored in a summary word.
#[inline]
pub(crate) const fn info_slot(info: u64) -> u32 {
    ((info >> SLOT_SHIFT) as u32) & MAX_SLOT
}

/// The generation stored in a summary word.
#[inline]
pub(crate) const fn info_generation(info: u64) -> u32 {
    (info >> GEN_SHIFT) as u32
}

/// Human name of a semaphore state, for panic messages.
pub(crate) const fn sem_name(s: u32) -> &'static str {
    match s {
        NIL => "NIL",
        READY => "READY",
        WAIT => "WAIT",
        PARKED => "PARKED",
        WAKING => "WAKING",
        _ => "corrupt",
    }
}
