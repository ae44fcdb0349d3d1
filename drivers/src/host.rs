//! One smoltcp host: an `Interface`, its `SocketSet`, its device, and the bookkeeping that
//! turns smoltcp socket changes into readiness edges.
//!
//! The crate docs explain how edges are found and how the backlog works.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;
use core::time::Duration;

use netpoll_core::{Clock, Events, Key, Readiness};
use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, PacketMeta, RxToken};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::clock::{dur_to_smol, from_smol, to_smol};
use crate::config::Config;
use crate::error::DriverError;
use crate::frame::{self, TcpInfo};

/// Counters a host keeps (statistics only; they never affect behaviour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Frames taken from the device.
    pub frames_in: u64,
    /// Connection requests dropped because the listener's backlog was full (the client
    /// retransmits; no RST is sent).
    pub syns_dropped: u64,
    /// Connections handed out by `accept`.
    pub accepted: u64,
    /// Queued connections that were reset or timed out before `accept` took them.
    pub aborted_before_accept: u64,
    /// smoltcp sockets alive now: streams, pool sockets, and closed sockets still finishing
    /// their FIN or RST.
    pub sockets: usize,
}

/// A slab index plus generation: names a socket or listener without aliasing a recycled slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Id {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A vector with a free list; removing bumps the slot's generation.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// The index the next `insert` will use.
    fn next_index(&self) -> u32 {
        self.free.last().copied().unwrap_or(self.slots.len() as u32)
    }

    pub(crate) fn insert(&mut self, value: T) -> Id {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            debug_assert!(slot.value.is_none(), "slab: free slot {index} is occupied");
            slot.value = Some(value);
            Id {
                index,
                generation: slot.generation,
            }
        } else {
            let index = self.slots.len() as u32;
            self.slots.push(Slot {
                generation: 1,
                value: Some(value),
            });
            Id {
                index,
                generation: 1,
            }
        }
    }

    pub(crate) fn get(&self, id: Id) -> Option<&T> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut()
    }

    fn at(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.value.as_ref()
    }

    fn id_at(&self, index: u32) -> Option<Id> {
        let slot = self.slots.get(index as usize)?;
        slot.value.as_ref().map(|_| Id {
            index,
            generation: slot.generation,
        })
    }

    fn at_mut(&mut self, index: u32) -> Option<(Id, &mut T)> {
        let slot = self.slots.get_mut(index as usize)?;
        let generation = slot.generation;
        slot.value.as_mut().map(|v| (Id { index, generation }, v))
    }

    pub(crate) fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let value = slot.value.take()?;
        // Generation zero is never issued, so a zeroed id never names a live slot.
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push(id.index);
        Some(value)
    }
}

/// The dirty list smoltcp's wakers feed.
#[derive(Default)]
struct Dirty {
    list: spin::Mutex<Vec<u32>>,
}

/// The waker of one smoltcp socket: marks it dirty.
struct SockWake {
    index: u32,
    /// Already on the dirty list (de-duplicates the rx and tx wakes of one change).
    queued: AtomicBool,
    dirty: Arc<Dirty>,
}

impl Wake for SockWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Relaxed: smoltcp only wakes from inside a socket or interface call, and every such
        // call runs under the host lock, as does the `store(false)` in `process_one`: the lock
        // orders them.
        if !self.queued.swap(true, Ordering::Relaxed) {
            self.dirty.list.lock().push(self.index);
        }
    }
}

/// A stream's view of its connection, kept sticky across smoltcp state changes.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) key: Option<Key>,
    /// A read (or accept) returned `WouldBlock` and no edge was reported since.
    pub(crate) armed_read: bool,
    /// A write (or connect) returned `WouldBlock` and no edge was reported since.
    pub(crate) armed_write: bool,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    /// An ephemeral port this stream holds until its smoltcp socket is gone.
    pub(crate) port: Option<u16>,
    pub(crate) connecting: bool,
    /// The connection reached ESTABLISHED (or later) at some point.
    pub(crate) established: bool,
    /// The peer's FIN arrived: reads end with `Ok(0)` after the data.
    pub(crate) fin: bool,
    /// The connection was reset (or timed out) after it was established.
    pub(crate) reset: bool,
    /// The connect failed: RST in SYN-SENT.
    pub(crate) refused: bool,
    pub(crate) shut_read: bool,
    pub(crate) shut_write: bool,
}

impl Stream {
    /// Folds the socket's current state into the sticky flags.
    pub(crate) fn observe(&mut self, s: &tcp::Socket<'_>) {
        match s.state() {
            State::Established | State::FinWait1 | State::FinWait2 => self.established = true,
            State::CloseWait | State::Closing | State::LastAck | State::TimeWait => {
                self.established = true;
                self.fin = true;
            }
            State::Closed => {
                // The first sight of an abnormal close decides what it was.
                if !self.fin && !self.reset && !self.refused {
                    if self.established {
                        self.reset = true;
                    } else if self.connecting {
                        self.refused = true;
                    }
                }
            }
            State::Listen | State::SynSent | State::SynReceived => {}
        }
        if self.local.is_none() {
            self.local = s.local_endpoint().map(SocketAddr::from);
        }
        if self.peer.is_none() {
            self.peer = s.remote_endpoint().map(SocketAddr::from);
        }
    }

    /// Whether `try_read` would do anything but `WouldBlock` (it must agree with `try_read`).
    pub(crate) fn read_ready(&self, s: &tcp::Socket<'_>) -> bool {
        self.shut_read
            || s.can_recv()
            || !matches!(
                s.state(),
                State::Established
                    | State::FinWait1
                    | State::FinWait2
                    | State::SynSent
                    | State::SynReceived
            )
    }

    /// Whether `try_write` would do anything but `WouldBlock` (it must agree with `try_write`).
    pub(crate) fn write_ready(&self, s: &tcp::Socket<'_>) -> bool {
        self.shut_write
            || s.can_send()
            || !matches!(
                s.state(),
                State::Established | State::CloseWait | State::SynSent | State::SynReceived
            )
    }
}

/// Keep-alive interval that re-sends a lost FIN (see [`fin_probe`]).
const FIN_PROBE: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1000);

/// Works around a smoltcp 0.14 stall: when the only unacknowledged segment is our FIN and three
/// duplicate ACKs arrive (the FIN was lost while the peer still acked earlier data), the fast
/// retransmit path finds no data to resend, puts the retransmit timer to idle, and nothing ever
/// re-sends the FIN: the connection hangs in FIN-WAIT-1 / LAST-ACK / CLOSING until a timeout
/// aborts it. Any later dispatch does send it (the pending fast retransmit carries the FIN), so
/// while our FIN is outstanding the socket gets a keep-alive timer, which is only armed when
/// the retransmit timer is idle, i.e. exactly in the stalled case; it is removed once the FIN
/// is acknowledged.
pub(crate) fn fin_probe(s: &mut tcp::Socket<'_>) {
    match s.state() {
        State::FinWait1 | State::Closing | State::LastAck => {
            if s.keep_alive().is_none() {
                s.set_keep_alive(Some(FIN_PROBE));
            }
        }
        _ => {
            if s.keep_alive().is_some() {
                s.set_keep_alive(None);
            }
        }
    }
}

/// What a smoltcp socket is to us.
pub(crate) enum Role {
    /// A connection the user holds (connected or accepted).
    Stream(Stream),
    /// A socket in a listener's pool, listening or holding a connection not yet accepted.
    Pooled {
        listener: Id,
        /// On the listener's ready queue.
        queued: bool,
    },
    /// Closed by the user; kept until its FIN handshake or RST is done, then removed.
    Orphan { port: Option<u16> },
}

pub(crate) struct Sock {
    pub(crate) handle: SocketHandle,
    wake: Arc<SockWake>,
    waker: Waker,
    pub(crate) role: Role,
}

impl Sock {
    /// Queues the socket for the next poll's look at its state, as a smoltcp wake would.
    pub(crate) fn mark_dirty(&self) {
        self.waker.wake_by_ref();
    }
}

/// A listening socket: a pool of smoltcp sockets on one port.
pub(crate) struct Listener {
    pub(crate) key: Option<Key>,
    pub(crate) armed: bool,
    pub(crate) endpoint: IpListenEndpoint,
    pub(crate) local: SocketAddr,
    /// Slab indices of the pool sockets.
    pub(crate) pool: Vec<u32>,
    /// Pool sockets that reached ESTABLISHED, oldest first (the accept queue).
    pub(crate) ready: VecDeque<u32>,
}

/// Which local ports are taken.
pub(crate) struct Ports {
    /// Port → the listener on it.
    pub(crate) listeners: BTreeMap<u16, Id>,
    /// Port → number of connections holding it as their ephemeral port.
    conns: BTreeMap<u16, u32>,
    next: u16,
    range: (u16, u16),
}

impl Ports {
    fn new(range: (u16, u16)) -> Self {
        let (lo, hi) = (range.0.max(1), range.1.max(range.0.max(1)));
        Ports {
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            next: lo,
            range: (lo, hi),
        }
    }

    pub(crate) fn in_use(&self, port: u16) -> bool {
        self.listeners.contains_key(&port) || self.conns.contains_key(&port)
    }

    /// Picks and holds a free ephemeral port.
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        let (lo, hi) = self.range;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port >= hi { lo } else { port + 1 };
            if !self.in_use(port) {
                self.conns.insert(port, 1);
                return Some(port);
            }
        }
        None
    }

    /// Picks a free ephemeral port without holding it.
    pub(crate) fn pick(&mut self) -> Option<u16> {
        let port = self.alloc()?;
        self.release(port);
        Some(port)
    }

    pub(crate) fn release(&mut self, port: u16) {
        if let Some(n) = self.conns.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.conns.remove(&port);
            }
        }
    }
}

/// The result of one drive pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drive {
    /// A budget ran out: more work is waiting, do not block.
    pub(crate) more: bool,
    /// smoltcp's own next deadline (retransmit, delayed ACK, TIME-WAIT, ARP).
    pub(crate) delay: Option<Duration>,
}

/// Everything behind the host lock.
pub(crate) struct Inner<D: Device> {
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) device: D,
    caps: DeviceCapabilities,
    clock: Arc<dyn Clock>,
    pub(crate) config: Config,
    pub(crate) socks: Slab<Sock>,
    pub(crate) listeners: Slab<Listener>,
    pub(crate) ports: Ports,
    dirty: Arc<Dirty>,
    dirty_scratch: Vec<u32>,
    /// Edges raised by the backend itself (shutdown), reported by the next poll.
    pub(crate) raised: Vec<(Key, Readiness)>,
    /// Set by an operation that queued egress or opened the window: the caller wakes the
    /// poller after unlocking (DESIGN.md rule 5).
    pub(crate) kick: bool,
    pub(crate) stats: HostStats,
}

/// One smoltcp host. Cloning gives another handle to the same host.
///
/// Build it, hand a clone to a [`SmolSource`](crate::SmolSource) (which drives it), build the
/// scheduler from that source, then make a [`SmolBackend`](crate::SmolBackend) from the host
/// and the scheduler's handle.
pub struct Host<D: Device> {
    inner: Arc<spin::Mutex<Inner<D>>>,
}

impl<D: Device> Clone for Host<D> {
    fn clone(&self) -> Self {
        Host {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Device> fmt::Debug for Host<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl<D: Device> Host<D> {
    /// A host on `device`, configured by `config`, reading time from `clock` (the scheduler's
    /// clock).
    ///
    /// Fails with [`DriverError::InvalidConfig`] where smoltcp would panic: a non-unicast MAC or
    /// address, a medium smoltcp was not built for, too many addresses or routes.
    pub fn new(mut device: D, config: Config, clock: Arc<dyn Clock>) -> Result<Self, DriverError> {
        let caps = device.capabilities();
        #[allow(unreachable_patterns)]
        let hw = match caps.medium {
            Medium::Ethernet => {
                if !config.mac.is_unicast() {
                    return Err(DriverError::InvalidConfig("MAC address is not unicast"));
                }
                HardwareAddress::Ethernet(config.mac)
            }
            Medium::Ip => HardwareAddress::Ip,
            _ => return Err(DriverError::InvalidConfig("unsupported medium")),
        };
        if config
            .addresses
            .iter()
            .any(|c| !c.address().is_unicast() && !c.address().is_unspecified())
        {
            return Err(DriverError::InvalidConfig("IP address is not unicast"));
        }
        if config.rx_buffer == 0 || config.tx_buffer == 0 {
            return Err(DriverError::InvalidConfig(
                "socket buffers must not be empty",
            ));
        }
        let mut ic = IfaceConfig::new(hw);
        ic.random_seed = config.random_seed;
        let mut iface = Interface::new(ic, &mut device, to_smol(clock.now()));
        let mut overflow = false;
        iface.update_ip_addrs(|addrs| {
            for c in &config.addresses {
                overflow |= addrs.push(*c).is_err();
            }
        });
        if overflow {
            return Err(DriverError::InvalidConfig("too many addresses"));
        }
        if let Some(gw) = config.gateway_v4 {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|_| DriverError::InvalidConfig("route table full"))?;
        }
        if let Some(gw) = config.gateway_v6 {
            iface
                .routes_mut()
                .add_default_ipv6_route(gw)
                .map_err(|_| DriverError::InvalidConfig("route table full"))?;
        }
        let ports = Ports::new(config.ephemeral_ports);
        let inner = Inner {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            caps,
            clock,
            config,
            socks: Slab::new(),
            listeners: Slab::new(),
            ports,
            dirty: Arc::new(Dirty::default()),
            dirty_scratch: Vec::new(),
            raised: Vec::new(),
            kick: false,
            stats: HostStats::default(),
        };
        Ok(Host {
            inner: Arc::new(spin::Mutex::new(inner)),
        })
    }

    /// The host's counters.
    pub fn stats(&self) -> HostStats {
        let inner = self.inner.lock();
        HostStats {
            sockets: inner.sockets.iter().count(),
            ..inner.stats
        }
    }

    /// The interface addresses.
    pub fn addresses(&self) -> Vec<IpCidr> {
        self.inner.lock().iface.ip_addrs().to_vec()
    }

    /// The TCP state of every smoltcp socket on this host (diagnostics).
    pub fn socket_states(&self) -> Vec<State> {
        let inner = self.inner.lock();
        inner
            .sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(t.state()),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .collect()
    }

    /// Runs `f` on the device, under the host lock (to inspect a device's own counters).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut self.inner.lock().device)
    }

    pub(crate) fn lock(&self) -> spin::MutexGuard<'_, Inner<D>> {
        self.inner.lock()
    }

    /// Drives the stack once: bounded ingress, egress, edges. Never blocks.
    pub(crate) fn drive(&self, events: &mut dyn Events) -> Drive {
        self.inner.lock().drive(events)
    }
}

/// A device that yields one already-received frame, so the host can look at a frame before
/// smoltcp does and still hand it over without a copy.
struct OneFrame<'f, 'c, T> {
    frame: Option<&'f [u8]>,
    meta: PacketMeta,
    tx: Option<T>,
    caps: &'c DeviceCapabilities,
}

struct FrameRx<'f> {
    frame: &'f [u8],
    meta: PacketMeta,
}

impl RxToken for FrameRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }

    fn meta(&self) -> PacketMeta {
        self.meta
    }
}

impl<'f, T: smoltcp::phy::TxToken> Device for OneFrame<'f, '_, T> {
    type RxToken<'a>
        = FrameRx<'f>
    where
        Self: 'a;
    type TxToken<'a>
        = T
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.frame.take()?;
        let tx = self.tx.take()?;
        Some((
            FrameRx {
                frame,
                meta: self.meta,
            },
            tx,
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        // Ingress answers through the token that came with the frame; egress goes through the
        // real device later in the same drive pass.
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// Whether a connection request must be dropped because its listener has no free socket.
fn syn_over_backlog(
    info: &TcpInfo,
    ports: &Ports,
    listeners: &Slab<Listener>,
    socks: &Slab<Sock>,
    sockets: &SocketSet<'static>,
) -> bool {
    let Some(&lid) = ports.listeners.get(&info.dst_port) else {
        return false;
    };
    let Some(l) = listeners.get(lid) else {
        return false;
    };
    if l.endpoint.addr.is_some_and(|a| a != info.dst) {
        return false;
    }
    let from = IpEndpoint::new(info.src, info.src_port);
    for &index in &l.pool {
        let Some(sock) = socks.at(index) else {
            continue;
        };
        let s = sockets.get::<tcp::Socket<'static>>(sock.handle);
        // A free socket takes it; a retransmitted SYN belongs to the socket that has it.
        if s.state() == State::Listen || s.remote_endpoint() == Some(from) {
            return false;
        }
    }
    true
}

impl<D: Device> Inner<D> {
    pub(crate) fn now(&self) -> smoltcp::time::Instant {
        to_smol(self.clock.now())
    }

    /// Creates a smoltcp socket with the configured buffers and options, registers its waker.
    pub(crate) fn add_socket(&mut self, role: Role) -> Id {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; self.config.rx_buffer]),
            tcp::SocketBuffer::new(vec![0u8; self.config.tx_buffer]),
        );
        // Go's default is TCP_NODELAY on.
        s.set_nagle_enabled(false);
        s.set_ack_delay(self.config.ack_delay.map(dur_to_smol));
        let index = self.socks.next_index();
        let wake = Arc::new(SockWake {
            index,
            queued: AtomicBool::new(false),
            dirty: self.dirty.clone(),
        });
        let waker = Waker::from(wake.clone());
        s.register_recv_waker(&waker);
        s.register_send_waker(&waker);
        let handle = self.sockets.add(s);
        let id = self.socks.insert(Sock {
            handle,
            wake,
            waker,
            role,
        });
        debug_assert_eq!(id.index, index, "slab: next_index disagrees with insert");
        id
    }

    /// The id and smoltcp handle of the socket in slab slot `index`.
    pub(crate) fn socks_id(&self, index: u32) -> Option<(Id, SocketHandle)> {
        let id = self.socks.id_at(index)?;
        self.socks.get(id).map(|s| (id, s.handle))
    }

    /// Removes a socket from the slab and from smoltcp.
    pub(crate) fn remove_socket(&mut self, id: Id) {
        if let Some(sock) = self.socks.remove(id) {
            self.sockets.remove(sock.handle);
        }
    }

    /// Turns a user's stream into an orphan that finishes its close on its own, or removes it
    /// at once if nothing is left to send.
    pub(crate) fn orphan(&mut self, id: Id, abort: bool) {
        let linger = dur_to_smol(self.config.linger);
        let Some(sock) = self.socks.get_mut(id) else {
            return;
        };
        let port = match &sock.role {
            Role::Stream(st) => st.port,
            Role::Pooled { .. } => None,
            Role::Orphan { port } => *port,
        };
        let s = self.sockets.get_mut::<tcp::Socket<'static>>(sock.handle);
        // Unread data at close means the application lost it: reset, as Linux does
        // (RFC 2525 §2.17), rather than a FIN that would pass for a clean end.
        if abort || s.can_recv() {
            s.abort();
        } else {
            s.close();
            fin_probe(s);
        }
        s.set_timeout(Some(linger));
        sock.role = Role::Orphan { port };
        if s.state() == State::Closed && s.remote_endpoint().is_none() {
            self.remove_socket(id);
            if let Some(p) = port {
                self.ports.release(p);
            }
        }
        self.kick = true;
    }

    /// One drive pass: at most `ingress_budget` frames in, at most `egress_budget` egress
    /// rounds out, then the edges of every socket that changed.
    fn drive(&mut self, events: &mut dyn Events) -> Drive {
        let ts = self.now();
        self.iface.poll_maintenance(ts);
        let mut more = false;
        let budget = self.config.ingress_budget.max(1);
        let mut n = 0;
        while n < budget {
            if !self.ingress_one(ts) {
                break;
            }
            n += 1;
            if !self.dirty.list.lock().is_empty() {
                // Per frame, so that a state passed through within one batch (ESTABLISHED then
                // CLOSED) is still seen.
                self.process_dirty(events);
            }
        }
        more |= n == budget;
        more |= self.egress_at(ts);
        self.process_dirty(events);
        for (key, r) in self.raised.drain(..) {
            events.push_event(key, r);
        }
        let mut delay = self.iface.poll_delay(ts, &self.sockets).map(from_smol);
        if delay == Some(Duration::ZERO) && !more {
            // Egress ran to completion and a socket still wants to send now: the device is
            // out of room (a full TAP queue). Retry in 1 ms rather than spin; the TAP waiter
            // also wakes on POLLOUT.
            delay = Some(Duration::from_millis(1));
        }
        Drive { more, delay }
    }

    /// Transmits what the sockets have queued: at most `egress_budget` rounds of
    /// `poll_egress`. Returns whether the budget ran out.
    fn egress_at(&mut self, ts: smoltcp::time::Instant) -> bool {
        let mut rounds = 0;
        while self
            .iface
            .poll_egress(ts, &mut self.device, &mut self.sockets)
            == PollResult::SocketStateChanged
        {
            rounds += 1;
            if rounds >= self.config.egress_budget.max(1) {
                return true;
            }
        }
        false
    }

    /// Takes one frame from the device; drops it if it is a SYN beyond a full backlog,
    /// otherwise hands it to smoltcp. `false` when the device had nothing.
    fn ingress_one(&mut self, ts: smoltcp::time::Instant) -> bool {
        let Inner {
            iface,
            sockets,
            device,
            caps,
            socks,
            listeners,
            ports,
            stats,
            ..
        } = self;
        let Some((rx, tx)) = device.receive(ts) else {
            return false;
        };
        let meta = rx.meta();
        rx.consume(|frame| {
            stats.frames_in += 1;
            if !ports.listeners.is_empty() {
                if let Some(info) = frame::tcp_info(frame, caps.medium) {
                    if info.is_connect()
                        && syn_over_backlog(&info, ports, listeners, socks, sockets)
                    {
                        stats.syns_dropped += 1;
                        return;
                    }
                }
            }
            let mut one = OneFrame {
                frame: Some(frame),
                meta,
                tx: Some(tx),
                caps,
            };
            let _: PollIngressSingleResult = iface.poll_ingress_single(ts, &mut one, sockets);
        });
        true
    }

    /// Processes every socket smoltcp woke since the last call.
    fn process_dirty(&mut self, events: &mut dyn Events) {
        let mut list = core::mem::take(&mut self.dirty_scratch);
        core::mem::swap(&mut list, &mut *self.dirty.list.lock());
        for &index in &list {
            self.process_one(index, events);
        }
        list.clear();
        self.dirty_scratch = list;
    }

    fn process_one(&mut self, index: u32, events: &mut dyn Events) {
        let Inner {
            sockets,
            socks,
            listeners,
            stats,
            ..
        } = self;
        // A stale index (the socket was removed after it was woken) is skipped.
        let Some((id, sock)) = socks.at_mut(index) else {
            return;
        };
        // Relaxed: under the host lock, like every wake (see `SockWake::wake_by_ref`).
        sock.wake.queued.store(false, Ordering::Relaxed);
        let s = sockets.get_mut::<tcp::Socket<'static>>(sock.handle);
        // smoltcp's registrations are one-shot: re-arm both (no clone if still registered).
        s.register_recv_waker(&sock.waker);
        s.register_send_waker(&sock.waker);
        let mut reap = None;
        match &mut sock.role {
            Role::Stream(st) => {
                st.observe(s);
                if st.shut_write {
                    fin_probe(s);
                }
                let Some(key) = st.key else {
                    return;
                };
                let mut ev = Readiness::EMPTY;
                if st.armed_read && st.read_ready(s) {
                    st.armed_read = false;
                    ev |= Readiness::READABLE;
                }
                if st.armed_write && st.write_ready(s) {
                    st.armed_write = false;
                    ev |= Readiness::WRITABLE;
                }
                if !ev.is_empty() {
                    events.push_event(key, ev);
                }
            }
            Role::Pooled { listener, queued } => {
                let Some(l) = listeners.get_mut(*listener) else {
                    return;
                };
                match s.state() {
                    State::Listen | State::SynReceived => {}
                    State::Closed | State::TimeWait => {
                        // Reset or timed out before accept: recycle silently (Go #6163).
                        if *queued {
                            *queued = false;
                            l.ready.retain(|&i| i != index);
                        }
                        stats.aborted_before_accept += 1;
                        // Cannot fail: the socket is closed and the port is non-zero.
                        let _ = s.listen(l.endpoint);
                    }
                    _ => {
                        if !*queued {
                            *queued = true;
                            l.ready.push_back(index);
                            if l.armed {
                                if let Some(key) = l.key {
                                    l.armed = false;
                                    events.push_event(key, Readiness::READABLE);
                                }
                            }
                        }
                    }
                }
            }
            Role::Orphan { port } => {
                if s.can_recv() {
                    // Data for a socket nobody can read any more: reset the sender, as Linux
                    // does for an orphaned socket, instead of letting it fill our window and
                    // then block forever.
                    s.abort();
                }
                fin_probe(s);
                if s.state() == State::Closed && s.remote_endpoint().is_none() {
                    reap = Some(*port);
                }
            }
        }
        if let Some(port) = reap {
            self.remove_socket(id);
            if let Some(p) = port {
                self.ports.release(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_generations_never_alias() {
        let mut slab = Slab::new();
        let a = slab.insert(1);
        assert_eq!(slab.next_index(), 1);
        assert_eq!(slab.remove(a), Some(1));
        assert_eq!(slab.next_index(), a.index, "the freed slot is reused");
        let b = slab.insert(2);
        assert_eq!(b.index, a.index);
        assert_ne!(b.generation, a.generation);
        assert_eq!(slab.get(a), None, "a stale id finds nothing");
        assert_eq!(slab.get(b), Some(&2));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.id_at(b.index), Some(b));
    }

    #[test]
    fn ports_skip_taken_and_wrap() {
        let mut ports = Ports::new((60000, 60002));
        ports.listeners.insert(
            60001,
            Id {
                index: 0,
                generation: 1,
            },
        );
        assert_eq!(ports.alloc(), Some(60000));
        assert_eq!(ports.alloc(), Some(60002), "60001 has a listener");
        assert_eq!(ports.alloc(), None, "all taken");
        ports.release(60000);
        assert_eq!(
            ports.alloc(),
            Some(60000),
            "wraps around to the released port"
        );
        assert!(ports.in_use(60001) && ports.in_use(60002));
        ports.release(60002);
        assert_eq!(ports.pick(), Some(60002));
        assert!(!ports.in_use(60002), "pick does not hold the port");
    }
}
