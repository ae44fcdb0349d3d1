//! What needs `unsafe` in the guest: the DMA memory the NIC reaches, the TSC, the UEFI
//! events the idle loop sleeps on, the firmware's timer tick, and the NIC's interrupt.
#![allow(unsafe_code)]

use core::ffi::c_void;
use core::ptr::NonNull;
use core::time::Duration;

use netpoll_core::sync::{AtomicUsize, Ordering};
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

/// The firmware's CPU protocol (`EFI_CPU_ARCH_PROTOCOL`), for its interrupt handler table.
#[repr(C)]
#[uefi::proto::unsafe_protocol("26baccb1-6f42-11d4-bce7-0080c73c8881")]
struct CpuArch {
    flush_data_cache: usize,
    enable_interrupt: usize,
    disable_interrupt: usize,
    get_interrupt_state: usize,
    init: usize,
    register_interrupt_handler: unsafe extern "efiapi" fn(
        this: *const CpuArch,
        vector: isize,
        handler: Option<unsafe extern "efiapi" fn(vector: isize, context: *mut c_void)>,
    ) -> Status,
}

/// The I/O APIC of a PC (QEMU's i440FX and Q35 both put it here): register select at +0,
/// data window at +0x10.
const IOAPIC: usize = 0xfec0_0000;
/// The local APIC's end-of-interrupt register.
const LAPIC_EOI: usize = 0xfee0_00b0;
/// The local APIC's ID register (the ID in bits 24-31).
const LAPIC_ID: usize = 0xfee0_0020;
/// Redirection entry bits: level-triggered, masked.
const REDIR_LEVEL: u32 = 1 << 15;
const REDIR_MASKED: u32 = 1 << 16;
/// Vectors tried for the NIC's interrupt, above the firmware's usual ones.
const VECTORS: core::ops::RangeInclusive<u8> = 0x50..=0x5f;

fn mmio_write(addr: usize, value: u32) {
    // SAFETY: `addr` is one of the APIC registers above, identity-mapped as device memory by
    // the firmware; a 32-bit volatile access is what the APICs expect.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

fn mmio_read(addr: usize) -> u32 {
    // SAFETY: as in `mmio_write`.
    unsafe { (addr as *const u32).read_volatile() }
}

fn ioapic_write(register: u32, value: u32) {
    mmio_write(IOAPIC, register);
    mmio_write(IOAPIC + 0x10, value);
}

fn ioapic_read(register: u32) -> u32 {
    mmio_write(IOAPIC, register);
    mmio_read(IOAPIC + 0x10)
}

/// What the interrupt handler needs, set once before the handler is registered: the low word
/// of the NIC's redirection entry (masked) and its register, and the event it signals.
/// Integers, as the handler reads them with no lock.
static MASKED_ENTRY: AtomicUsize = AtomicUsize::new(0);
static ENTRY_REGISTER: AtomicUsize = AtomicUsize::new(0);
static NIC_EVENT: AtomicUsize = AtomicUsize::new(0);

/// The NIC's interrupt handler: masks its I/O APIC entry (the line is level-triggered and
/// stays raised until the main loop acknowledges the device), ends the interrupt at the local
/// APIC, and signals the event the idle wait sleeps on.
unsafe extern "efiapi" fn nic_interrupt(_vector: isize, _context: *mut c_void) {
    // Acquire: pairs with the Release stores in `NicInterrupt::install`, made before the
    // handler was registered.
    let register = ENTRY_REGISTER.load(Ordering::Acquire) as u32;
    ioapic_write(register, MASKED_ENTRY.load(Ordering::Acquire) as u32);
    mmio_write(LAPIC_EOI, 0);
    let event = NIC_EVENT.load(Ordering::Acquire) as *mut c_void;
    // SAFETY: `event` is the event `install` created and never closes.
    if let Some(event) = unsafe { Event::from_ptr(event) } {
        let _ = boot::signal_event(&event);
    }
}

/// Why the NIC's interrupt could not be taken.
#[derive(Debug)]
pub enum IrqError {
    /// No I/O APIC answers at its usual address, or it has no entry for the line.
    NoIoApic(u32),
    /// A firmware call failed.
    Firmware(&'static str, uefi::Error),
    /// Every vector tried was taken.
    NoVector,
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IrqError::NoIoApic(v) => write!(
                f,
                "no I/O APIC entry for the line (version register {v:#x})"
            ),
            IrqError::Firmware(what, e) => write!(f, "{what}: {e}"),
            IrqError::NoVector => write!(f, "vectors {VECTORS:#x?} all taken"),
        }
    }
}

/// The NIC's interrupt as a wake-up for the idle wait: routed through the I/O APIC to a
/// vector of ours, whose handler signals a UEFI event.
#[derive(Debug)]
pub struct NicInterrupt {
    event: TimerEvent,
    register: u32,
    entry: u32,
    vector: u8,
}

impl NicInterrupt {
    /// Routes `irq` (the NIC's PCI interrupt line, an ISA IRQ number, which QEMU wires to the
    /// I/O APIC pin of the same number, level-triggered and active high) to a handler. The
    /// entry stays masked until [`NicInterrupt::arm`].
    pub fn install(irq: u8) -> Result<Self, IrqError> {
        let version = ioapic_read(1);
        let entries = ((version >> 16) & 0xff) + 1;
        if version == u32::MAX || u32::from(irq) >= entries {
            return Err(IrqError::NoIoApic(version));
        }
        let fw = |what| move |e| IrqError::Firmware(what, e);
        let cpu_handle = boot::get_handle_for_protocol::<CpuArch>().map_err(fw("CPU protocol"))?;
        // SAFETY: the CPU protocol is installed for the firmware's lifetime and never
        // reinstalled; the reference is kept (leaked) for the program's lifetime.
        let cpu = unsafe {
            boot::open_protocol::<CpuArch>(
                boot::OpenProtocolParams {
                    handle: cpu_handle,
                    agent: boot::image_handle(),
                    controller: None,
                },
                boot::OpenProtocolAttributes::GetProtocol,
            )
        }
        .map_err(fw("CPU protocol"))?;
        let cpu_ptr: *const CpuArch = &*cpu;
        core::mem::forget(cpu);
        // SAFETY: no notification function; a plain event that `nic_interrupt` signals.
        let event = unsafe { boot::create_event(EventType::empty(), Tpl::CALLBACK, None, None) }
            .map_err(fw("CreateEvent"))?;
        let register = 0x10 + 2 * u32::from(irq);
        let apic_id = mmio_read(LAPIC_ID) >> 24;
        for vector in VECTORS {
            let entry = u32::from(vector) | REDIR_LEVEL;
            ioapic_write(register + 1, apic_id << 24);
            ioapic_write(register, entry | REDIR_MASKED);
            ENTRY_REGISTER.store(register as usize, Ordering::Release);
            MASKED_ENTRY.store((entry | REDIR_MASKED) as usize, Ordering::Release);
            NIC_EVENT.store(event.as_ptr() as usize, Ordering::Release);
            // SAFETY: `nic_interrupt` only reads what was stored above; the vector is free
            // (the firmware refuses one that has a handler).
            let status = unsafe {
                ((*cpu_ptr).register_interrupt_handler)(
                    cpu_ptr,
                    isize::from(vector),
                    Some(nic_interrupt),
                )
            };
            if status.is_success() {
                return Ok(NicInterrupt {
                    event: TimerEvent(event),
                    register,
                    entry,
                    vector,
                });
            }
        }
        Err(IrqError::NoVector)
    }

    /// The CPU vector the line arrives on.
    pub fn vector(&self) -> u8 {
        self.vector
    }

    /// Unmasks the entry (level-triggered): if the device's interrupt is raised, the handler
    /// runs at once.
    pub fn arm(&self) {
        ioapic_write(self.register, self.entry);
    }

    /// The event the handler signals.
    pub fn event(&self) -> &Event {
        &self.event.0
    }
}

impl TimerEvent {
    /// Halts the CPU until `d` has passed or `other` is signalled; returns whether `other`
    /// was (consuming the signal).
    pub fn sleep_or(&self, d: Duration, other: &Event) -> uefi::Result<bool> {
        boot::set_timer(&self.0, TimerTrigger::Relative(d))?;
        // SAFETY: the array only lends the two handles to `WaitForEvent`; neither is closed.
        let events = unsafe { [self.0.unsafe_clone(), other.unsafe_clone()] };
        let index = boot::wait_for_event(&events).map_err(|e| e.to_err_without_payload())?;
        Ok(index == 1)
    }
}
