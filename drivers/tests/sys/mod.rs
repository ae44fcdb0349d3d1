//! A counting global allocator: the heap the test process has live now and at its peak.

use netpoll_core::sync::{AtomicUsize, Ordering};
use std::alloc::{GlobalAlloc, Layout, System};

/// `System`, counting the bytes requested and not yet freed.
pub struct CountingAlloc {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingAlloc {
    pub const fn new() -> Self {
        CountingAlloc {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        // Relaxed: a statistic; it orders no other memory.
        self.live.load(Ordering::Relaxed)
    }

    /// The largest `live` since the last [`CountingAlloc::reset_peak`].
    pub fn peak(&self) -> usize {
        // Relaxed: as in `live`.
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak from what is live now.
    pub fn reset_peak(&self) {
        // Relaxed: as in `live`.
        self.peak.store(self.live(), Ordering::Relaxed);
    }

    fn grew(&self, by: usize) {
        // Relaxed: a statistic; `fetch_max` keeps the peak exact even across threads.
        let now = self.live.fetch_add(by, Ordering::Relaxed) + by;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, by: usize) {
        // Relaxed: as in `grew`.
        self.live.fetch_sub(by, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (so
// `System`'s guarantees are the caller's) and only adds bookkeeping on atomics, which neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            self.grew(new_size);
            self.shrank(layout.size());
        }
        new
    }
}
