//! What the board provides and what needs `unsafe`: the entry point, the heap, the stack
//! gauge.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;

use embedded_alloc::LlffHeap;
use netpoll_core::sync::{AtomicUsize, Ordering};

/// The heap: what a small microcontroller can spare after its statics and stack.
pub const HEAP_SIZE: usize = 192 * 1024;

/// embedded-alloc's first-fit heap, with its high-water mark kept.
pub struct MeteredHeap {
    heap: LlffHeap,
    peak: AtomicUsize,
}

impl MeteredHeap {
    const fn new() -> Self {
        MeteredHeap {
            heap: LlffHeap::empty(),
            peak: AtomicUsize::new(0),
        }
    }

    /// The most bytes in use at once (allocator bookkeeping and alignment included).
    pub fn peak(&self) -> usize {
        // Relaxed: a statistic read after the run; it orders no other memory.
        self.peak.load(Ordering::Relaxed)
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.heap.used()
    }
}

// SAFETY: every method forwards to `LlffHeap` with the caller's arguments unchanged, so its
// guarantees are the caller's; the high-water mark is only bookkeeping on an atomic.
unsafe impl GlobalAlloc for MeteredHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { self.heap.alloc(layout) };
        if !ptr.is_null() {
            // Relaxed: as in `peak`.
            self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `self.heap` with `layout` (the caller's contract).
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
pub static HEAP: MeteredHeap = MeteredHeap::new();

/// Hands the heap its memory. Called once, first thing in `main`.
fn init_heap() {
    static mut HEAP_MEMORY: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: called once, before any allocation; `HEAP_MEMORY` is used by nothing else, and
    // `&raw mut` takes its address without creating a reference.
    unsafe { HEAP.heap.init((&raw mut HEAP_MEMORY) as usize, HEAP_SIZE) }
}

/// Paints the free RAM between the heap's end and the stack with this word, so that the
/// deepest stack use can be read back afterwards.
const STACK_PAINT: u32 = 0x5a5a_5a5a;
/// Left unpainted below the stack pointer at the time of painting (the painter's own frame).
const PAINT_MARGIN: usize = 256;

extern "C" {
    /// cortex-m-rt's `link.x`: the end of `.bss`/`.uninit`, where a heap region would start.
    static __sheap: u32;
    /// cortex-m-rt's `link.x`: the initial stack pointer, the top of RAM.
    static _stack_start: u32;
}

fn ram_bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken; nothing is read through them.
    (
        &raw const __sheap as usize,
        &raw const _stack_start as usize,
    )
}

/// Fills the unused RAM below the stack with [`STACK_PAINT`].
fn paint_stack() {
    let (bottom, _) = ram_bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut at = bottom;
    while at + 4 <= sp.saturating_sub(PAINT_MARGIN) {
        // SAFETY: [__sheap, sp - margin) is RAM that no Rust object occupies: above every
        // static (the heap memory included) and below the live stack, which grows down from
        // `_stack_start` and has not reached there yet.
        unsafe { core::ptr::write_volatile(at as *mut u32, STACK_PAINT) };
        at += 4;
    }
}

/// The deepest the stack has reached since [`paint_stack`], in bytes, and the RAM it had.
pub fn stack_peak() -> (usize, usize) {
    let (bottom, top) = ram_bounds();
    let mut at = bottom;
    // SAFETY: as in `paint_stack`; the stack may since have written there, which is what is
    // looked for, and reading a word of RAM is always defined.
    while at < top && unsafe { core::ptr::read_volatile(at as *const u32) } == STACK_PAINT {
        at += 4;
    }
    (top - at, top - bottom)
}

#[cortex_m_rt::entry]
fn entry() -> ! {
    init_heap();
    paint_stack();
    crate::main()
}
