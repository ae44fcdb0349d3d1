//! netpoll's echo server as an x86_64 UEFI application: a unikernel with no operating system.
//!
//! It runs the same pieces as `netpoll echo --backend tap`, with the TAP device replaced by a
//! virtio-net NIC: netpoll-core's scheduler, netpoll-drivers' smoltcp backend over
//! [`netpoll_drivers::virtio::VirtioNet`], and the echo loop of `netpoll_stack::echo`. UEFI
//! boot services provide the rest: memory (the `uefi` crate's global allocator), the console
//! (its logger), a panic handler, and the idle wait (a timer event and the NIC's interrupt;
//! the firmware halts the CPU while it waits). The clock is the TSC, calibrated against the
//! firmware's `Stall`.
//!
//! It listens on 10.8.0.2:9009 (MAC from the NIC, no gateway) and never returns. Boot it with
//! `hosted/scripts/uefi-echo.sh`; see `docs/porting.md` (UEFI unikernel).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod sys;

use alloc::sync::Arc;
use core::fmt;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;

use log::{error, info, warn};
use netpoll_core::sync::{AtomicBool, AtomicU64, Ordering};
use netpoll_core::{Clock, Instant, Scheduler};
use netpoll_drivers::smoltcp::wire::IpCidr;
use netpoll_drivers::virtio::virtio_drivers::transport::pci::bus::{
    ConfigurationAccess, DeviceFunction,
};
use netpoll_drivers::virtio::{self, PciTransport, PortConfigAccess, VirtioIngress};
use netpoll_drivers::{Config, DriverError, Host, SmolBackend, SmolSource, Wait};
use netpoll_stack::echo::{EchoOptions, EchoServer};
use netpoll_stack::TcpListener;
use uefi::boot;
use uefi::prelude::*;
use uefi::proto::network::snp::SimpleNetwork;

use sys::{NicInterrupt, TimerEvent, UefiHal};

/// The guest's address on the link (the host side is 10.8.0.1/24).
const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const PREFIX: u8 = 24;
const PORT: u16 = 9009;
/// Accept queue (smoltcp sockets kept listening).
const BACKLOG: u32 = 128;
/// Connections served at once; one more is reset with a log line. Each costs its smoltcp
/// buffers (12 KiB by default) and a small task, so 4096 stay under 64 MiB.
const MAX_CONNECTIONS: usize = 4096;
/// Longest sleep between checks of the receive queue while idle. The firmware's timer tick
/// rounds it up; a frame arriving meanwhile waits for the next tick.
const POLL_SLICE: Duration = Duration::from_millis(1);
/// The firmware's timer tick the guest asks for (OVMF's default is 10 ms, set here so that
/// other firmware behaves the same): how late an idle guest notices a frame, at the cost of a
/// timer interrupt and a pass of the wait loop per tick. Under QEMU TCG each tick costs about
/// 0.15 ms of host CPU: 1 ms ticks kept an idle guest at 16% of a host core, 5 ms at 6%,
/// 10 ms at 3%.
const TIMER_TICK: Duration = Duration::from_millis(10);
/// After a frame or a wake-up, the idle wait spins on the receive queue instead of sleeping
/// for this long: a conversation in progress is answered in microseconds, and a quiet guest
/// still halts.
const HOT_WINDOW: Duration = Duration::from_millis(5);
/// How often the counters are logged while they change.
const STATS_EVERY: Duration = Duration::from_secs(10);

type Nic = virtio::VirtioNet<UefiHal, PciTransport>;

/// The TSC as a [`Clock`], its rate measured against the firmware's `Stall`.
#[derive(Debug)]
struct TscClock {
    start: u64,
    hz: u64,
}

impl TscClock {
    /// Measures the TSC's rate over `over` of `Stall`.
    fn calibrate(over: Duration) -> Arc<Self> {
        let start = sys::rdtsc();
        boot::stall(over);
        let ticks = sys::rdtsc().wrapping_sub(start).max(1);
        let hz = (u128::from(ticks) * 1_000_000_000 / over.as_nanos().max(1)) as u64;
        Arc::new(TscClock {
            start,
            hz: hz.max(1),
        })
    }
}

impl Clock for TscClock {
    fn now(&self) -> Instant {
        let ticks = sys::rdtsc().wrapping_sub(self.start);
        let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(self.hz);
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Longest sleep while the NIC's interrupt can wake the guest (a timeout of the scheduler
/// shortens it).
const IRQ_SLICE: Duration = Duration::from_secs(1);

/// The idle wait: sleep until the NIC's interrupt or a UEFI timer, checking the NIC's receive
/// queue and the scheduler's wake flag between sleeps. Without the interrupt, in slices of
/// [`POLL_SLICE`] (so up to a timer tick late).
struct UefiWaiter {
    ingress: VirtioIngress<UefiHal, PciTransport>,
    clock: Arc<TscClock>,
    timer: Option<TimerEvent>,
    irq: Option<NicInterrupt>,
    woken: AtomicBool,
    /// When the last wait ended because of a frame or a wake-up (nanoseconds on `clock`).
    last_activity: AtomicU64,
}

impl fmt::Debug for UefiWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UefiWaiter")
            .field("timer", &self.timer.is_some())
            .finish_non_exhaustive()
    }
}

impl UefiWaiter {
    fn new(
        ingress: VirtioIngress<UefiHal, PciTransport>,
        clock: Arc<TscClock>,
        irq: Option<NicInterrupt>,
    ) -> Self {
        let timer = match TimerEvent::new() {
            Ok(t) => Some(t),
            Err(e) => {
                warn!("no UEFI timer event ({e}): idle waits will spin in Stall");
                None
            }
        };
        UefiWaiter {
            ingress,
            clock,
            timer,
            irq,
            woken: AtomicBool::new(false),
            last_activity: AtomicU64::new(0),
        }
    }

    /// The longest sleep before the receive queue must be looked at again.
    fn slice(&self) -> Duration {
        if self.irq.is_some() {
            IRQ_SLICE
        } else {
            POLL_SLICE
        }
    }

    fn sleep(&self, d: Duration) {
        match (&self.timer, &self.irq) {
            (Some(timer), Some(irq)) => {
                // Lower the line, unmask it, then look once more: a frame used before the
                // acknowledgement raises no new interrupt, one used after it fires at once.
                self.ingress.ack_interrupt();
                irq.arm();
                if self.ingress.frame_waiting() {
                    return;
                }
                if let Err(e) = timer.sleep_or(d, irq.event()) {
                    warn!("UEFI WaitForEvent failed ({e}); stalling instead");
                    boot::stall(d.min(POLL_SLICE));
                }
            }
            (Some(timer), None) => {
                if let Err(e) = timer.sleep(d) {
                    warn!("UEFI WaitForEvent failed ({e}); stalling instead");
                    boot::stall(d);
                }
            }
            (None, _) => boot::stall(d.min(POLL_SLICE)),
        }
    }
}

impl Wait for UefiWaiter {
    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError> {
        let deadline = timeout.map(|t| self.clock.now() + t);
        // Relaxed (all three): one thread sets and reads them (the guest has one CPU).
        let hot_until =
            Instant::from_nanos(self.last_activity.load(Ordering::Relaxed)) + HOT_WINDOW;
        loop {
            if self.woken.swap(false, Ordering::Relaxed) || self.ingress.frame_waiting() {
                let now = self.clock.now().as_nanos();
                self.last_activity.store(now, Ordering::Relaxed);
                return Ok(());
            }
            let now = self.clock.now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            if now < hot_until {
                core::hint::spin_loop();
                continue;
            }
            let slice = deadline.map_or(self.slice(), |d| (d - now).min(self.slice()));
            self.sleep(slice);
        }
    }

    fn wake(&self) {
        // Relaxed: as in `wait`.
        self.woken.store(true, Ordering::Relaxed);
    }
}

/// Stops the firmware's own network stack on every NIC it drives, so that only this program
/// uses the virtio queues: `DisconnectController` on each Simple Network handle stops the
/// drivers layered on it (MNP and above, which poll the NIC from timer callbacks). The
/// firmware's NIC driver itself stays bound but idle; the device reset in `open_pci` takes
/// the device from it.
fn quiet_firmware_network() {
    let handles = match boot::find_handles::<SimpleNetwork>() {
        Ok(h) => h,
        // No firmware NIC driver bound: nothing to stop.
        Err(_) => return,
    };
    let (mut stopped, mut failed) = (0, 0);
    for handle in handles {
        match boot::disconnect_controller(handle, None, None) {
            Ok(()) => stopped += 1,
            Err(_) => failed += 1,
        }
    }
    info!(
        "firmware network stack: {stopped} NIC handle(s) disconnected, {failed} left as they were"
    );
}

/// The NIC's interrupt, read from its PCI configuration (interrupt line) and registered with
/// the firmware; `None` (the idle wait then polls on timer ticks) when that fails.
fn nic_interrupt(at: DeviceFunction) -> Option<NicInterrupt> {
    let line = PortConfigAccess::new().read_word(at, 0x3c) & 0xff;
    let irq = match u8::try_from(line) {
        Ok(irq @ 1..=15) => irq,
        _ => {
            warn!("the NIC has no interrupt line ({line:#x}): polling on timer ticks");
            return None;
        }
    };
    match NicInterrupt::install(irq) {
        Ok(i) => {
            info!("NIC interrupt: IRQ {irq}, vector {:#x}", i.vector());
            Some(i)
        }
        Err(e) => {
            warn!("could not take the NIC's interrupt IRQ {irq} ({e}): polling on timer ticks");
            None
        }
    }
}

/// Counts from the NIC and the server, logged every [`STATS_EVERY`] while they change.
async fn log_stats(
    handle: netpoll_core::Handle,
    server: EchoServer<SmolBackend<Nic>>,
    ingress: VirtioIngress<UefiHal, PciTransport>,
) {
    let mut last = None;
    loop {
        handle.sleep(STATS_EVERY).await;
        let (s, n) = (server.stats(), ingress.stats());
        if last == Some((s, n)) {
            continue;
        }
        last = Some((s, n));
        info!(
            "stats: {} accepted, {} active, {} reset by peer, {} other errors, {} refused; \
             frames {} in, {} out, {} lost on send",
            s.accepted,
            s.active,
            s.resets,
            s.errors,
            s.refused,
            n.rx_frames,
            n.tx_frames,
            n.tx_errors
        );
    }
}

fn run() -> Result<(), alloc::string::String> {
    use alloc::format;
    let entry = sys::rdtsc();
    // The firmware resets the machine after 5 minutes in an application unless told not to.
    if let Err(e) = boot::set_watchdog_timer(0, 0x1_0000, None) {
        warn!("could not disable the UEFI watchdog ({e}): the firmware may reset in 5 minutes");
    }
    let clock = TscClock::calibrate(Duration::from_millis(50));
    info!("TSC at {} MHz", clock.hz / 1_000_000);

    match sys::set_timer_tick(TIMER_TICK) {
        Ok(old) => info!("firmware timer tick {old:?} -> {TIMER_TICK:?}"),
        Err(e) => warn!("could not set the firmware timer tick ({e}): idle latency is its default"),
    }
    quiet_firmware_network();
    let (nic, at) = virtio::open_pci::<UefiHal>().map_err(|e| format!("{e}"))?;
    let mac = nic.mac_address();
    info!("virtio-net at PCI {at}, MAC {mac}");
    let ingress = nic.ingress();

    let mut config = Config::with_address(IpCidr::new(ADDRESS.into(), PREFIX), mac);
    // Initial sequence numbers differ per boot.
    config.random_seed = sys::rdtsc();
    config.max_backlog = config.max_backlog.max(BACKLOG);
    let host = Host::new(nic, config, clock.clone()).map_err(|e| format!("smoltcp host: {e}"))?;
    let irq = nic_interrupt(at);
    let waiter = UefiWaiter::new(ingress.clone(), clock.clone(), irq);
    let source = SmolSource::new(waiter).with_host(host.clone());
    let mut scheduler = Scheduler::new(source, clock.clone());
    let backend = SmolBackend::new(host, scheduler.handle().clone());

    let server = EchoServer::new(EchoOptions {
        max_connections: MAX_CONNECTIONS,
        ..EchoOptions::default()
    });
    let run = async {
        let addr = SocketAddr::from((ADDRESS, PORT));
        let listener = TcpListener::bind_with_backlog(&backend, addr, BACKLOG)
            .map_err(|e| format!("listen on {addr}: {e}"))?;
        let since_entry = sys::rdtsc().wrapping_sub(entry) / (clock.hz / 1000).max(1);
        info!(
            "netpoll echo: listening on {addr} (backend virtio-net, {since_entry} ms after entry)"
        );
        let handle = listener.handle().clone();
        handle.spawn(log_stats(handle.clone(), server.clone(), ingress));
        server.serve(&listener).await;
        Ok::<(), alloc::string::String>(())
    };
    match scheduler.try_block_on(run) {
        Ok(r) => r,
        Err(e) => Err(format!("scheduler stopped: {e}")),
    }
}

#[entry]
fn main() -> Status {
    if uefi::helpers::init().is_err() {
        return Status::ABORTED;
    }
    // The drivers' per-connection debug lines would cost a console write each.
    log::set_max_level(log::LevelFilter::Info);
    info!("netpoll uefi-echo {}", env!("CARGO_PKG_VERSION"));
    match run() {
        Ok(()) => {
            error!("netpoll echo: the listener closed; stopping");
            Status::SUCCESS
        }
        Err(e) => {
            error!("netpoll echo: {e}");
            Status::ABORTED
        }
    }
}
