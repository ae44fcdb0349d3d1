//! The pollDesc slab. Go: `pollCache`.
//!
//! Descriptors are type-stable: a slot, once created, lives as long as the cache, because a
//! readiness event or a timer may still name it after its socket closed (Go: "must be in non-GC
//! memory because can be referenced only from epoll/kqueue internals"). Freed slots get a new
//! generation and go on a free list.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{PollDesc, Woken};
use crate::source::{Key, Readiness};
use crate::sync::Mutex;

#[derive(Debug, Default)]
struct Slab {
    slots: Vec<Arc<PollDesc>>,
    free: Vec<u32>,
}

/// The set of all pollDescs of one scheduler. Go: `pollcache`.
#[derive(Debug, Default)]
pub struct PollCache {
    slab: Mutex<Slab>,
}

impl PollCache {
    /// An empty cache.
    pub fn new() -> Self {
        PollCache {
            slab: Mutex::new(Slab::default()),
        }
    }

    /// Takes a descriptor off the free list (or creates one) and opens it.
    /// Go: `pollCache.alloc` + `poll_runtime_pollOpen`.
    ///
    /// # Panics
    /// After 2^27 live descriptors (the slot index shares the pollDesc's summary word).
    pub fn alloc(&self) -> Arc<PollDesc> {
        let pd = {
            let mut slab = self.slab.lock();
            match slab.free.pop() {
                Some(slot) => slab.slots[slot as usize].clone(),
                None => {
                    let slot = u32::try_from(slab.slots.len())
                        .ok()
                        .filter(|&s| s <= super::state::MAX_SLOT)
                        .expect("poll_cache: slot space exhausted");
                    let pd = Arc::new(PollDesc::new(slot, 1));
                    slab.slots.push(pd.clone());
                    pd
                }
            }
        };
        pd.open();
        pd
    }

    /// Retires a descriptor after [`PollDesc::evict`] and after its handle was deregistered
    /// from the readiness source. Go: `poll_runtime_pollClose` + `pollCache.free`.
    ///
    /// # Panics
    /// If the descriptor was not evicted or still has a parked waiter (Go's "close polldesc
    /// w/o unblock", "blocked read on closing polldesc").
    pub fn free(&self, pd: &PollDesc) {
        pd.retire();
        self.slab.lock().free.push(pd.slot());
    }

    /// The descriptor `key` names, if its generation is current.
    pub fn get(&self, key: Key) -> Option<Arc<PollDesc>> {
        let pd = self.slab.lock().slots.get(key.slot() as usize)?.clone();
        (pd.key() == key).then_some(pd)
    }

    /// Delivers one readiness event. Stale keys are dropped. Go: the `fdseq` check in
    /// `netpoll` followed by `netpollready`.
    pub fn ready(&self, key: Key, readiness: Readiness) -> Woken {
        // Under the slab lock, without cloning the `Arc`: `ready` only flips atomics and
        // returns the wakers, which the caller wakes after the lock is gone. Saves two
        // reference-count RMWs per event on the poller's hot path. Nothing here may drop a
        // waker: dropping a task can drop its socket, whose `free` takes this lock.
        let slab = self.slab.lock();
        match slab.slots.get(key.slot() as usize) {
            // The generation is re-checked inside `ready` and `set_event_err` (Go #59545).
            Some(pd) => pd.ready(key, readiness),
            None => Woken::default(),
        }
    }

    /// Number of descriptors in use.
    pub fn in_use(&self) -> usize {
        let slab = self.slab.lock();
        slab.slots.len() - slab.free.len()
    }
}
