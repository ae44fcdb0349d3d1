//! The TAP device (feature `tap`, Linux): smoltcp's Ethernet frames in and out of a kernel TAP
//! interface, plus the waiter that blocks in `poll(2)` on it.
//!
//! Unlike smoltcp's `TunTapInterface`, which drops a frame when the write would block and
//! panics on other errors, this device:
//!
//! * sends in batches: a frame smoltcp hands over is queued, and the queue is written out once
//!   per scheduler turn ([`Wait::flush`](crate::Wait::flush), after the drive pass), or at once
//!   when 64 are waiting. The kernel's TAP interface takes one frame per
//!   `write(2)`, so this batches the writes, not the system calls.
//! * keeps a frame the kernel cannot take now (`EAGAIN`, `ENOBUFS`, `EINTR`) queued and retries
//!   the queue, in order, on the next flush; while frames are queued the waiter also waits for
//!   `POLLOUT`. When the queue is full, `transmit` returns `None`, so smoltcp keeps the data in
//!   its socket buffers and retransmits later: no frame is dropped silently.
//! * treats a frame the kernel refuses because the interface is down (`EIO`) as lost on the
//!   wire: TCP retransmits it once the link is back, so a link flap shorter than the sockets'
//!   timeouts costs nothing but the wait. The device records the state
//!   ([`TapDevice::link_up`]) and resumes as soon as frames flow again.
//! * records any other error and reports it from the source's next poll
//!   ([`Wait::check`](crate::Wait::check)), so the scheduler stops with the error.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use netpoll_core::sync::{AtomicBool, AtomicUsize, Ordering};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use netpoll_core::{Clock, Scheduler};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};

use crate::backend::SmolBackend;
use crate::clock::MonotonicClock;
use crate::config::Config;
use crate::error::{DriverError, OPEN_TUN};
use crate::host::Host;
use crate::source::SmolSource;
use crate::sys::tap as sys;
use crate::wait::Wait;

/// Frames the device queues when the kernel pushes back, before `transmit` says "no room".
const MAX_QUEUED_FRAMES: usize = 256;

/// Queued frames that are written at once rather than at the end of the scheduler turn: a
/// drive pass that sends this many is already a batch.
const TX_FLUSH_FRAMES: usize = 64;

/// Frames waiting to be written, in order, and spare buffers to build the next ones in.
#[derive(Default)]
struct TxQueue {
    frames: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

/// State shared by the device and its waiter.
struct Shared {
    fd: OwnedFd,
    event: OwnedFd,
    /// A wake is pending (Go: `netpollWakeSig`).
    notified: AtomicBool,
    /// The waiter is in (or about to enter) `poll(2)`.
    sleeping: AtomicBool,
    /// Frames the kernel refused for now are queued: the waiter must also wait for `POLLOUT`.
    backlog: AtomicBool,
    /// Frames built in this turn, written by the next flush.
    tx: spin::Mutex<TxQueue>,
    /// The first unrecoverable error, reported by the next poll.
    error: spin::Mutex<Option<DriverError>>,
    /// The interface name, for error messages.
    name: &'static str,
    /// The kernel took our last frame (or sent us one); false after a write refused with `EIO`.
    link_up: AtomicBool,
    /// How many times the link was seen going down.
    link_downs: AtomicUsize,
}

impl Shared {
    /// Records `e`, from system call `call`, for the next poll to report (the first one wins).
    fn fail(&self, call: &'static str, e: &io::Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            let error = os_error(call, self.name, e);
            log::warn!("TAP {}: {error}", self.name);
            *slot = Some(error);
        }
    }

    /// A frame went in or out: the link is up.
    fn link_is_up(&self) {
        // Relaxed: a status flag; nothing else is published through it. The load keeps the
        // per-frame cost a read; the swap makes the transition log once.
        if !self.link_up.load(Ordering::Relaxed) && !self.link_up.swap(true, Ordering::Relaxed) {
            log::info!("TAP {}: link up (frames flow again)", self.name);
        }
    }

    /// The kernel refused a frame with `EIO`: the interface is down.
    fn link_is_down(&self) {
        // Relaxed: as above; the swap makes each transition count once.
        if self.link_up.swap(false, Ordering::Relaxed) {
            self.link_downs.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "TAP {}: link down (the kernel refuses frames with EIO; TCP retransmits)",
                self.name
            );
        }
    }

    /// Writes queued frames, in order, until the kernel pushes back.
    fn flush(&self) {
        let mut tx = self.tx.lock();
        if !tx.frames.is_empty() {
            self.flush_queue(&mut tx);
        }
    }

    fn flush_queue(&self, tx: &mut TxQueue) {
        // Bounded by the queue length: each turn pops a frame or stops.
        while let Some(frame) = tx.frames.front() {
            if self.write_frame(frame).is_err() {
                break;
            }
            if let Some(buf) = tx.frames.pop_front() {
                if tx.spare.len() < MAX_QUEUED_FRAMES {
                    tx.spare.push(buf);
                }
            }
        }
        // Release: pairs with the Acquire load in `TapWaiter::wait`; only a hint for `POLLOUT`.
        self.backlog.store(!tx.frames.is_empty(), Ordering::Release);
    }

    /// Writes one frame. `Err(())`: the kernel cannot take it now, keep it for later.
    fn write_frame(&self, frame: &[u8]) -> Result<(), ()> {
        match sys::write(self.fd.as_fd(), frame) {
            Ok(_) => self.link_is_up(),
            Err(e) if transient(&e) => return Err(()),
            // What `tun` answers while the interface is down: the frame is lost, as on a wire
            // with no carrier; TCP retransmits it.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => self.link_is_down(),
            // Reported by the next poll; the frame cannot be sent on a failed device.
            Err(e) => self.fail("write", &e),
        }
        Ok(())
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOBUFS)
    ) || e.kind() == io::ErrorKind::WouldBlock
}

/// Interface names are at most 15 bytes (`IFNAMSIZ` - 1) and contain no NUL.
fn check_name(name: &str) -> Result<(), DriverError> {
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(DriverError::InvalidConfig(
            "interface name longer than 15 bytes or containing NUL",
        ));
    }
    Ok(())
}

/// `e`, from system call `call` on `interface` ("" if none), as a driver error.
fn os_error(call: &'static str, interface: &'static str, e: &io::Error) -> DriverError {
    match e.raw_os_error() {
        // A TAP fd whose interface was deleted.
        Some(libc::EBADFD) if !interface.is_empty() => DriverError::DeviceGone { interface },
        // Without an errno: an argument or answer the sys layer rejected (a negative MTU).
        errno => DriverError::Os {
            call,
            interface,
            errno: errno.unwrap_or(libc::EINVAL),
        },
    }
}

/// `name` as a `&'static str`, so that [`DriverError`] can carry it and stay `Copy`. Each
/// distinct name is allocated once per process; processes open few interfaces.
fn intern(name: &str) -> &'static str {
    static NAMES: spin::Mutex<Vec<&'static str>> = spin::Mutex::new(Vec::new());
    let mut names = NAMES.lock();
    if let Some(&n) = names.iter().find(|&&n| n == name) {
        return n;
    }
    let n: &'static str = alloc::boxed::Box::leak(name.into());
    names.push(n);
    n
}

/// A TAP interface as a smoltcp Ethernet device (feature `tap`, Linux).
///
/// Unlike smoltcp's `TunTapInterface`, which drops a frame when the write would block and
/// panics on other errors, this device:
///
/// * queues the frames smoltcp builds and writes them together once per scheduler turn
///   ([`Wait::flush`]), or when 64 wait;
/// * keeps a frame the kernel cannot take now (`EAGAIN`, `ENOBUFS`, `EINTR`) queued and
///   retries the queue, in order, on the next flush; while frames are queued its
///   [`TapWaiter`] also waits for `POLLOUT`. When the queue is full, `transmit` returns `None`,
///   so smoltcp keeps the data in its socket buffers and retransmits later: no frame is
///   dropped silently.
/// * writes what is still queued when it is dropped (once; what the kernel refuses then is
///   lost, as frames on a wire that is unplugged).
/// * treats a frame refused because the interface is down (`EIO`) as lost on the wire (TCP
///   retransmits it), records the state ([`TapDevice::link_up`], [`TapDevice::link_downs`])
///   and carries on: a link flap is not an error.
/// * records any other error and reports it from the source's next poll
///   ([`Wait::check`]), so the scheduler stops with the error instead of panicking.
///
/// ```no_run
/// use netpoll_drivers::{Config, TapNet};
/// use netpoll_stack::TcpListener;
///
/// // Inside a namespace where `ip tuntap add tap0 mode tap; ip addr add 10.0.0.2/24 dev tap0;
/// // ip link set tap0 up` ran; smoltcp is 10.0.0.1.
/// let mut net = TapNet::open("tap0", Config::default()).unwrap();
/// let backend = net.backend.clone();
/// net.scheduler.block_on(async move {
///     let listener = TcpListener::bind(&backend, "10.0.0.1:7".parse().unwrap()).unwrap();
///     let (conn, _) = listener.accept().await.unwrap();
///     let mut buf = [0u8; 1024];
///     let n = conn.read(&mut buf).await.unwrap();
///     conn.write_all(&buf[..n]).await.unwrap();
/// });
/// ```
pub struct TapDevice {
    shared: Arc<Shared>,
    name: String,
    mtu: usize,
    rx: Vec<u8>,
}

impl Drop for TapDevice {
    fn drop(&mut self) {
        self.shared.flush();
    }
}

impl fmt::Debug for TapDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl TapDevice {
    /// Opens (creating if needed) TAP interface `name`, with the interface's own MTU.
    ///
    /// Needs `CAP_NET_ADMIN` (or a TAP device owned by the user). The interface must be brought
    /// up (`ip link set NAME up`) for frames to flow.
    pub fn open(name: &str) -> Result<TapDevice, DriverError> {
        let (fd, name) = open_tap(name)?;
        let mtu =
            sys::interface_mtu(&name).map_err(|e| os_error("SIOCGIFMTU", intern(&name), &e))?;
        TapDevice::with_fd(fd, name, mtu)
    }

    /// Opens TAP interface `name` and uses `mtu` (IP MTU) instead of the interface's.
    pub fn open_with_mtu(name: &str, mtu: usize) -> Result<TapDevice, DriverError> {
        let (fd, name) = open_tap(name)?;
        TapDevice::with_fd(fd, name, mtu)
    }

    /// Opens TAP interface `name` and sets the interface's MTU to `mtu` as well, so that the
    /// kernel's side sends frames that large: larger frames for experiments (the kernel's TAP
    /// driver takes up to 65535). Needs `CAP_NET_ADMIN`.
    pub fn open_setting_mtu(name: &str, mtu: usize) -> Result<TapDevice, DriverError> {
        let (fd, name) = open_tap(name)?;
        if mtu >= 576 {
            sys::set_interface_mtu(&name, mtu)
                .map_err(|e| os_error("SIOCSIFMTU", intern(&name), &e))?;
        }
        TapDevice::with_fd(fd, name, mtu)
    }

    fn with_fd(fd: OwnedFd, name: String, mtu: usize) -> Result<TapDevice, DriverError> {
        if mtu < 576 {
            return Err(DriverError::InvalidConfig("MTU below 576"));
        }
        let event = sys::eventfd().map_err(|e| os_error("eventfd", "", &e))?;
        log::info!("TAP {name}: opened, MTU {mtu}");
        Ok(TapDevice {
            shared: Arc::new(Shared {
                fd,
                event,
                notified: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                backlog: AtomicBool::new(false),
                tx: spin::Mutex::new(TxQueue::default()),
                error: spin::Mutex::new(None),
                name: intern(&name),
                link_up: AtomicBool::new(true),
                link_downs: AtomicUsize::new(0),
            }),
            name,
            mtu,
            rx: vec![0u8; mtu + 14],
        })
    }

    /// The interface name (the kernel's choice if opened with an empty name or a pattern).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IP MTU in use.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Frames waiting for the kernel to take them.
    pub fn queued(&self) -> usize {
        self.shared.tx.lock().frames.len()
    }

    /// Whether the link is up, as the traffic shows it: false from the first frame the kernel
    /// refused because the interface is down (`ip link set NAME down`) until a frame goes
    /// through again. True before any traffic.
    pub fn link_up(&self) -> bool {
        // Relaxed: a status flag.
        self.shared.link_up.load(Ordering::Relaxed)
    }

    /// How many times the link was seen going down since the device was opened.
    pub fn link_downs(&self) -> usize {
        // Relaxed: a counter.
        self.shared.link_downs.load(Ordering::Relaxed)
    }

    /// The waiter that blocks on this device's fd.
    pub fn waiter(&self) -> TapWaiter {
        TapWaiter {
            shared: self.shared.clone(),
            extra: None,
        }
    }
}

/// Opens `/dev/net/tun` and attaches it to TAP interface `name`.
fn open_tap(name: &str) -> Result<(OwnedFd, String), DriverError> {
    check_name(name)?;
    let fd = sys::open_tun().map_err(|e| os_error(OPEN_TUN, "", &e))?;
    let name =
        sys::set_tap(fd.as_fd(), name).map_err(|e| os_error("TUNSETIFF", intern(name), &e))?;
    Ok((fd, name))
}

#[doc(hidden)]
#[derive(Debug)]
pub struct TapRx<'a> {
    frame: &'a [u8],
}

impl RxToken for TapRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

#[doc(hidden)]
pub struct TapTx<'a> {
    shared: &'a Shared,
}

impl fmt::Debug for TapTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TapTx")
    }
}

impl TxToken for TapTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut tx = self.shared.tx.lock();
        let mut frame = tx.spare.pop().unwrap_or_default();
        frame.clear();
        frame.resize(len, 0);
        let r = f(&mut frame[..]);
        tx.frames.push_back(frame);
        if tx.frames.len() >= TX_FLUSH_FRAMES {
            self.shared.flush_queue(&mut tx);
        }
        r
    }
}

impl Device for TapDevice {
    type RxToken<'a>
        = TapRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TapTx<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let n = match sys::read(self.shared.fd.as_fd(), &mut self.rx) {
            Ok(n) => n,
            Err(e) if transient(&e) => {
                // Nothing more to read: the frames of a pass not followed by a
                // `Wait::flush` (a device driven without its waiter) leave here.
                self.shared.flush();
                return None;
            }
            Err(e) => {
                self.shared.fail("read", &e);
                return None;
            }
        };
        self.shared.link_is_up();
        Some((
            TapRx {
                frame: &self.rx[..n],
            },
            TapTx {
                shared: &self.shared,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if self.queued() >= MAX_QUEUED_FRAMES {
            self.shared.flush();
            if self.queued() >= MAX_QUEUED_FRAMES {
                // Back-pressure: smoltcp keeps the data and retries; nothing is dropped.
                return None;
            }
        }
        Some(TapTx {
            shared: &self.shared,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// Waits in `poll(2)` on the TAP fd (readable; writable while frames are queued) and an
/// eventfd that [`Wait::wake`] signals (Go: `netpollBreak`'s eventfd), plus optionally one
/// more descriptor ([`TapWaiter::also_watch`]).
pub struct TapWaiter {
    shared: Arc<Shared>,
    /// A descriptor whose readability also ends a wait (another poller's fd).
    extra: Option<OwnedFd>,
}

impl fmt::Debug for TapWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapWaiter")
            .field("also_watches", &self.extra.is_some())
            .finish_non_exhaustive()
    }
}

impl TapWaiter {
    /// Also ends a blocking [`Wait::wait`] when `fd` is readable (or hung up), so one thread can
    /// sleep on the TAP device and on another event source at once: typically an epoll
    /// instance's descriptor, whose readiness the caller harvests after each wait
    /// (`netpoll_hosted`'s mixed source does exactly that for kernel sockets).
    ///
    /// The waiter owns `fd` (pass a duplicate to keep your own: `fd.try_clone()`). It never
    /// reads from it: whoever owns the underlying object must consume what made it readable,
    /// or every later wait returns at once. An invalid descriptor makes `wait` fail. Replaces a
    /// descriptor watched before.
    pub fn also_watch(mut self, fd: OwnedFd) -> TapWaiter {
        self.extra = Some(fd);
        self
    }

    /// [`TapDevice::link_up`] of this waiter's device: a waiter is also a handle on the link
    /// state that outlives handing the device to a [`Host`].
    pub fn link_up(&self) -> bool {
        // Relaxed: a status flag.
        self.shared.link_up.load(Ordering::Relaxed)
    }

    /// [`TapDevice::link_downs`] of this waiter's device.
    pub fn link_downs(&self) -> usize {
        // Relaxed: a counter.
        self.shared.link_downs.load(Ordering::Relaxed)
    }
}

/// Milliseconds for `poll(2)`, rounded up (a sub-millisecond wait never becomes a busy 0).
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

impl Wait for TapWaiter {
    fn flush(&self) {
        self.shared.flush();
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError> {
        let shared = &self.shared;
        // Frames of the pass that just ended leave before we sleep.
        shared.flush();
        // SeqCst: a Dekker pair with `wake`: we publish `sleeping` then read `notified`; it
        // publishes `notified` then reads `sleeping`. One of us sees the other.
        shared.sleeping.store(true, Ordering::SeqCst);
        if shared.notified.swap(false, Ordering::SeqCst) {
            shared.sleeping.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let mut events = libc::POLLIN;
        // Acquire: pairs with the Release store in `flush_queue`.
        if shared.backlog.load(Ordering::Acquire) {
            events |= libc::POLLOUT;
        }
        let r = sys::poll_fds(
            shared.fd.as_fd(),
            events,
            shared.event.as_fd(),
            self.extra.as_ref().map(AsFd::as_fd),
            timeout_ms(timeout),
        );
        // SeqCst: ends the Dekker window opened above.
        shared.sleeping.store(false, Ordering::SeqCst);
        // Whatever woke us, the drive pass that follows serves every wake issued so far.
        shared.notified.store(false, Ordering::SeqCst);
        match r {
            Ok(rev) => {
                if rev.event & libc::POLLIN != 0 {
                    match sys::eventfd_drain(shared.event.as_fd()) {
                        Ok(()) => {}
                        Err(e) if transient(&e) => {}
                        Err(e) => return Err(os_error("reading the eventfd", "", &e)),
                    }
                }
                // `tun` reports POLLERR only for a descriptor whose interface is gone.
                if rev.device & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    log::warn!("TAP {}: the interface is gone", shared.name);
                    return Err(DriverError::DeviceGone {
                        interface: shared.name,
                    });
                }
                if rev.extra & libc::POLLNVAL != 0 {
                    return Err(DriverError::Io(libc::EBADF));
                }
                // Readable (or hung up) extra fd: nothing to consume here; its owner harvests.
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(os_error("poll", shared.name, &e)),
        }
    }

    fn wake(&self) {
        let shared = &self.shared;
        // SeqCst: the other half of the Dekker pair in `wait`. Coalescing: a wake already
        // pending will be seen by the waiter's check.
        if shared.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        if shared.sleeping.load(Ordering::SeqCst) {
            if let Err(e) = sys::eventfd_signal(shared.event.as_fd()) {
                // A full counter (EAGAIN) still wakes the waiter.
                if !transient(&e) {
                    shared.fail("signalling the eventfd", &e);
                }
            }
        }
    }

    fn check(&self) -> Result<(), DriverError> {
        match self.shared.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The scheduler type of a [`TapNet`].
pub type TapScheduler = Scheduler<SmolSource<TapDevice, TapWaiter>>;

/// One smoltcp host on a TAP device with its scheduler and backend, on the monotonic clock.
pub struct TapNet {
    /// The scheduler; run the application with `scheduler.block_on`.
    pub scheduler: TapScheduler,
    /// The socket backend for `netpoll_stack::{TcpListener, TcpStream}`.
    pub backend: SmolBackend<TapDevice>,
    /// The host (statistics).
    pub host: Host<TapDevice>,
    /// The clock the scheduler and the host read.
    pub clock: Arc<dyn Clock>,
    /// The device's state, behind [`TapNet::link`].
    link: Arc<Shared>,
}

impl fmt::Debug for TapNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapNet")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl TapNet {
    /// Opens TAP interface `name` (with `config.mtu`) and builds host, scheduler and backend.
    pub fn open(name: &str, config: Config) -> Result<TapNet, DriverError> {
        let device = TapDevice::open_with_mtu(name, config.mtu)?;
        TapNet::with_device(device, config)
    }

    /// Builds host, scheduler and backend on an opened device.
    pub fn with_device(device: TapDevice, config: Config) -> Result<TapNet, DriverError> {
        let clock: Arc<dyn Clock> = MonotonicClock::new();
        let waiter = device.waiter();
        let link = device.shared.clone();
        let host = Host::new(device, config, clock.clone())?;
        let source = SmolSource::new(waiter).with_host(host.clone());
        let scheduler = Scheduler::new(source, clock.clone());
        let backend = SmolBackend::new(host.clone(), scheduler.handle().clone());
        Ok(TapNet {
            scheduler,
            backend,
            host,
            clock,
            link,
        })
    }

    /// A handle on the device's link state for any thread or task
    /// ([`TapWaiter::link_up`], [`TapWaiter::link_downs`]); never wait on it.
    pub fn link(&self) -> TapWaiter {
        TapWaiter {
            shared: self.link.clone(),
            extra: None,
        }
    }
}
