//! The timer heap: sleeps and pollDesc deadlines (Go: the per-P timer heap), and timer
//! insertion, which breaks a blocked poll when the new timer is earlier (Go: `wakeNetPoller`).
//!
//! Cancellation is lazy. A superseded deadline timer stays in the heap and is ignored when it
//! fires (its `seq` no longer matches, Go: `rseq`); a deadline moved *later* keeps its pending
//! timer, which re-arms itself when it fires. So each pollDesc direction has O(1) live entries
//! however often its deadline changes, and a dropped sleep's entry is freed when
//! its time comes.

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use core::cmp::{Ordering as CmpOrdering, Reverse};
use core::task::Waker;

use super::Shared;
use crate::poll_desc::TimerArm;
use crate::sync::{AtomicBool, Mutex, Ordering};
use crate::time::Instant;

/// The shared state of one `Sleep`.
#[derive(Debug, Default)]
pub(crate) struct SleepSlot {
    pub(crate) fired: AtomicBool,
    pub(crate) waker: Mutex<Option<Waker>>,
}

#[derive(Debug)]
pub(crate) enum TimerKind {
    Sleep(Arc<SleepSlot>),
    Deadline(TimerArm),
}

#[derive(Debug)]
pub(crate) struct TimerEntry {
    pub(crate) when: Instant,
    /// Insertion order, so equal times fire first-in first-out.
    pub(crate) order: u64,
    pub(crate) kind: TimerKind,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.when, self.order) == (other.when, other.order)
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.when, self.order).cmp(&(other.when, other.order))
    }
}

/// A min-heap of timers.
#[derive(Debug)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<TimerEntry>>,
    next_order: u64,
    /// Size at which the next compaction runs; doubles with the live size, so compaction is
    /// amortised O(1) per push.
    compact_at: usize,
}

impl Default for TimerHeap {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_order: 0,
            compact_at: MIN_COMPACT,
        }
    }
}

/// Below this many entries the heap is never compacted.
const MIN_COMPACT: usize = 64;

impl TimerHeap {
    /// Adds a timer; returns whether it is now the earliest.
    pub(crate) fn push(&mut self, when: Instant, kind: TimerKind) -> bool {
        let order = self.next_order;
        self.next_order += 1;
        let earliest = self.heap.peek().is_none_or(|Reverse(e)| when < e.when);
        self.heap.push(Reverse(TimerEntry { when, order, kind }));
        earliest
    }

    /// The earliest pending timer's time.
    pub(crate) fn next_when(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.when)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerEntry> {
        if self.next_when()? <= now {
            self.heap.pop().map(|Reverse(e)| e)
        } else {
            None
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether enough entries accumulated that dead ones should be dropped.
    pub(crate) fn needs_compaction(&self) -> bool {
        self.heap.len() >= self.compact_at
    }

    /// Drops every entry for which `live` is false: superseded or closed deadlines, dropped
    /// sleeps. Without this, connections closed with long deadlines would keep their timers
    /// until they fall due (Go stops them in `pollUnblock`).
    pub(crate) fn compact(&mut self, mut live: impl FnMut(&TimerKind) -> bool) {
        let entries = core::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse(e)| live(&e.kind))
            .collect();
        self.compact_at = (self.heap.len() * 2).max(MIN_COMPACT);
    }
}

impl SleepSlot {
    /// Marks the sleep fired and returns its waker, to be woken outside the heap lock.
    pub(crate) fn fire(&self) -> Option<Waker> {
        // Release: publishes "fired" to the Acquire load in `Sleep::poll`; taking the waker under
        // the slot lock after the store means a concurrent poll either sees `fired` or has
        // stored a waker that we take.
        self.fired.store(true, Ordering::Release);
        self.waker.lock().take()
    }
}

impl Shared {
    /// Adds a timer, compacting dead ones when the heap has doubled, and breaks a blocked
    /// poll that would sleep past it.
    pub(super) fn add_timer(&self, when: Instant, kind: TimerKind) {
        {
            let mut timers = self.timers.lock();
            timers.push(when, kind);
            if timers.needs_compaction() {
                timers.compact(|kind| match kind {
                    // Only the heap holds it: the `Sleep` future was dropped.
                    TimerKind::Sleep(slot) => Arc::strong_count(slot) > 1,
                    TimerKind::Deadline(arm) => self
                        .pds
                        .get(arm.key)
                        .is_some_and(|pd| pd.timer_is_current(arm)),
                });
            }
        }
        // Go: wakeNetPoller. SeqCst: pairs with the poller's `polling` store before it reads
        // the timer heap to compute its timeout.
        // `poll_until == 0`: the poller is still computing its timeout; break it to be safe
        // ("this can have a spurious wakeup but should never miss a wakeup").
        let until = self.poll_until.load(Ordering::SeqCst);
        // Nobody blocked in the source means some worker is running: it fires due timers at its
        // next turn, and becomes the poller (timeout = earliest timer) when it runs out of work.
        if self.polling.load(Ordering::SeqCst) && (until == 0 || when.as_nanos() < until) {
            self.notifier.notify();
        }
    }
}
