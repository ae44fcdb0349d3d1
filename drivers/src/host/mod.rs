//! One smoltcp host: an `Interface`, one smoltcp socket set per socket, its device, and the
//! bookkeeping that matches frames to sockets and turns socket changes into readiness edges.
//!
//! The rooms: [`ingress`] (4-tuple demux and the SYN gate), [`egress`] (the timer queue and
//! transmission), [`edges`] (dirty sockets to readiness edges), [`stream`] (a user's view of a
//! connection), [`slab`] and [`ports`]. The crate docs explain the design.

mod dns;
mod edges;
mod egress;
mod ingress;
mod ports;
mod probe;
mod slab;
mod sockets;
mod stream;
mod udp;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::task::Waker;
use core::time::Duration;
use netpoll_core::sync::AtomicBool;

use netpoll_core::{Clock, Events, Key, Readiness};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint};

use crate::clock::{dur_to_smol, from_smol, to_smol};
use crate::config::Config;
use crate::error::DriverError;
pub use dns::ResolveError;
use edges::{Dirty, SockWake};
use ingress::Router;
use ingress::Tuple;
use ports::Ports;
pub(crate) use slab::Id;
use slab::Slab;
pub(crate) use sockets::Done;
use stream::{fin_probe, Stream};

/// Counters a host keeps (statistics only; they never affect behaviour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Frames taken from the device.
    pub frames_in: u64,
    /// Connection requests dropped because every socket of the listener's pool held an
    /// established connection waiting for `accept` (the client retransmits; no RST is sent).
    pub syns_dropped: u64,
    /// Half-open connections (SYN-RECEIVED) evicted, oldest first, to make room for a new
    /// connection request when the listener's pool had no free socket.
    pub half_open_evicted: u64,
    /// Connections handed out by `accept`.
    pub accepted: u64,
    /// Early retransmissions: a connection's ACKs stalled with data in flight, so the peer's
    /// last ACK was replayed to make smoltcp fast-retransmit (`Config::early_retransmit`).
    pub early_retransmits: u64,
    /// Queued or half-open connections that were reset or timed out before `accept` took them.
    pub aborted_before_accept: u64,
    /// smoltcp sockets alive now: streams, pool sockets, and closed sockets still finishing
    /// their FIN or RST.
    pub sockets: usize,
    /// Connections filed in the 4-tuple demux map now.
    pub connections: usize,
    /// TCP frames dropped because their IPv4 header or TCP checksum did not hold.
    pub bad_checksums: u64,
}

/// What a smoltcp socket is to us.
enum Role {
    /// A connection the user holds (connected or accepted).
    Stream(Stream),
    /// A socket in a listener's pool, listening or holding a connection not yet accepted.
    Pooled {
        listener: Id,
        /// On the listener's ready queue.
        queued: bool,
        /// When it took its SYN (microseconds; the eviction order of half-open sockets).
        half_open_since: Option<i64>,
    },
    /// Closed by the user; kept until its FIN handshake or RST is done, then removed.
    Orphan { port: Option<u16> },
}

/// One smoltcp socket, in a socket set of its own so that smoltcp's per-set walks (ingress
/// demux, egress, `poll_delay`) cost O(1).
struct Sock {
    set: SocketSet<'static>,
    handle: SocketHandle,
    wake: Arc<SockWake>,
    waker: Waker,
    role: Role,
    /// The 4-tuple it is filed under in the demux map.
    tuple: Option<Tuple>,
    /// Its key in the timer queue: when smoltcp next wants it polled (microseconds).
    due: Option<i64>,
    /// On the stalled list (see `Inner::maybe_stalled`).
    stalled: bool,
    /// A half-open socket whose last egress attempt could not send its SYN-ACK.
    synack_blocked: bool,
    /// The peer's newest ACK, for early retransmission (`host/probe.rs`).
    peer_ack: Option<probe::PeerAck>,
    /// On the touched list for its timer to be re-filed (`Inner::sync_later`).
    refile_pending: bool,
}

impl Sock {
    /// Queues the socket for the next poll's look at its state, as a smoltcp wake would.
    fn mark_dirty(&self) {
        self.waker.wake_by_ref();
    }

    fn tcp(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket<'static>>(self.handle)
    }

    fn tcp_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket<'static>>(self.handle)
    }

    /// Forgets the neighbor smoltcp's egress waits for: a recycled pool socket must not wait
    /// out the silence left by a previous peer whose address never resolved. (The wait lives in
    /// the socket set's per-socket metadata, which re-adding the socket resets.)
    fn forget_neighbor(&mut self) {
        let socket = self.set.remove(self.handle);
        self.handle = self.set.add(socket);
        self.synack_blocked = false;
    }

    /// The role, the smoltcp socket and the waker, borrowed together.
    fn parts(&mut self) -> (&mut Role, &mut tcp::Socket<'static>, &Waker) {
        (
            &mut self.role,
            self.set.get_mut::<tcp::Socket<'static>>(self.handle),
            &self.waker,
        )
    }
}

/// A listening socket: a pool of smoltcp sockets on one port.
struct Listener {
    key: Option<Key>,
    armed: bool,
    endpoint: IpListenEndpoint,
    local: SocketAddr,
    /// Slab indices of the pool sockets.
    pool: Vec<u32>,
    /// Pool sockets that reached ESTABLISHED, oldest first (the accept queue).
    ready: VecDeque<u32>,
    /// How long a pool socket may stay half-open without hearing from its peer.
    half_open_timeout: smoltcp::time::Duration,
    /// Smoothed time from SYN to the handshake's ACK, microseconds (an EWMA, 1/8 gain).
    handshake_us: i64,
    /// Where the next search of `pool` for a free socket starts.
    cursor: usize,
    /// SYNs a full pool handled since the last warning.
    pressure: ingress::Pressure,
}

impl Listener {
    /// Handshake time assumed before any handshake completed.
    const INITIAL_HANDSHAKE_US: i64 = 10_000;

    /// How old a half-open connection whose SYN-ACK went out must be before a new SYN may
    /// evict it: twice the smoothed handshake time, but never before its first SYN-ACK
    /// retransmission (1 s): if only the handshake's last ACK was lost, that retransmission
    /// draws it again, and evicting earlier would reset a client that believes it is
    /// connected. (Half-open sockets whose SYN-ACK cannot leave at all are evicted at once.)
    fn eviction_age(&self) -> i64 {
        (2 * self.handshake_us).clamp(1_000_000, 3_000_000)
    }

    /// Folds one completed handshake's duration into the estimate.
    fn record_handshake(&mut self, micros: i64) {
        self.handshake_us += (micros.max(0) - self.handshake_us) / 8;
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
struct Inner<D: Device> {
    iface: Interface,
    /// An empty socket set, for frames that belong to no socket.
    no_socket: SocketSet<'static>,
    device: D,
    caps: DeviceCapabilities,
    clock: Arc<dyn Clock>,
    config: Config,
    socks: Slab<Sock>,
    router: Router,
    /// (due instant in microseconds, slab index): the timer queue.
    timers: BTreeSet<(i64, u32)>,
    due_scratch: Vec<u32>,
    /// Sockets that may wait for a neighbor's link-layer address.
    stalled: Vec<u32>,
    /// Sockets a backend operation touched: re-filed before the host lock is released.
    touched: Vec<u32>,
    /// The instant of the last drive pass. Re-filing a touched socket uses it instead of
    /// reading the clock per operation (a clock read cost 13% of a bulk echo's CPU): smoltcp's
    /// timers are absolute, so an older instant only files "send now" a little earlier.
    pass_ts: smoltcp::time::Instant,
    dirty: Arc<Dirty>,
    dirty_scratch: Vec<u32>,
    /// Edges raised by the backend itself (shutdown), reported by the next poll.
    raised: Vec<(Key, Readiness)>,
    /// Set by an operation that queued egress or opened the window: the caller wakes the
    /// poller after unlocking (see `SmolBackend`'s module docs).
    kick: bool,
    stats: HostStats,
    /// The UDP sockets (`host/udp.rs`).
    udp: udp::Datagrams,
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
    pub fn new(device: D, config: Config, clock: Arc<dyn Clock>) -> Result<Self, DriverError> {
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
        config.validate()?;
        let mut ic = IfaceConfig::new(hw);
        ic.random_seed = config.random_seed;
        let mut iface = Interface::new(
            ic,
            &mut ingress::CapsOnly(ingress::rx_caps(&caps)),
            to_smol(clock.now()),
        );
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
        let router = Router {
            demux: BTreeMap::new(),
            ports: Ports::new(config.ephemeral_ports),
            listeners: Slab::new(),
            reap: Vec::new(),
        };
        let udp = udp::Datagrams::new(config.ephemeral_ports);
        let pass_ts = to_smol(clock.now());
        let inner = Inner {
            iface,
            no_socket: SocketSet::new(Vec::new()),
            device,
            caps,
            clock,
            config,
            socks: Slab::new(),
            router,
            timers: BTreeSet::new(),
            due_scratch: Vec::new(),
            stalled: Vec::new(),
            touched: Vec::new(),
            pass_ts,
            dirty: Arc::new(Dirty::default()),
            dirty_scratch: Vec::new(),
            raised: Vec::new(),
            kick: false,
            stats: HostStats::default(),
            udp,
        };
        Ok(Host {
            inner: Arc::new(spin::Mutex::new(inner)),
        })
    }

    /// The host's counters.
    pub fn stats(&self) -> HostStats {
        let inner = self.inner.lock();
        HostStats {
            sockets: inner.socks.len(),
            connections: inner.router.demux.len(),
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
        inner.socks.iter().map(|s| s.tcp().state()).collect()
    }

    /// Runs `f` on the device, under the host lock (to inspect a device's own counters).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut self.inner.lock().device)
    }

    /// Drives the stack once: bounded ingress, egress, edges. Never blocks.
    pub(crate) fn drive(&self, events: &mut dyn Events) -> Drive {
        self.inner.lock().drive(events)
    }
}

impl<D: Device> Inner<D> {
    fn now(&self) -> smoltcp::time::Instant {
        to_smol(self.clock.now())
    }

    /// Creates a smoltcp socket with the configured buffers and options, registers its waker.
    fn add_socket(&mut self, role: Role) -> Id {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; self.config.rx_buffer]),
            tcp::SocketBuffer::new(vec![0u8; self.config.tx_buffer]),
        );
        // Go's default is TCP_NODELAY on.
        s.set_nagle_enabled(false);
        s.set_ack_delay(self.config.ack_delay.map(dur_to_smol));
        s.set_congestion_control(self.config.congestion_control);
        if self.config.timestamps {
            s.set_tsval_generator(Some(tsval));
        }
        let index = self.socks.next_index();
        let wake = Arc::new(SockWake {
            index,
            queued: AtomicBool::new(false),
            dirty: self.dirty.clone(),
        });
        let waker = Waker::from(wake.clone());
        s.register_recv_waker(&waker);
        s.register_send_waker(&waker);
        // Exactly one slot: a set grown by `add` would reserve four.
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(s);
        let id = self.socks.insert(Sock {
            set,
            handle,
            wake,
            waker,
            role,
            tuple: None,
            due: None,
            stalled: false,
            synack_blocked: false,
            peer_ack: None,
            refile_pending: false,
        });
        debug_assert_eq!(id.index, index, "slab: next_index disagrees with insert");
        id
    }

    /// Adds a listening socket to listener `lid`'s pool.
    fn add_pool_socket(
        &mut self,
        lid: Id,
        endpoint: IpListenEndpoint,
        half_open_timeout: smoltcp::time::Duration,
    ) -> Id {
        let id = self.add_socket(Role::Pooled {
            listener: lid,
            queued: false,
            half_open_since: None,
        });
        if let Some(sock) = self.socks.get_mut(id) {
            let s = sock.tcp_mut();
            // Cannot fail: a fresh socket, a non-zero port.
            let _ = s.listen(endpoint);
            // Only counts once a SYN arrived (smoltcp times out from the peer's last segment).
            s.set_timeout(Some(half_open_timeout));
        }
        id
    }

    /// Removes a socket from the slab, the demux map and the timer queue; releases its port
    /// if it was an orphan holding one.
    fn remove_socket(&mut self, id: Id) {
        let Some(sock) = self.socks.remove(id) else {
            return;
        };
        if let Some(t) = sock.tuple {
            if self.router.demux.get(&t) == Some(&id.index) {
                self.router.demux.remove(&t);
            }
        }
        if let Some(due) = sock.due {
            self.timers.remove(&(due, id.index));
        }
        if sock.stalled {
            self.stalled.retain(|&i| i != id.index);
        }
        if let Role::Orphan { port: Some(p) } = sock.role {
            self.router.ports.release(p);
        }
    }

    /// Removes the sockets routing or edge processing found finished.
    fn reap_pending(&mut self) {
        while let Some(index) = self.router.reap.pop() {
            if let Some(id) = self.socks.id_at(index) {
                self.remove_socket(id);
            }
        }
    }

    /// Turns a user's stream into an orphan that finishes its close on its own, or removes it
    /// at once if nothing is left to send.
    fn orphan(&mut self, id: Id, abort: bool) {
        let linger = dur_to_smol(self.config.linger);
        let Some(sock) = self.socks.get_mut(id) else {
            return;
        };
        let port = match &sock.role {
            Role::Stream(st) => st.port,
            Role::Pooled { .. } => None,
            Role::Orphan { port } => *port,
        };
        let role = core::mem::replace(&mut sock.role, Role::Orphan { port });
        let s = sock.tcp_mut();
        // Unread data at close means the application lost it: reset, as Linux does
        // (RFC 2525, section 2.17), rather than a FIN that would pass for a clean end.
        let reset = abort || s.can_recv();
        if let Role::Stream(st) = &role {
            if reset {
                log::debug!("close with reset {}", st.tuple());
            } else {
                log::debug!("close {}", st.tuple());
            }
        }
        if reset {
            s.abort();
        } else {
            s.close();
            fin_probe(s);
        }
        s.set_timeout(Some(linger));
        if s.state() == State::Closed && s.remote_endpoint().is_none() {
            self.remove_socket(id);
        } else {
            self.touched.push(id.index);
        }
        self.kick = true;
    }

    /// One drive pass: at most `ingress_budget` frames in, the due sockets out, then the edges
    /// of every socket that changed.
    fn drive(&mut self, events: &mut dyn Events) -> Drive {
        let ts = self.now();
        self.pass_ts = ts;
        self.iface.poll_maintenance(ts);
        self.sync_touched();
        let mut more = false;
        let budget = self.config.ingress_budget.max(1);
        let mut n = 0;
        while n < budget {
            if !self.ingress_one(ts) {
                break;
            }
            n += 1;
            if self.has_dirty() {
                // Per frame, so that a state passed through within one batch (ESTABLISHED then
                // CLOSED) is still seen.
                self.process_dirty(events);
            }
        }
        more |= n == budget;
        // Timers of the sockets the frames touched, before egress looks for due ones.
        self.sync_touched();
        let pass = self.egress(ts);
        more |= pass.more;
        let udp_delay = self.drive_datagrams(ts, events);
        self.process_dirty(events);
        self.sync_touched();
        for (key, r) in self.raised.drain(..) {
            events.push_event(key, r);
        }
        let now = ts.total_micros();
        let mut delay = self
            .next_due()
            .map(|t| Duration::from_micros(t.saturating_sub(now).max(0) as u64));
        if let Some(d) = self.iface.poll_delay(ts, &self.no_socket).map(from_smol) {
            delay = Some(delay.map_or(d, |x| x.min(d)));
        }
        if let Some(d) = udp_delay {
            delay = Some(delay.map_or(d, |x| x.min(d)));
        }
        if delay == Some(Duration::ZERO) && !more {
            // A socket still wants to send now although egress ran: the device is out of room
            // (a full TAP queue). Retry in 1 ms rather than spin; the TAP waiter also wakes on
            // POLLOUT.
            delay = Some(Duration::from_millis(1));
        }
        Drive { more, delay }
    }
}

/// The TCP timestamp clock (RFC 7323): smoltcp asks for a value per segment and only needs it
/// to increase; a counter keeps `core` and this crate clock-free.
fn tsval() -> u32 {
    use netpoll_core::sync::{AtomicU32, Ordering};
    static TSVAL: AtomicU32 = AtomicU32::new(1);
    // Relaxed: a monotone counter; no other memory is published with it.
    TSVAL.fetch_add(1, Ordering::Relaxed)
}
