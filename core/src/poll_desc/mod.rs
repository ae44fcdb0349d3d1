//! Heads up! Read Go's `runtime/netpoll.go` and the ordering table below before editing.
//!
//! A [`PollDesc`] is one socket's readiness state machine (Go: `pollDesc`): two binary
//! semaphores (`rg`, `wg`), each holding at most one parked waiter; a summary word (`info`,
//! Go: `atomicInfo`) that waiters read without the lock; and lock-protected deadline state.
//! The state machine never calls into the scheduler: transitions return what must be woken
//! ([`Woken`]) or armed ([`TimerArm`]), and the caller does it outside every lock.
//!
//! The semantics are Go's, described in `docs/semantics.md`: "row N" below is a row of its
//! transition table (`docs/semantics.md#transition-table`), "#N" an item of its conformance
//! checklist.
//!
//! # Ordering table
//!
//! | field | writers | readers | orderings | pairs with |
//! |---|---|---|---|---|
//! | `sem_state[d]` | waiter (`poll_wait`, `cancel_wait`, `prepare`), unblockers (`unblock`) | same | `SeqCst` on every access | the waiter's `NIL→WAIT` store is one half of a Dekker pair with the unblocker's `publish_info` + `state` load (`docs/semantics.md#error-versus-park`); the `WAIT→PARKED` commit publishes the waker to the unblocker's `PARKED→WAKING` (`docs/semantics.md#publishing-the-waiter`) |
//! | `sem_waker[d]` | the slot owner only (see `state.rs`) | the slot owner | non-atomic, ownership by the state word | handed over by the `state` transitions above |
//! | `info` | `publish_info` under `inner` lock; `set_event_err`, `set_read_closed` lock-free; the slot bits only at construction | `check_err` lock-free; `ready` generation check; `slot()` (`Relaxed`: constant bits) | `SeqCst` | the other half of the Dekker pair: `publish_info` (store) then `unblock` (load of `state`), against the waiter's `NIL→WAIT` (store) then `check_err` (load) |
//! | `inner` | lock holders | lock holders | spin lock | — |
//!
//! Why `SeqCst` and not `AcqRel`: Go's rule is a store–load pair on two different words ("need
//! to recheck error states after setting gpp to pdWait … runtime_pollUnblock … do the
//! opposite: store to closing/rd/wd, publishInfo, load of rg/wg"). Only sequential consistency
//! forbids both sides reading the old value (`docs/semantics.md#error-versus-park`: Go lost
//! wake-ups on arm64 before it made this pair sequentially consistent). On x86 every RMW is already
//! a full barrier and `SeqCst` loads are plain loads, so this costs nothing on the hot path.
//!
//! # The summary word protocol (Go: the `atomicInfo` comment)
//!
//! Code that changes `closing` or a deadline and then unblocks a waiter must call
//! `publish_info` **before** `unblock`, because `publish_info` is what stops a waiter from
//! parking anew.

pub(crate) mod cache;
pub(crate) mod state;
// Unit tests use the plain atomics; under loom they are covered by `tests/loom.rs`.
#[cfg(all(test, not(loom)))]
mod tests;

pub use cache::PollCache;

use alloc::boxed::Box;
use core::fmt;
use core::task::{Context, Poll, Waker};

use crate::source::{Direction, Key, Readiness};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering, WakerCell};
use crate::time::Instant;
use state::*;

/// Why a pollDesc refuses to wait (Go: `pollErrClosing`, `pollErrTimeout`,
/// `pollErrNotPollable`; `pollNoError` is `Ok`).
///
/// These must match the `stack` crate's mapping: `Closing` is "use of closed network
/// connection", `TimedOut` is "i/o timeout".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    /// The descriptor is being closed. Go: `pollErrClosing` (1).
    Closing,
    /// The deadline for this direction has passed. Go: `pollErrTimeout` (2).
    TimedOut,
    /// An error-only event was reported for reads. Go: `pollErrNotPollable` (3).
    NotPollable,
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PollError::Closing => "use of closed network connection",
            PollError::TimedOut => "i/o timeout",
            PollError::NotPollable => "not pollable",
        })
    }
}

impl core::error::Error for PollError {}

/// The number of parked waiters across all pollDescs (Go: `netpollWaiters`).
///
/// Incremented just before a waiter commits to parking (undone if the commit fails), so it
/// never goes negative; decremented only after the woken tasks were handed to the scheduler
/// ([`Woken::wake`]), so a task is never counted as gone before it is runnable
/// (`docs/semantics.md#waiter-count`).
#[derive(Debug, Default)]
pub struct WaiterCount(AtomicUsize);

impl WaiterCount {
    /// A zero count.
    pub fn new() -> Self {
        WaiterCount(AtomicUsize::new(0))
    }

    /// The current count. Relaxed: a hint, as in Go (`netpollAnyWaiters`).
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        // Relaxed: the count is a hint; the wake-ups themselves are ordered by the semaphores.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        // Relaxed: as in `add`.
        let before = self.0.fetch_sub(n, Ordering::Relaxed);
        debug_assert!(
            before >= n,
            "netpoll: waiter count underflow; before = {before}, sub = {n}"
        );
    }
}

/// Wakers taken out of a pollDesc, to be woken by the caller after it released its locks
/// (Go: the `*g` values `netpollunblock` returns and `netpollgoready` readies after `unlock`).
#[must_use = "the taken wakers must be woken, or their tasks hang"]
#[derive(Debug, Default)]
pub struct Woken {
    wakers: heapless::Vec<Waker, 2>,
}

impl Woken {
    fn push(&mut self, waker: Option<Waker>) {
        if let Some(w) = waker {
            // Capacity 2 = one waiter per direction (`docs/semantics.md#one-waiter-per-direction`);
            // a third is impossible.
            if self.wakers.push(w).is_err() {
                unreachable!("poll_desc: more than two waiters woken from one pollDesc");
            }
        }
    }

    /// How many tasks this wakes.
    pub fn len(&self) -> usize {
        self.wakers.len()
    }

    /// Whether nothing is to be woken.
    pub fn is_empty(&self) -> bool {
        self.wakers.is_empty()
    }

    /// Wakes every task, then decrements the waiter count (in that order, Go #61454).
    pub fn wake(self, waiters: &WaiterCount) {
        let n = self.wakers.len();
        for w in self.wakers {
            w.wake();
        }
        if n > 0 {
            waiters.sub(n);
        }
    }
}

/// A deadline timer the caller must arm: when it fires, call [`PollDesc::deadline_fired`]
/// with the same `dir` and `seq` (Go: `rt.modify(rd, 0, rtf, arg, rseq)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerArm {
    /// The pollDesc's key at arming time; a reused slot has a new generation.
    pub key: Key,
    /// Which deadline.
    pub dir: Direction,
    /// When to fire.
    pub when: Instant,
    /// The timer generation (Go: `rseq`/`wseq`); a mismatch at firing time makes it a no-op.
    pub seq: u32,
}

/// What a deadline change asks of the caller.
#[must_use = "timers must be armed and wakers woken"]
#[derive(Debug, Default)]
pub struct DeadlineUpdate {
    /// Waiters unblocked by a deadline in the past.
    pub woken: Woken,
    /// Timers to arm.
    pub arm: heapless::Vec<TimerArm, 2>,
}

/// What a fired deadline timer asks of the caller.
#[must_use = "timers must be armed and wakers woken"]
#[derive(Debug, Default)]
pub struct DeadlineFired {
    /// The waiter that timed out.
    pub woken: Woken,
    /// The deadline was extended while the timer was pending: arm again (Go's timer `modify`
    /// to a later time, done lazily).
    pub rearm: Option<TimerArm>,
}

/// A deadline as Go's `rd`/`wd` (`0` none, `>0` absolute, `-1` expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    None,
    At(Instant),
    Expired,
}

#[derive(Debug, Clone, Copy)]
struct DirDeadline {
    deadline: Deadline,
    /// Go: `rseq`/`wseq`. Bumped whenever an armed timer is superseded.
    seq: u32,
    /// When the currently valid timer (the one carrying `seq`) fires, if any (Go: `rrun`).
    armed: Option<Instant>,
}

impl DirDeadline {
    const NONE: DirDeadline = DirDeadline {
        deadline: Deadline::None,
        seq: 0,
        armed: None,
    };

    /// Invalidates any pending timer (Go: `rseq++`, `rt.stop()`).
    fn disarm(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.armed = None;
    }
}

#[derive(Debug)]
struct Inner {
    /// Go: `closing`.
    closing: bool,
    /// Go: `rd`/`rseq`/`rrun` and `wd`/`wseq`/`wrun`, indexed by [`Direction::index`].
    /// Allocated by the first deadline set on this descriptor (and kept across reuse):
    /// sockets that never use deadlines, such as idle connections of an echo server, stay
    /// small. Absent means no deadline and no timer was ever armed.
    deadlines: Option<Box<[DirDeadline; 2]>>,
}

impl Inner {
    const NO_DEADLINES: [DirDeadline; 2] = [DirDeadline::NONE; 2];

    fn dirs(&self) -> &[DirDeadline; 2] {
        self.deadlines.as_deref().unwrap_or(&Self::NO_DEADLINES)
    }

    fn dirs_mut(&mut self) -> &mut [DirDeadline; 2] {
        self.deadlines
            .get_or_insert_with(|| Box::new(Self::NO_DEADLINES))
    }

    /// Invalidates every pending timer (Go: `rseq++`, `wseq++`). Without deadlines there are
    /// none, so nothing is allocated.
    fn disarm_all(&mut self) {
        if let Some(dirs) = &mut self.deadlines {
            for d in dirs.iter_mut() {
                d.disarm();
            }
        }
    }
}

/// One direction's binary semaphore plus its waker slot (Go: `rg` or `wg`), as a view of
/// the two fields of [`PollDesc`] that hold it: the pollDesc keeps both state words side by
/// side (and both wakers), which packs it 8 bytes tighter than two `{state, waker}` pairs.
#[derive(Debug, Clone, Copy)]
struct Semaphore<'a> {
    state: &'a AtomicU32,
    /// Owned by whoever the `state` protocol says (see `state.rs`); valid in `PARKED`.
    waker: &'a WakerCell,
}

impl Semaphore<'_> {
    #[inline]
    fn load(&self) -> u32 {
        // SeqCst: see the ordering table (the Dekker pair of
        // `docs/semantics.md#error-versus-park`).
        self.state.load(Ordering::SeqCst)
    }

    #[inline]
    fn cas(&self, from: u32, to: u32) -> Result<u32, u32> {
        // SeqCst: see the ordering table. The WAIT→PARKED commit publishes the slot contents to
        // the unblocker's PARKED→WAKING CAS; NIL→WAIT is the waiter's half of the Dekker pair.
        self.state
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
    }

    #[inline]
    fn swap(&self, to: u32) -> u32 {
        // SeqCst: see the ordering table.
        self.state.swap(to, Ordering::SeqCst)
    }

    /// Replaces the slot contents. Caller must own the slot (state WAIT created by it, or
    /// WAKING created by it).
    #[allow(unsafe_code)] // The waker slot: ownership is the semaphore protocol's.
    fn set_waker(&self, waker: Option<Waker>) -> Option<Waker> {
        // SAFETY: every caller owns the slot by the state protocol (see `state.rs`): it moved
        // the state to WAIT or WAKING itself, and nobody else touches the slot in those states.
        unsafe { self.waker.replace(waker) }
    }

    /// Whether the owned slot already holds a waker that wakes the same task as `w`.
    #[allow(unsafe_code)] // The waker slot, as `set_waker`.
    fn waker_will_wake(&self, w: &Waker) -> bool {
        // SAFETY: as in `set_waker`: the only caller moved the state PARKED → WAIT itself.
        unsafe { self.waker.will_wake(w) }
    }

    /// Go: `netpollunblock`. `ioready` latches READY; otherwise (timeout, close) only a waiter
    /// is released and nothing is latched.
    fn unblock(&self, ioready: bool) -> Option<Waker> {
        let new = if ioready { READY } else { NIL };
        loop {
            match self.load() {
                // Already latched (row 11, 13).
                READY => return None,
                // Timeout/close with nobody waiting latches nothing (row 12).
                NIL if !ioready => return None,
                // Latch readiness with nobody waiting (row 10).
                NIL => {
                    if self.cas(NIL, READY).is_ok() {
                        return None;
                    }
                }
                // The waiter has not committed: make its commit fail (rows 6, 7).
                WAIT => {
                    if self.cas(WAIT, new).is_ok() {
                        return None;
                    }
                }
                // Take the parked waiter (rows 8, 9).
                PARKED => {
                    if self.cas(PARKED, WAKING).is_ok() {
                        let w = self.set_waker(None);
                        debug_assert!(w.is_some(), "poll_desc: PARKED with an empty slot");
                        // SeqCst store: releases the slot back; pairs with the waiter's load.
                        self.state.store(new, Ordering::SeqCst);
                        return w;
                    }
                }
                // Another unblocker is mid-hand-off; it ends in READY or NIL within a few
                // instructions. Wait so an I/O edge is not lost behind a timeout's NIL.
                WAKING => crate::sync::spin_loop(),
                s => unreachable!("poll_desc: corrupted semaphore; state = {s:#x}"),
            }
        }
    }

    /// Undoes a registration when the waiting future is dropped while parked. Returns whether
    /// it took the registration back (an unblocker that won accounts for it instead).
    fn cancel(&self) -> bool {
        loop {
            match self.load() {
                PARKED => {
                    if self.cas(PARKED, WAIT).is_ok() {
                        drop(self.set_waker(None));
                        // If an edge raced in (WAIT→READY), keep it latched: a spurious wake
                        // is harmless, a lost one is not.
                        let _ = self.cas(WAIT, NIL);
                        return true;
                    }
                }
                WAKING => crate::sync::spin_loop(),
                _ => return false,
            }
        }
    }
}

/// One socket's poll descriptor. Go: `pollDesc`.
///
/// Obtain one from [`PollCache::alloc`]; it stays valid (type-stable, never freed) for the
/// life of the cache, and its [`Key`] changes on every reuse.
#[derive(Debug)]
pub struct PollDesc {
    /// Go: the `rg`, `wg` words (see [`PollDesc::sem`]).
    sem_state: [AtomicU32; 2],
    /// The waker slots of `rg`, `wg`.
    sem_waker: [WakerCell; 2],
    /// Go: `atomicInfo`, plus the slot index (constant); layout in `state.rs`.
    info: AtomicU64,
    /// Go: the fields under `pd.lock`.
    inner: Mutex<Inner>,
}

impl PollDesc {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        assert!(slot <= MAX_SLOT, "poll_desc: slot {slot} out of range");
        PollDesc {
            sem_state: [AtomicU32::new(NIL), AtomicU32::new(NIL)],
            sem_waker: [WakerCell::new(), WakerCell::new()],
            info: AtomicU64::new(info_pack(generation, slot) | CLOSING),
            inner: Mutex::new(Inner {
                closing: true,
                deadlines: None,
            }),
        }
    }

    /// This descriptor's current key (slot + generation). Go: `taggedPointerPack(pd, fdseq)`.
    pub fn key(&self) -> Key {
        // SeqCst: consistent with every other `info` access (ordering table).
        let info = self.info.load(Ordering::SeqCst);
        Key::new(info_slot(info), info_generation(info))
    }

    /// Index in the [`PollCache`]; constant.
    pub(crate) fn slot(&self) -> u32 {
        // Relaxed: the slot bits never change after construction.
        info_slot(self.info.load(Ordering::Relaxed))
    }

    /// The semaphore of direction index `i` (Go: `rg` for 0, `wg` for 1).
    #[inline]
    fn sem(&self, i: usize) -> Semaphore<'_> {
        Semaphore {
            state: &self.sem_state[i],
            waker: &self.sem_waker[i],
        }
    }

    fn generation(&self) -> u32 {
        // SeqCst: consistent with every other `info` access (ordering table).
        info_generation(self.info.load(Ordering::SeqCst))
    }

    /// Recomputes the summary word from `inner`, keeping the lock-free `EVENT_ERR` bit and the
    /// generation. Go: `publishInfo`. Must run before any `unblock` that follows a change.
    fn publish_info(&self, inner: &Inner) {
        let mut flags = 0;
        if inner.closing {
            flags |= CLOSING;
        }
        let dirs = inner.dirs();
        if dirs[0].deadline == Deadline::Expired {
            flags |= EXPIRED_READ;
        }
        if dirs[1].deadline == Deadline::Expired {
            flags |= EXPIRED_WRITE;
        }
        // SeqCst RMW: the store half of the Dekker pair; pairs with `check_err`'s load after the
        // waiter's NIL→WAIT (`docs/semantics.md#error-versus-park`).
        let _ = self
            .info
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                Some((x & (EVENT_ERR | !0xf)) | flags)
            });
    }

    /// Sets or clears `EVENT_ERR`, only if the word still belongs to generation `gen`.
    /// Go: `setEventErr(b, seq)` (`docs/semantics.md#stale-events`).
    fn set_event_err(&self, on: bool, gen: u32) {
        // SeqCst: as `publish_info`.
        let _ = self
            .info
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                if info_generation(x) != gen || ((x & EVENT_ERR != 0) == on) {
                    return None;
                }
                Some(if on { x | EVENT_ERR } else { x & !EVENT_ERR })
            });
    }

    /// Latches `READ_CLOSED` for generation `gen` (lock-free; generation-checked as
    /// `set_event_err`).
    fn set_read_closed(&self, gen: u32) {
        // SeqCst: as `publish_info`; pairs with the load in `read_closed`.
        let _ = self
            .info
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                (info_generation(x) == gen && x & READ_CLOSED == 0).then_some(x | READ_CLOSED)
            });
    }

    /// Whether an event reported the read side closed (FIN, reset, error) since this
    /// descriptor was opened: the next read will end in EOF or an error, so it must not wait
    /// for another edge. No Go equivalent; see [`crate::SocketBackend::try_read_drained`].
    pub fn read_closed(&self) -> bool {
        // SeqCst: pairs with the RMW in `set_read_closed`.
        self.info.load(Ordering::SeqCst) & READ_CLOSED != 0
    }

    /// Why a wait in `dir` must not happen, if it must not. Go: `netpollcheckerr`.
    /// Priority: closing, then timeout, then (reads only) event error.
    pub fn check_err(&self, dir: Direction) -> Result<(), PollError> {
        // SeqCst: the load half of the Dekker pair, after the waiter's NIL→WAIT
        // (`docs/semantics.md#error-versus-park`).
        let info = self.info.load(Ordering::SeqCst);
        if info & CLOSING != 0 {
            return Err(PollError::Closing);
        }
        let expired = match dir {
            Direction::Read => EXPIRED_READ,
            Direction::Write => EXPIRED_WRITE,
        };
        if info & expired != 0 {
            return Err(PollError::TimedOut);
        }
        if dir == Direction::Read && info & EVENT_ERR != 0 {
            return Err(PollError::NotPollable);
        }
        Ok(())
    }

    /// Prepares for an operation: reports closing/timeout first, then drops a stale latched
    /// readiness. Go: `poll_runtime_pollReset` (`prepareRead`/`prepareWrite`).
    pub fn prepare(&self, dir: Direction) -> Result<(), PollError> {
        self.check_err(dir)?;
        // Only READY is dropped: a registration of a dropped future was already undone.
        self.take_ready(dir);
        Ok(())
    }

    /// Consumes a latched readiness in `dir` without waiting: whether an edge came since the
    /// last wait or `prepare`. For non-blocking operations that skip the syscall after a
    /// drained read; call only where a wait could be made (the direction's lock held).
    pub fn take_ready(&self, dir: Direction) -> bool {
        let sem = self.sem(dir.index());
        // Load first: the word is usually NIL, and a failing compare-and-swap still costs a
        // locked instruction on every operation (`prepare` runs once per read and write).
        sem.load() == READY && sem.cas(READY, NIL).is_ok()
    }

    /// Polls for readiness in `dir`, parking `cx`'s waker if there is none yet.
    /// Go: `poll_runtime_pollWait` + `netpollblock` + `netpollblockcommit`.
    ///
    /// Errors (closing, expired deadline, event error) are checked before a latched readiness
    /// is consumed, as Go's `pollWait` does at entry.
    ///
    /// `Ready(Ok(()))` means "retry the operation" (it may be spurious,
    /// `docs/semantics.md#spurious-wake-ups`). Only one task may wait per direction at a time
    /// (`docs/semantics.md#one-waiter-per-direction`); the `stack` crate's fd mutex guarantees it.
    /// A caller that stops polling before `Ready` must call [`PollDesc::cancel_wait`].
    pub fn poll_wait(
        &self,
        dir: Direction,
        cx: &mut Context<'_>,
        waiters: &WaiterCount,
    ) -> Poll<Result<(), PollError>> {
        let sem = self.sem(dir.index());
        loop {
            match sem.load() {
                // Consume a latched notification (row 2; or the wake-up of row 8).
                READY => {
                    // Go: pollWait checks netpollcheckerr at entry, *before* netpollblock
                    // consumes pdReady, so a latched readiness never hides a close or an expired
                    // deadline (row 13: "only a fresh pollWait entry (which checks the error
                    // first) reports the timeout"; checklist #26). READY stays latched for
                    // `prepare`. On the wake-up path (row 8 followed by a timeout) Go would return
                    // "retry" instead; reporting the error there is the order
                    // `docs/semantics.md#data-racing-a-deadline` allows.
                    if let Err(e) = self.check_err(dir) {
                        return Poll::Ready(Err(e));
                    }
                    if sem.cas(READY, NIL).is_ok() {
                        return Poll::Ready(Ok(()));
                    }
                }
                NIL => {
                    // Go: pollWait's entry check, and its re-check after a wake without I/O
                    // (rows 7, 9; or a deadline reset after firing,
                    // `docs/semantics.md#fired-then-reset-deadline`: then we park again).
                    if let Err(e) = self.check_err(dir) {
                        return Poll::Ready(Err(e));
                    }
                    if sem.cas(NIL, WAIT).is_err() {
                        continue;
                    }
                    // Re-check after publishing WAIT: the Dekker pair with publish_info
                    // (`docs/semantics.md#error-versus-park`).
                    if let Err(e) = self.check_err(dir) {
                        // "be careful to not lose concurrent pdReady" (row 5).
                        if sem.swap(NIL) == READY {
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Ready(Err(e));
                    }
                    // We own the slot in WAIT.
                    drop(sem.set_waker(Some(cx.waker().clone())));
                    if let Some(r) = Self::commit(sem, waiters) {
                        return r;
                    }
                }
                PARKED => {
                    // Re-polled while parked (select!, join!): reclaim the slot and refresh the
                    // waker if it would wake a different task.
                    if sem.cas(PARKED, WAIT).is_err() {
                        continue;
                    }
                    // Reclaiming un-counts us; `commit` counts us again.
                    waiters.sub(1);
                    if !sem.waker_will_wake(cx.waker()) {
                        drop(sem.set_waker(Some(cx.waker().clone())));
                    }
                    if let Some(r) = Self::commit(sem, waiters) {
                        return r;
                    }
                }
                WAKING => crate::sync::spin_loop(),
                s => unreachable!("poll_desc: double wait; state = {}", sem_name(s)),
            }
        }
    }

    /// `WAIT → PARKED` (Go: `netpollblockcommit`). `None` means "loop and re-check".
    fn commit(sem: Semaphore<'_>, waiters: &WaiterCount) -> Option<Poll<Result<(), PollError>>> {
        // Count before publishing so an unblocker's decrement can never precede it.
        waiters.add(1);
        match sem.cas(WAIT, PARKED) {
            Ok(_) => Some(Poll::Pending),
            Err(_) => {
                // An edge (READY) or a timeout/close (NIL) raced in; we still own the slot.
                waiters.sub(1);
                drop(sem.set_waker(None));
                if sem.swap(NIL) == READY {
                    Some(Poll::Ready(Ok(())))
                } else {
                    None
                }
            }
        }
    }

    /// Undoes a pending [`PollDesc::poll_wait`] registration (the waiting future was dropped
    /// or stopped being polled). A latched readiness is kept.
    pub fn cancel_wait(&self, dir: Direction, waiters: &WaiterCount) {
        if self.sem(dir.index()).cancel() {
            waiters.sub(1);
        }
    }

    /// Reports readiness edges for `key` (Go: `netpollready` after the `fdseq` check).
    /// Events for an older generation are dropped (checklist #54 of `docs/semantics.md`).
    pub fn ready(&self, key: Key, readiness: Readiness) -> Woken {
        let mut woken = Woken::default();
        // The whole key, not only the generation: a key naming another slot with the same
        // generation must not latch readiness here either.
        if key != self.key() {
            return woken;
        }
        self.set_event_err(readiness.is_error(), key.generation());
        if readiness.is_read_closed() {
            self.set_read_closed(key.generation());
        }
        for dir in Direction::BOTH {
            if readiness.has(dir) {
                woken.push(self.sem(dir.index()).unblock(true));
            }
        }
        woken
    }

    /// Marks the descriptor closing and releases both waiters, which then see
    /// [`PollError::Closing`]. Go: `poll_runtime_pollUnblock` (`pd.evict`).
    ///
    /// # Panics
    /// If called twice ("unblock on closing polldesc"): the fd mutex allows one close.
    pub fn evict(&self) -> Woken {
        let mut woken = Woken::default();
        {
            let mut inner = self.inner.lock();
            if inner.closing {
                panic!(
                    "poll_desc: unblock on closing polldesc; key = {:?}",
                    self.key()
                );
            }
            inner.closing = true;
            inner.disarm_all();
            // Publish BEFORE unblocking (the atomicInfo protocol).
            self.publish_info(&inner);
            for dir in Direction::BOTH {
                woken.push(self.sem(dir.index()).unblock(false));
            }
        }
        woken
    }

    /// Sets (`Some`) or clears (`None`) the deadline of each direction in `dirs`.
    /// Go: `poll_runtime_pollSetDeadline`.
    ///
    /// A deadline at or before `now` is expired at once (Go: `d == 0 → -1`, checklist #36) and
    /// unblocks a waiter (#31); a later one asks for a timer; `None` clears the expiry (#33)
    /// without waking anybody. A no-op once closing.
    pub fn set_deadline(
        &self,
        now: Instant,
        dirs: &[Direction],
        deadline: Option<Instant>,
    ) -> DeadlineUpdate {
        let mut update = DeadlineUpdate::default();
        let key = self.key();
        let mut inner = self.inner.lock();
        if inner.closing {
            return update;
        }
        if deadline.is_none() && inner.deadlines.is_none() {
            // Clearing what was never set: nothing to do, nothing to allocate.
            return update;
        }
        let mut expired = [false; 2];
        for &dir in dirs {
            let d = &mut inner.dirs_mut()[dir.index()];
            match deadline {
                None => {
                    d.deadline = Deadline::None;
                    d.disarm();
                }
                Some(t) if t <= now => {
                    d.deadline = Deadline::Expired;
                    d.disarm();
                    expired[dir.index()] = true;
                }
                Some(t) => {
                    d.deadline = Deadline::At(t);
                    // A pending timer at or before `t` re-arms itself when it fires; only an
                    // earlier deadline needs a new timer (and supersedes the old one).
                    if d.armed.is_none_or(|armed| armed > t) {
                        d.disarm();
                        d.armed = Some(t);
                        let arm = TimerArm {
                            key,
                            dir,
                            when: t,
                            seq: d.seq,
                        };
                        if update.arm.push(arm).is_err() {
                            unreachable!("poll_desc: more than two deadline timers");
                        }
                    }
                }
            }
        }
        self.publish_info(&inner);
        for dir in Direction::BOTH {
            if expired[dir.index()] {
                update.woken.push(self.sem(dir.index()).unblock(false));
            }
        }
        update
    }

    /// A deadline timer fired. Go: `netpolldeadlineimpl`.
    ///
    /// Stale timers (reused slot, changed or cleared deadline, closed) do nothing (checklist #39 of
    /// `docs/semantics.md`).
    /// If the deadline moved later while the timer was pending, asks to re-arm at the new time.
    pub fn deadline_fired(&self, now: Instant, arm: TimerArm) -> DeadlineFired {
        let mut fired = DeadlineFired::default();
        let mut inner = self.inner.lock();
        if inner.closing || arm.key != self.key() {
            return fired;
        }
        let i = arm.dir.index();
        let Some(dirs) = &mut inner.deadlines else {
            return fired;
        };
        let d = &mut dirs[i];
        if d.seq != arm.seq || d.armed.is_none() {
            return fired;
        }
        d.armed = None;
        match d.deadline {
            Deadline::At(t) if t <= now => {
                d.deadline = Deadline::Expired;
                self.publish_info(&inner);
                fired.woken.push(self.sem(i).unblock(false));
            }
            Deadline::At(t) => {
                d.armed = Some(t);
                fired.rearm = Some(TimerArm { when: t, ..arm });
            }
            // A cleared or expired deadline bumps `seq`, so a matching timer cannot see these.
            other => unreachable!("poll_desc: inconsistent deadline {other:?} for live timer"),
        }
        fired
    }

    /// Whether a timer armed as `arm` would still do something when it fires (not superseded,
    /// cleared, closed or reused). Used to drop dead timers from the heap early.
    pub fn timer_is_current(&self, arm: &TimerArm) -> bool {
        let inner = self.inner.lock();
        let d = &inner.dirs()[arm.dir.index()];
        !inner.closing && arm.key == self.key() && d.seq == arm.seq && d.armed.is_some()
    }

    /// Re-initialises a descriptor taken from the free list. Go: `poll_runtime_pollOpen`.
    fn open(&self) {
        for i in 0..2 {
            let sem = self.sem(i);
            let s = sem.load();
            if s != NIL && s != READY {
                panic!(
                    "poll_desc: blocked {} on free polldesc; state = {}",
                    ["read", "write"][i],
                    sem_name(s)
                );
            }
            sem.state.store(NIL, Ordering::SeqCst);
        }
        let mut inner = self.inner.lock();
        inner.closing = false;
        if let Some(dirs) = &mut inner.deadlines {
            for d in dirs.iter_mut() {
                d.deadline = Deadline::None;
                d.disarm();
            }
        }
        self.set_event_err(false, self.generation());
        // SeqCst: as every `info` access. A reused slot starts with its read side open.
        self.info.fetch_and(!READ_CLOSED, Ordering::SeqCst);
        self.publish_info(&inner);
    }

    /// Checks the close protocol and bumps the generation. Go: `poll_runtime_pollClose` +
    /// `pollCache.free`.
    fn retire(&self) {
        let inner = self.inner.lock();
        if !inner.closing {
            panic!(
                "poll_desc: close polldesc w/o unblock; key = {:?}",
                self.key()
            );
        }
        for i in 0..2 {
            let sem = self.sem(i);
            let s = sem.load();
            if s != NIL && s != READY {
                panic!(
                    "poll_desc: blocked {} on closing polldesc; state = {}",
                    ["read", "write"][i],
                    sem_name(s)
                );
            }
        }
        // New generation (never 0); stale events and timers for the old one are now ignored.
        // SeqCst: as every `info` access.
        let _ = self
            .info
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                let mut gen = info_generation(x).wrapping_add(1);
                if gen == 0 {
                    gen = 1;
                }
                Some(info_pack(gen, info_slot(x)) | CLOSING)
            });
        drop(inner);
    }
}
