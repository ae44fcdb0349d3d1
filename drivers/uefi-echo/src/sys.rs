//! What needs `unsafe` in the guest: the DMA memory the NIC reaches, the TSC, and the UEFI
//! timer event the idle loop sleeps on.
#![allow(unsafe_code)]

use core::ptr::NonNull;
use core::time::Duration;

use netpoll_drivers::virtio::{BufferDirection, Hal, PhysAddr};
use uefi::boot::{self, AllocateType, EventType, MemoryType, TimerTrigger, Tpl};
use uefi::{Event, Status, StatusExt};

/// Size of a page as `Hal::dma_alloc` counts them.
const PAGE: usize = 4096;

/// DMA for virtio under UEFI boot services: memory is identity-mapped (physical address ==
/// virtual address) and the device is cache-coherent, so sharing a buffer is naming its
/// address, and DMA memory is pages from `AllocatePages`.
#[derive(Debug)]
pub struct UefiHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned pages that stay allocated until
// `dma_dealloc`, at an address the device reaches unchanged (identity map, no IOMMU under
// OVMF); `share` returns the buffer's own address for the same reason; `mmio_phys_to_virt`
// is the identity because UEFI maps MMIO one to one.
unsafe impl Hal for UefiHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match boot::allocate_pages(AllocateType::AnyPages, MemoryType::LOADER_DATA, pages) {
            Ok(ptr) => {
                // SAFETY: `allocate_pages` returned `pages` pages at `ptr`, ours alone.
                unsafe { ptr.as_ptr().write_bytes(0, pages * PAGE) };
                (ptr.as_ptr() as PhysAddr, ptr)
            }
            // `virtio-drivers` reads a zero physical address as "allocation failed".
            Err(_) => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what `dma_alloc` returned, no longer in use.
        match unsafe { boot::free_pages(vaddr, pages) } {
            Ok(()) => 0,
            Err(_) => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // A BAR at address 0 would be unassigned; `PciTransport` rejects those before this.
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A UEFI timer event that the idle loop waits on, created once.
#[derive(Debug)]
pub struct TimerEvent(Event);

// SAFETY: the event is a firmware handle; the guest runs on one CPU and calls boot services
// only from its one thread, so the handle is never used concurrently.
unsafe impl Send for TimerEvent {}
// SAFETY: as for `Send`.
unsafe impl Sync for TimerEvent {}

impl TimerEvent {
    /// A timer event without a notification function.
    pub fn new() -> uefi::Result<Self> {
        // SAFETY: no notification function, so nothing runs at exit from boot services.
        let event = unsafe { boot::create_event(EventType::TIMER, Tpl::CALLBACK, None, None)? };
        Ok(TimerEvent(event))
    }

    /// Halts the CPU until `d` has passed (rounded up to the firmware's timer tick). The
    /// firmware's `WaitForEvent` executes `hlt` between ticks, so the guest costs the host
    /// almost nothing while it waits.
    pub fn sleep(&self, d: Duration) -> uefi::Result<()> {
        boot::set_timer(&self.0, TimerTrigger::Relative(d))?;
        boot::wait_for_event(core::slice::from_ref(&self.0))
            .map_err(|e| e.to_err_without_payload())?;
        Ok(())
    }
}

/// The firmware's timer tick (`EFI_TIMER_ARCH_PROTOCOL`, a PI protocol every EDK2 firmware
/// has): `WaitForEvent` wakes only on ticks, so the tick bounds how late an idle guest
/// notices a frame.
#[repr(C)]
#[uefi::proto::unsafe_protocol("26baccb3-6f42-11d4-bce7-0080c73c8881")]
struct TimerArch {
    register_handler: usize,
    set_timer_period: unsafe extern "efiapi" fn(this: *const TimerArch, period: u64) -> Status,
    get_timer_period: unsafe extern "efiapi" fn(this: *const TimerArch, period: *mut u64) -> Status,
    generate_soft_interrupt: usize,
}

/// Sets the firmware's timer tick to `tick` (at least 100 ns); returns the tick it had.
pub fn set_timer_tick(tick: Duration) -> uefi::Result<Duration> {
    let handle = boot::get_handle_for_protocol::<TimerArch>()?;
    // SAFETY: the timer protocol is installed for the firmware's lifetime and never
    // reinstalled; this program is its only caller while it runs (one CPU, one thread).
    let timer = unsafe {
        boot::open_protocol::<TimerArch>(
            boot::OpenProtocolParams {
                handle,
                agent: boot::image_handle(),
                controller: None,
            },
            boot::OpenProtocolAttributes::GetProtocol,
        )?
    };
    let this: *const TimerArch = &*timer;
    let mut old = 0u64;
    // SAFETY: `this` is the protocol instance the firmware handed out; both functions take it
    // and a plain value or out-pointer, as the PI specification defines them.
    unsafe {
        (timer.get_timer_period)(this, &mut old).to_result()?;
        let units = u64::try_from(tick.as_nanos() / 100)
            .unwrap_or(u64::MAX)
            .max(1);
        (timer.set_timer_period)(this, units).to_result()?;
    }
    Ok(Duration::from_nanos(old.saturating_mul(100)))
}
