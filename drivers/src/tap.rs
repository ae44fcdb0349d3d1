//! The TAP device (feature `tap`, Linux): smoltcp's Ethernet frames in and out of a kernel TAP
//! interface, plus the waiter that blocks in `poll(2)` on it.
//!
//! Unlike smoltcp's `TunTapInterface`, which drops a frame when the write would block and
//! panics on other errors, this device:
//!
//! * queues a frame the kernel cannot take now (`EAGAIN`, `ENOBUFS`, `EINTR`) and retries the
//!   queue, in order, on every later receive/transmit; while frames are queued the waiter also
//!   waits for `POLLOUT`. When the queue is full, `transmit` returns `None`, so smoltcp keeps
//!   the data in its socket buffers and retransmits later: no frame is dropped silently.
//! * records any other error and reports it from the source's next poll
//!   ([`Wait::check`](crate::Wait::check)), so the scheduler stops with the error.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use netpoll_core::{Clock, Scheduler};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};

use crate::backend::SmolBackend;
use crate::clock::MonotonicClock;
use crate::config::Config;
use crate::error::DriverError;
use crate::host::Host;
use crate::source::SmolSource;
use crate::sys::tap as sys;
use crate::wait::Wait;

/// Frames the device queues when the kernel pushes back, before `transmit` says "no room".
const MAX_QUEUED_FRAMES: usize = 256;

/// State shared by the device and its waiter.
struct Shared {
    fd: OwnedFd,
    event: OwnedFd,
    /// A wake is pending (Go: `netpollWakeSig`).
    notified: AtomicBool,
    /// The waiter is in (or about to enter) `poll(2)`.
    sleeping: AtomicBool,
    /// The device has queued frames: the waiter must also wait for `POLLOUT`.
    backlog: AtomicBool,
    /// The first unrecoverable error, reported by the next poll.
    error: spin::Mutex<Option<DriverError>>,
}

impl Shared {
    fn fail(&self, e: &io::Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(io_error(e));
        }
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

fn io_error(e: &io::Error) -> DriverError {
    match e.raw_os_error() {
        // What `tun` answers while the interface is down.
        Some(libc::EIO) => DriverError::LinkDown,
        Some(errno) => DriverError::Io(errno),
        None => DriverError::Io(libc::EIO),
    }
}

/// A TAP interface as a smoltcp Ethernet device (feature `tap`, Linux).
///
/// Unlike smoltcp's `TunTapInterface`, which drops a frame when the write would block and
/// panics on other errors, this device:
///
/// * queues a frame the kernel cannot take now (`EAGAIN`, `ENOBUFS`, `EINTR`) and retries the
///   queue, in order, on every later receive/transmit; while frames are queued its
///   [`TapWaiter`] also waits for `POLLOUT`. When the queue is full, `transmit` returns `None`,
///   so smoltcp keeps the data in its socket buffers and retransmits later: no frame is
///   dropped silently.
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
    scratch: Vec<u8>,
    queue: VecDeque<Vec<u8>>,
}

impl fmt::Debug for TapDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl TapDevice {
    /// Opens (creating if needed) TAP interface `name`, with the interface's own MTU.
    ///
    /// Needs `CAP_NET_ADMIN` (or a TAP device owned by the user). The interface must be brought
    /// up (`ip link set NAME up`) for frames to flow.
    pub fn open(name: &str) -> Result<TapDevice, DriverError> {
        check_name(name)?;
        let (fd, name) = sys::open_tap(name).map_err(|e| io_error(&e))?;
        let mtu = sys::interface_mtu(&name).map_err(|e| io_error(&e))?;
        TapDevice::with_fd(fd, name, mtu)
    }

    /// Opens TAP interface `name` and uses `mtu` (IP MTU) instead of the interface's.
    pub fn open_with_mtu(name: &str, mtu: usize) -> Result<TapDevice, DriverError> {
        check_name(name)?;
        let (fd, name) = sys::open_tap(name).map_err(|e| io_error(&e))?;
        TapDevice::with_fd(fd, name, mtu)
    }

    fn with_fd(fd: OwnedFd, name: String, mtu: usize) -> Result<TapDevice, DriverError> {
        if mtu < 576 {
            return Err(DriverError::InvalidConfig("MTU below 576"));
        }
        let event = sys::eventfd().map_err(|e| io_error(&e))?;
        Ok(TapDevice {
            shared: Arc::new(Shared {
                fd,
                event,
                notified: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                backlog: AtomicBool::new(false),
                error: spin::Mutex::new(None),
            }),
            name,
            mtu,
            rx: vec![0u8; mtu + 14],
            scratch: Vec::new(),
            queue: VecDeque::new(),
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
        self.queue.len()
    }

    /// The waiter that blocks on this device's fd.
    pub fn waiter(&self) -> TapWaiter {
        TapWaiter {
            shared: self.shared.clone(),
            extra: None,
        }
    }

    /// Writes queued frames, in order, until the kernel pushes back.
    fn flush(&mut self) {
        flush_queue(&self.shared, &mut self.queue);
    }
}

fn flush_queue(shared: &Shared, queue: &mut VecDeque<Vec<u8>>) {
    // Bounded by the queue length: each turn pops a frame or stops.
    while let Some(frame) = queue.front() {
        match sys::write(shared.fd.as_fd(), frame) {
            Ok(_) => {
                queue.pop_front();
            }
            Err(e) if transient(&e) => break,
            Err(e) => {
                // Reported by the next poll; the frame cannot be sent on a failed device.
                shared.fail(&e);
                queue.pop_front();
            }
        }
    }
    // Release: pairs with the Acquire load in `TapWaiter::wait`; only a hint for `POLLOUT`.
    shared.backlog.store(!queue.is_empty(), Ordering::Release);
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
    scratch: &'a mut Vec<u8>,
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl fmt::Debug for TapTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TapTx")
    }
}

impl TxToken for TapTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        let r = f(&mut self.scratch[..]);
        if self.queue.is_empty() {
            match sys::write(self.shared.fd.as_fd(), self.scratch) {
                Ok(_) => return r,
                Err(e) if transient(&e) => {}
                Err(e) => {
                    self.shared.fail(&e);
                    return r;
                }
            }
        }
        // Behind earlier frames, or the kernel pushed back: keep it, in order.
        self.queue.push_back(self.scratch.clone());
        flush_queue(self.shared, self.queue);
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
        if !self.queue.is_empty() {
            self.flush();
        }
        let n = match sys::read(self.shared.fd.as_fd(), &mut self.rx) {
            Ok(n) => n,
            Err(e) if transient(&e) => return None,
            Err(e) => {
                self.shared.fail(&e);
                return None;
            }
        };
        Some((
            TapRx {
                frame: &self.rx[..n],
            },
            TapTx {
                shared: &self.shared,
                scratch: &mut self.scratch,
                queue: &mut self.queue,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if !self.queue.is_empty() {
            self.flush();
        }
        if self.queue.len() >= MAX_QUEUED_FRAMES {
            // Back-pressure: smoltcp keeps the data and retries; nothing is dropped.
            return None;
        }
        Some(TapTx {
            shared: &self.shared,
            scratch: &mut self.scratch,
            queue: &mut self.queue,
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
    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError> {
        let shared = &self.shared;
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
                        Err(e) => return Err(io_error(&e)),
                    }
                }
                if rev.tap & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    return Err(DriverError::Io(libc::EIO));
                }
                if rev.extra & libc::POLLNVAL != 0 {
                    return Err(DriverError::Io(libc::EBADF));
                }
                // Readable (or hung up) extra fd: nothing to consume here; its owner harvests.
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(io_error(&e)),
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
                    shared.fail(&e);
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
        let host = Host::new(device, config, clock.clone())?;
        let source = SmolSource::new(waiter).with_host(host.clone());
        let scheduler = Scheduler::new(source, clock.clone());
        let backend = SmolBackend::new(host.clone(), scheduler.handle().clone());
        Ok(TapNet {
            scheduler,
            backend,
            host,
            clock,
        })
    }
}
