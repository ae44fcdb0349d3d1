//! The AF_XDP device (feature `xdp`, Linux): smoltcp's Ethernet frames straight from and to a
//! network interface's queue through an AF_XDP socket, bypassing the kernel's IP stack for the
//! frames it claims, plus the waiter that blocks in `poll(2)` on the socket.
//!
//! # How frames move
//!
//! An XDP program attached to the interface (`bpf_redirect_map(&xsks_map,
//! ctx->rx_queue_index, XDP_PASS)`, loaded with raw `bpf(2)` calls) hands every frame of queue
//! 0 to our socket; frames of other queues go on to the kernel. The socket shares a UMEM (our
//! memory, cut into 2048- or 4096-byte frames) and four rings with the kernel: we give it empty
//! frames on the fill ring, it gives them back full on the RX ring; we put frames on the TX
//! ring, it gives them back on the completion ring once sent. Half the UMEM serves each
//! direction.
//!
//! Everything moves in batches. Descriptors are taken from the RX ring up to
//! [`RX_BATCH`] at a time and their frames go back to the fill ring together; a transmitted
//! frame is put on the TX ring at once (a memory write, no system call), and the kernel is
//! woken (`sendto(MSG_DONTWAIT)`) only when the TX ring says it needs it (its need_wakeup flag,
//! `XDP_USE_NEED_WAKEUP`), and then once per batch: when the device next goes to the RX ring,
//! when [`TX_BATCH`] frames are waiting, and before the waiter sleeps. The fill ring's
//! need_wakeup flag (zero-copy drivers) is served the same way with `recvfrom`. An idle server
//! sleeps in `poll(2)` on the socket, which is readable when the RX ring holds frames.
//!
//! # Zero-copy and copy mode
//!
//! The socket first binds with `XDP_ZEROCOPY` (the NIC's DMA writes into the UMEM); a driver
//! without that (veth, most virtual devices) refuses, and the device binds again with
//! `XDP_COPY` (the kernel copies each frame). [`XdpDevice::mode`] says which is in use, and
//! the device logs it at `info` when opened. Likewise the program is attached to the driver's
//! XDP hook when it has one, else to the generic hook.
//!
//! # More queues
//!
//! One device serves queue 0 only, which is every frame on an interface with one RX queue
//! (veth by default; `ethtool -L IFACE combined 1` on a NIC). Serving N queues would take one
//! socket per queue (each with its own fill/completion rings, sharing one UMEM with
//! `XDP_SHARED_UMEM` or with one UMEM each), each socket inserted in the XSKMAP at its queue's
//! index (the program already redirects by `rx_queue_index`), and one smoltcp host per queue
//! or one host reading every socket in turn; the waiter would poll every socket's descriptor.
//! RSS spreads flows by 4-tuple, so a connection stays on one queue either way.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use netpoll_core::sync::{AtomicBool, Ordering};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};

use crate::error::DriverError;
use crate::sys::bpf;
use crate::sys::xdp::{self as sys, BindMode, Desc, Geometry, SetupError, Step, TxPart, Xsk};
use crate::wait::Wait;

/// Descriptors taken from the RX ring at once.
pub const RX_BATCH: u32 = 64;
/// Frames put on the TX ring before the device wakes the kernel even mid-pass.
pub const TX_BATCH: u32 = 64;
/// Frames per direction (UMEM frames, and the size of each ring).
const FRAMES_PER_DIRECTION: u32 = 2048;
/// The queue served.
const QUEUE: u32 = 0;
/// The headroom the kernel keeps before a received frame in copy mode (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: usize = 256;
/// How long the waiter sleeps at most while every TX frame is in flight (the socket's
/// descriptor says nothing when completions arrive).
const TX_STARVED_WAIT: Duration = Duration::from_millis(1);

/// Whether the socket's frames are moved by the NIC (zero-copy) or copied by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// `XDP_ZEROCOPY`: the driver receives into and sends from the UMEM directly.
    ZeroCopy,
    /// `XDP_COPY`: the kernel copies frames between its buffers and the UMEM (any interface).
    Copy,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::ZeroCopy => "zero-copy",
            XdpMode::Copy => "copy",
        })
    }
}

/// The kernel's counters of frames dropped before they reached us (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct XdpStats {
    /// Dropped with our RX ring full (we did not consume fast enough).
    pub rx_ring_full: u64,
    /// Dropped with no frame on the fill ring to receive into.
    pub rx_fill_ring_empty: u64,
    /// Dropped for other reasons (a frame larger than a UMEM frame, say).
    pub rx_dropped: u64,
    /// Descriptors the kernel found invalid, received and sent.
    pub invalid_descs: u64,
}

/// State shared by the device and its waiter.
struct Shared {
    /// A duplicate of the socket's descriptor: the waiter polls it and wakes TX through it.
    xsk: OwnedFd,
    event: OwnedFd,
    /// A wake is pending (Go: `netpollWakeSig`).
    notified: AtomicBool,
    /// The waiter is in (or about to enter) `poll(2)`.
    sleeping: AtomicBool,
    /// Frames are on the TX ring that no wake-up call has covered yet.
    tx_unwoken: AtomicBool,
    /// Every TX frame is in flight: the waiter must not sleep long.
    tx_starved: AtomicBool,
    /// Received frames are queued in the device (taken from the RX ring, not yet read).
    rx_queued: AtomicBool,
    /// The first unrecoverable error, reported by the next poll.
    error: spin::Mutex<Option<DriverError>>,
    name: &'static str,
}

impl Shared {
    fn fail(&self, call: &'static str, e: &io::Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            let error = os_error(call, self.name, e);
            log::warn!("AF_XDP {}: {error}", self.name);
            *slot = Some(error);
        }
    }

    /// Wakes the kernel's TX path if frames wait for it. One `sendto` sends a bounded batch
    /// (32 frames in copy mode), so a larger backlog takes a few calls: still per batch.
    fn wake_tx(&self, pending: u32) {
        // Relaxed: a hint for this thread's own later calls and the waiter on the same
        // scheduler thread; the kernel reads the ring, not this flag.
        if !self.tx_unwoken.swap(false, Ordering::Relaxed) {
            return;
        }
        for _ in 0..pending.div_ceil(32).max(1) {
            match sys::wake_tx(self.xsk.as_fd()) {
                Ok(()) => return,
                // More than one batch queued, or the driver is busy: go on, or retry later.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) if transient(&e) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    log::debug!("AF_XDP {}: interface down; TX waits", self.name);
                    break;
                }
                Err(e) => {
                    self.fail("sendto (AF_XDP TX wake-up)", &e);
                    return;
                }
            }
        }
        // Relaxed: as above.
        self.tx_unwoken.store(true, Ordering::Relaxed);
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOBUFS) | Some(libc::EBUSY)
    )
}

/// `e` from `call` on `interface` as a driver error, the call naming what is missing when the
/// errno says so.
fn os_error(call: &'static str, interface: &'static str, e: &io::Error) -> DriverError {
    let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
    let call = match errno {
        libc::EAFNOSUPPORT => "creating an AF_XDP socket (the kernel lacks CONFIG_XDP_SOCKETS)",
        libc::ENOMEM if call == REGISTER_UMEM => {
            "registering the UMEM (locked-memory limit: raise RLIMIT_MEMLOCK or run as root)"
        }
        _ => call,
    };
    DriverError::Os {
        call,
        interface,
        errno,
    }
}

const FIND_INTERFACE: &str = "looking up interface";
const REGISTER_UMEM: &str = "registering the UMEM (XDP_UMEM_REG)";

/// `name` as a `&'static str`, so that [`DriverError`] can carry it and stay `Copy`; each
/// distinct name is allocated once per process.
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

/// The XDP program and its map, attached while this lives.
struct Redirect {
    /// Closing it detaches the program (declared first: dropped first).
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    generic: bool,
}

/// An AF_XDP socket on queue 0 of a network interface, as a smoltcp Ethernet device
/// (feature `xdp`, Linux). See the [module docs](self) for how frames move.
///
/// Needs `CAP_NET_ADMIN` (and `CAP_BPF`/`CAP_SYS_ADMIN` for the program; root has both).
/// Frames of queue 0 no longer reach the kernel's stack while the device is open; dropping it
/// detaches the program and frees the socket, UMEM and map.
///
/// ```no_run
/// use netpoll_drivers::{Config, XdpNet};
/// use netpoll_stack::TcpListener;
///
/// // veth0 up, its peer 10.6.0.1/24 (with `ethtool -K PEER tx off`); smoltcp is 10.6.0.2.
/// let config = Config::with_address(
///     "10.6.0.2/24".parse().unwrap(),
///     netpoll_drivers::smoltcp::wire::EthernetAddress([0x02, 0, 0, 0, 0, 0x02]),
/// );
/// let mut net = XdpNet::open("veth0", config).unwrap();
/// let backend = net.backend.clone();
/// net.scheduler.block_on(async move {
///     let listener = TcpListener::bind(&backend, "10.6.0.2:7".parse().unwrap()).unwrap();
///     let (conn, _) = listener.accept().await.unwrap();
///     let mut buf = [0u8; 1024];
///     let n = conn.read(&mut buf).await.unwrap();
///     conn.write_all(&buf[..n]).await.unwrap();
/// });
/// ```
pub struct XdpDevice {
    /// Declared before `xsk`: the program stops redirecting before the socket goes.
    redirect: Redirect,
    xsk: Xsk,
    shared: Arc<Shared>,
    mode: XdpMode,
    name: &'static str,
    mtu: usize,
    frame_size: u32,
    /// Received descriptors not yet handed to smoltcp.
    rx_queue: VecDeque<Desc>,
    /// RX frames read by smoltcp, to go back on the fill ring.
    rx_free: Vec<u64>,
    /// TX frames free to write into.
    tx_free: Vec<u64>,
    /// Frames put on the TX ring since the last wake-up call.
    tx_unwoken: u32,
}

impl fmt::Debug for XdpDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpDevice")
            .field("interface", &self.name)
            .field("mode", &self.mode)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl XdpDevice {
    /// Opens an AF_XDP socket on queue 0 of interface `name`, with the interface's MTU.
    pub fn open(name: &str) -> Result<XdpDevice, DriverError> {
        let interned = check_name(name)?;
        let mtu = sys::interface_mtu(name).map_err(|e| os_error(FIND_INTERFACE, interned, &e))?;
        XdpDevice::open_with_mtu(name, mtu)
    }

    /// Sets interface `name`'s MTU to `mtu`, then opens it as [`XdpDevice::open_with_mtu`]
    /// does. On a veth pair the peer needs the same MTU, and a driver's XDP hook caps it
    /// (veth: about 3,500 with one page per frame); a refusal is the `SIOCSIFMTU` error.
    pub fn open_setting_mtu(name: &str, mtu: usize) -> Result<XdpDevice, DriverError> {
        let interned = check_name(name)?;
        if (576..=4096 - XDP_PACKET_HEADROOM - 14).contains(&mtu) {
            sys::set_interface_mtu(name, mtu).map_err(|e| os_error("SIOCSIFMTU", interned, &e))?;
        }
        XdpDevice::open_with_mtu(name, mtu)
    }

    /// Opens an AF_XDP socket on queue 0 of interface `name`, using IP MTU `mtu`.
    pub fn open_with_mtu(name: &str, mtu: usize) -> Result<XdpDevice, DriverError> {
        let interned = check_name(name)?;
        if mtu < 576 {
            return Err(DriverError::InvalidConfig("MTU below 576"));
        }
        if mtu + 14 > 4096 - XDP_PACKET_HEADROOM {
            return Err(DriverError::InvalidConfig(
                "MTU above 3826: an AF_XDP frame holds at most one 4096-byte UMEM frame",
            ));
        }
        let frame_size = if mtu + 14 <= 2048 - XDP_PACKET_HEADROOM {
            2048
        } else {
            4096
        };
        let ifindex = sys::ifindex(name).map_err(|e| os_error(FIND_INTERFACE, interned, &e))?;
        let geometry = Geometry {
            frame_size,
            frames_per_direction: FRAMES_PER_DIRECTION,
        };
        let (xsk, mode) = match open_socket(ifindex, BindMode::ZeroCopy, geometry) {
            Ok(xsk) => (xsk, XdpMode::ZeroCopy),
            Err(SetupError {
                step: Step::Bind,
                error,
            }) => {
                log::debug!("AF_XDP {name}: zero-copy bind refused ({error}); using copy mode");
                let xsk = open_socket(ifindex, BindMode::Copy, geometry)
                    .map_err(|e| setup_error(e, interned))?;
                (xsk, XdpMode::Copy)
            }
            Err(e) => return Err(setup_error(e, interned)),
        };
        let redirect = attach(&xsk, ifindex, interned)?;
        let shared = Arc::new(Shared {
            xsk: xsk
                .fd()
                .try_clone_to_owned()
                .map_err(|e| os_error("dup (AF_XDP socket)", interned, &e))?,
            event: sys::eventfd().map_err(|e| os_error("eventfd", "", &e))?,
            notified: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            tx_unwoken: AtomicBool::new(false),
            tx_starved: AtomicBool::new(false),
            rx_queued: AtomicBool::new(false),
            error: spin::Mutex::new(None),
            name: interned,
        });
        let half = u64::from(FRAMES_PER_DIRECTION) * u64::from(frame_size);
        let frames = |first: u64| -> Vec<u64> {
            (0..u64::from(FRAMES_PER_DIRECTION))
                .rev()
                .map(|i| first + i * u64::from(frame_size))
                .collect()
        };
        let mut device = XdpDevice {
            redirect,
            xsk,
            shared,
            mode,
            name: interned,
            mtu,
            frame_size,
            rx_queue: VecDeque::with_capacity(RX_BATCH as usize),
            rx_free: frames(0),
            tx_free: frames(half),
            tx_unwoken: 0,
        };
        let (rx, _) = device.xsk.parts();
        rx.fill(&mut device.rx_free);
        log::info!(
            "AF_XDP {name}: queue {QUEUE}, {mode} mode, XDP program on the {} hook, MTU {mtu}, \
             {FRAMES_PER_DIRECTION}+{FRAMES_PER_DIRECTION} frames of {frame_size} bytes",
            if device.redirect.generic {
                "generic"
            } else {
                "driver"
            }
        );
        Ok(device)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Zero-copy or copy mode: which one the kernel accepted.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Whether the program sits on the generic XDP hook (the driver has no XDP support of its
    /// own; slower, but works on any interface).
    pub fn generic_hook(&self) -> bool {
        self.redirect.generic
    }

    /// The IP MTU in use.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The kernel's drop counters for this socket.
    pub fn stats(&self) -> Result<XdpStats, DriverError> {
        let s = self
            .xsk
            .stats()
            .map_err(|e| os_error("XDP_STATISTICS", self.name, &e))?;
        Ok(XdpStats {
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            rx_dropped: s.rx_dropped,
            invalid_descs: s.rx_invalid_descs + s.tx_invalid_descs,
        })
    }

    /// The waiter that blocks on this device's socket.
    pub fn waiter(&self) -> XdpWaiter {
        XdpWaiter {
            shared: self.shared.clone(),
            extra: None,
        }
    }

    /// Returns read RX frames to the fill ring, and takes the next batch from the RX ring.
    /// One trip to the rings per batch; also the point where the TX batch of the previous
    /// pass is flushed to the kernel.
    fn refill(&mut self) {
        let (rx, tx) = self.xsk.parts();
        reap(tx, &mut self.tx_free, &self.shared);
        if self.tx_unwoken > 0 {
            flush_tx(tx, &self.shared, &mut self.tx_unwoken);
        }
        if !self.rx_free.is_empty() {
            rx.fill(&mut self.rx_free);
        }
        let before = self.rx_queue.len();
        rx.take(RX_BATCH, &mut self.rx_queue);
        // Aligned mode: a descriptor's address lies inside its frame; the frame is what goes
        // back to the fill ring. A descriptor outside the RX half is the kernel's bug, but
        // must not become ours: drop it (its frame is lost to the ring).
        for d in self.rx_queue.range_mut(before..) {
            if rx.frames.get(d.addr, d.len as usize).is_none() {
                log::warn!("AF_XDP {}: RX descriptor out of range, dropped", self.name);
                d.len = 0;
            }
        }
        if self.rx_queue.is_empty() && rx.fill_needs_wakeup() {
            if let Err(e) = sys::wake_rx(self.xsk.fd()) {
                if !transient(&e) && e.raw_os_error() != Some(libc::ENETDOWN) {
                    self.shared.fail("recvfrom (AF_XDP fill wake-up)", &e);
                }
            }
        }
        // Relaxed: read by the waiter on this scheduler's thread only as a "do not sleep" hint.
        self.shared
            .rx_queued
            .store(!self.rx_queue.is_empty(), Ordering::Relaxed);
    }
}

/// Frees completed TX frames.
fn reap(tx: &mut TxPart, free: &mut Vec<u64>, shared: &Shared) {
    if tx.complete(free) > 0 {
        // Relaxed: a hint for the waiter (see `Shared::tx_starved`).
        shared.tx_starved.store(false, Ordering::Relaxed);
    }
}

/// Wakes the kernel for the frames put on the TX ring, if it asked to be woken.
fn flush_tx(tx: &TxPart, shared: &Shared, unwoken: &mut u32) {
    if tx.needs_wakeup() {
        // Relaxed: see `Shared::wake_tx`.
        shared.tx_unwoken.store(true, Ordering::Relaxed);
        shared.wake_tx(*unwoken);
    }
    *unwoken = 0;
}

/// Opens the socket; a bind refused with `EBUSY` is retried for up to a second, since the
/// kernel releases a closed socket's hold on the queue asynchronously (a server restarted at
/// once finds the queue still taken).
fn open_socket(ifindex: u32, mode: BindMode, geometry: Geometry) -> Result<Xsk, SetupError> {
    let mut tries = 0;
    loop {
        match Xsk::open(ifindex, QUEUE, mode, geometry) {
            Err(e) if e.step == Step::Bind && e.error.raw_os_error() == Some(libc::EBUSY) => {
                tries += 1;
                if tries > BIND_BUSY_RETRIES {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// How many times a busy bind is retried, 50 ms apart.
const BIND_BUSY_RETRIES: u32 = 20;

fn check_name(name: &str) -> Result<&'static str, DriverError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(DriverError::InvalidConfig(
            "interface name empty, longer than 15 bytes or containing NUL",
        ));
    }
    Ok(intern(name))
}

fn setup_error(e: SetupError, name: &'static str) -> DriverError {
    let call = match e.step {
        Step::Socket => "creating an AF_XDP socket",
        Step::Umem => REGISTER_UMEM,
        Step::Rings => "setting up the AF_XDP rings",
        Step::Bind if e.error.raw_os_error() == Some(libc::EBUSY) => {
            "binding the AF_XDP socket to queue 0 (another AF_XDP socket holds it)"
        }
        Step::Bind => "binding the AF_XDP socket to queue 0",
    };
    os_error(call, name, &e.error)
}

/// Loads the redirect program, puts the socket in its map and attaches it to `ifindex`: on the
/// driver's hook if it has one, else on the generic one.
fn attach(xsk: &Xsk, ifindex: u32, name: &'static str) -> Result<Redirect, DriverError> {
    let map =
        bpf::create_xsk_map(1).map_err(|e| os_error("creating the XSKMAP (bpf)", name, &e))?;
    let prog = bpf::load_redirect(map.as_fd()).map_err(|(e, log)| {
        if !log.is_empty() {
            log::warn!("AF_XDP {name}: the verifier said: {log}");
        }
        os_error("loading the XDP program (bpf)", name, &e)
    })?;
    bpf::map_insert(map.as_fd(), QUEUE, xsk.fd())
        .map_err(|e| os_error("inserting the socket into the XSKMAP (bpf)", name, &e))?;
    let (link, generic) = match bpf::attach_xdp(prog.as_fd(), ifindex, 0) {
        Ok(link) => (link, false),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
            ) =>
        {
            log::debug!("AF_XDP {name}: no driver XDP hook ({e}); using the generic one");
            let link = bpf::attach_xdp(prog.as_fd(), ifindex, bpf::XDP_FLAGS_SKB_MODE)
                .map_err(|e| os_error("attaching the XDP program (bpf link)", name, &e))?;
            (link, true)
        }
        Err(e) => {
            let call = if e.raw_os_error() == Some(libc::EBUSY) {
                "attaching the XDP program (another XDP program is attached)"
            } else {
                "attaching the XDP program (bpf link)"
            };
            return Err(os_error(call, name, &e));
        }
    };
    Ok(Redirect {
        _link: link,
        _prog: prog,
        _map: map,
        generic,
    })
}

#[doc(hidden)]
pub struct XdpRx<'a> {
    frame: &'a [u8],
}

impl fmt::Debug for XdpRx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpRx")
            .field("len", &self.frame.len())
            .finish()
    }
}

impl RxToken for XdpRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

#[doc(hidden)]
pub struct XdpTx<'a> {
    tx: &'a mut TxPart,
    free: &'a mut Vec<u64>,
    shared: &'a Shared,
    unwoken: &'a mut u32,
    frame_size: u32,
}

impl fmt::Debug for XdpTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XdpTx")
    }
}

impl TxToken for XdpTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = if len <= self.frame_size as usize && self.tx.free() > 0 {
            self.free.pop()
        } else {
            None
        };
        let Some(addr) = frame else {
            // Only reachable from `receive`'s token (`transmit` checked both): smoltcp's reply
            // to an incoming frame is lost, as on a full NIC queue; TCP retransmits.
            let mut scratch = alloc::vec![0u8; len];
            log::trace!(
                "AF_XDP {}: no TX frame free, reply dropped",
                self.shared.name
            );
            return f(&mut scratch);
        };
        let Some(buf) = self.tx.frames.get_mut(addr, len) else {
            // Unreachable: TX frames come from the TX half and `len` fits one. Never send
            // a frame we could not write.
            self.free.push(addr);
            return f(&mut alloc::vec![0u8; len]);
        };
        let r = f(buf);
        self.tx.push(addr, len as u32);
        *self.unwoken += 1;
        if *self.unwoken >= TX_BATCH {
            flush_tx(self.tx, self.shared, self.unwoken);
        } else {
            // Relaxed: see `Shared::wake_tx`; the waiter flushes before it sleeps.
            self.shared.tx_unwoken.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl Device for XdpDevice {
    type RxToken<'a>
        = XdpRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = XdpTx<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.rx_queue.is_empty() {
            self.refill();
        }
        let desc = loop {
            let d = self.rx_queue.pop_front()?;
            self.rx_free
                .push(d.addr & !(u64::from(self.frame_size) - 1));
            if d.len > 0 {
                break d;
            }
        };
        if self.rx_queue.is_empty() {
            // Relaxed: see `refill`.
            self.shared.rx_queued.store(false, Ordering::Relaxed);
        }
        let (rx, tx) = self.xsk.parts();
        let frame = rx.frames.get(desc.addr, desc.len as usize).unwrap_or(&[]);
        Some((
            XdpRx { frame },
            XdpTx {
                tx,
                free: &mut self.tx_free,
                shared: &self.shared,
                unwoken: &mut self.tx_unwoken,
                frame_size: self.frame_size,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let (_, tx) = self.xsk.parts();
        if self.tx_free.is_empty() || tx.free() == 0 {
            reap(tx, &mut self.tx_free, &self.shared);
            if self.tx_free.is_empty() || tx.free() == 0 {
                flush_tx(tx, &self.shared, &mut self.tx_unwoken);
                // Back-pressure: smoltcp keeps the data and retries; the waiter polls briefly.
                // Relaxed: a hint for the waiter.
                self.shared.tx_starved.store(true, Ordering::Relaxed);
                return None;
            }
        }
        Some(XdpTx {
            tx,
            free: &mut self.tx_free,
            shared: &self.shared,
            unwoken: &mut self.tx_unwoken,
            frame_size: self.frame_size,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// Waits in `poll(2)` on the AF_XDP socket (readable when the RX ring holds frames) and an
/// eventfd that [`Wait::wake`] signals, plus optionally one more descriptor
/// ([`XdpWaiter::also_watch`]). Before sleeping it wakes the kernel's TX path for frames
/// still waiting on the TX ring.
pub struct XdpWaiter {
    shared: Arc<Shared>,
    extra: Option<OwnedFd>,
}

impl fmt::Debug for XdpWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpWaiter")
            .field("interface", &self.shared.name)
            .field("also_watches", &self.extra.is_some())
            .finish_non_exhaustive()
    }
}

impl XdpWaiter {
    /// Also ends a blocking [`Wait::wait`] when `fd` is readable, as
    /// `TapWaiter::also_watch` does for TAP: typically an epoll instance's
    /// descriptor, so one thread sleeps on the AF_XDP socket and kernel sockets at once. The
    /// waiter owns `fd` and never reads from it.
    pub fn also_watch(mut self, fd: OwnedFd) -> XdpWaiter {
        self.extra = Some(fd);
        self
    }
}

/// Milliseconds for `poll(2)`, rounded up (a sub-millisecond wait never becomes a busy 0).
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            libc::c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        }
    }
}

impl Wait for XdpWaiter {
    fn flush(&self) {
        // The TX frames of the pass that just ended: one wake-up for the batch.
        self.shared.wake_tx(FRAMES_PER_DIRECTION);
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError> {
        let shared = &self.shared;
        // Frames put on the TX ring in the pass that just ended leave now, before we sleep.
        shared.wake_tx(FRAMES_PER_DIRECTION);
        // Relaxed: hints written by the device on this scheduler's thread.
        if shared.rx_queued.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut timeout = timeout;
        // Relaxed: as above.
        if shared.tx_starved.load(Ordering::Relaxed) || shared.tx_unwoken.load(Ordering::Relaxed) {
            timeout = Some(timeout.map_or(TX_STARVED_WAIT, |t| t.min(TX_STARVED_WAIT)));
        }
        // SeqCst: a Dekker pair with `wake`: we publish `sleeping` then read `notified`; it
        // publishes `notified` then reads `sleeping`. One of us sees the other.
        shared.sleeping.store(true, Ordering::SeqCst);
        if shared.notified.swap(false, Ordering::SeqCst) {
            shared.sleeping.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let r = sys::poll_fds(
            shared.xsk.as_fd(),
            libc::POLLIN,
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
                if rev.device & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    // The interface went away under the socket (xsk_poll reports it so).
                    log::warn!("AF_XDP {}: the interface is gone", shared.name);
                    return Err(DriverError::DeviceGone {
                        interface: shared.name,
                    });
                }
                if rev.extra & libc::POLLNVAL != 0 {
                    return Err(DriverError::Io(libc::EBADF));
                }
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(os_error("poll", shared.name, &e)),
        }
    }

    fn wake(&self) {
        let shared = &self.shared;
        // SeqCst: the other half of the Dekker pair in `wait`.
        if shared.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        if shared.sleeping.load(Ordering::SeqCst) {
            if let Err(e) = sys::eventfd_signal(shared.event.as_fd()) {
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

// ===== XdpNet =====

use crate::backend::SmolBackend;
use crate::clock::MonotonicClock;
use crate::config::Config;
use crate::host::Host;
use crate::source::SmolSource;
use netpoll_core::{Clock, Scheduler};

/// The scheduler type of an [`XdpNet`].
pub type XdpScheduler = Scheduler<SmolSource<XdpDevice, XdpWaiter>>;

/// One smoltcp host on an AF_XDP socket with its scheduler and backend, on the monotonic
/// clock.
pub struct XdpNet {
    /// The scheduler; run the application with `scheduler.block_on`.
    pub scheduler: XdpScheduler,
    /// The socket backend for `netpoll_stack::{TcpListener, TcpStream}`.
    pub backend: SmolBackend<XdpDevice>,
    /// The host (statistics).
    pub host: Host<XdpDevice>,
    /// The clock the scheduler and the host read.
    pub clock: Arc<dyn Clock>,
    /// Copy or zero-copy.
    pub mode: XdpMode,
}

impl fmt::Debug for XdpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpNet")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl XdpNet {
    /// Opens an AF_XDP socket on interface `name` (with `config.mtu`) and builds host,
    /// scheduler and backend.
    pub fn open(name: &str, config: Config) -> Result<XdpNet, DriverError> {
        let device = XdpDevice::open_with_mtu(name, config.mtu)?;
        let mode = device.mode();
        let clock: Arc<dyn Clock> = MonotonicClock::new();
        let waiter = device.waiter();
        let host = Host::new(device, config, clock.clone())?;
        let source = SmolSource::new(waiter).with_host(host.clone());
        let scheduler = Scheduler::new(source, clock.clone());
        let backend = SmolBackend::new(host.clone(), scheduler.handle().clone());
        Ok(XdpNet {
            scheduler,
            backend,
            host,
            clock,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_missing_interface_is_one_clear_error() {
        let e = XdpDevice::open("npxdp-missing").expect_err("no such interface");
        let text = e.to_string();
        assert!(
            text.starts_with("looking up interface npxdp-missing: No such device"),
            "{text}"
        );
    }

    #[test]
    fn bad_names_and_mtus_are_config_errors() {
        for name in ["", "a-name-far-too-long-for-ifnamsiz", "nul\0"] {
            assert!(matches!(
                XdpDevice::open(name),
                Err(DriverError::InvalidConfig(_))
            ));
        }
        assert!(matches!(
            XdpDevice::open_with_mtu("lo", 9000),
            Err(DriverError::InvalidConfig(_))
        ));
        assert!(matches!(
            XdpDevice::open_with_mtu("lo", 100),
            Err(DriverError::InvalidConfig(_))
        ));
    }

    #[test]
    fn timeouts_round_up() {
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
    }
}
