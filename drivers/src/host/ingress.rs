//! Ingress: every frame is matched to its socket by 4-tuple *before* smoltcp sees it, and
//! handed to smoltcp together with that one socket (a socket set of one), so a frame costs
//! the same with 10 or 50,000 connections, and a SYN for a live connection can never reach a
//! listening socket.
//!
//! | frame | goes to |
//! |---|---|
//! | TCP, 4-tuple filed in the demux map | that socket (a SYN there draws smoltcp's challenge ACK, RFC 9293) |
//! | SYN for a listener, new 4-tuple | a `LISTEN` socket of the listener's pool; if none, a half-open one is evicted: first one whose SYN-ACK could not leave (its source address does not resolve: spoofed), else the oldest if it is older than `Listener::eviction_age` (a real peer would have answered); otherwise the SYN is dropped and the client retransmits |
//! | SYN for a 4-tuple in TIME-WAIT | the TIME-WAIT socket is reaped and the SYN treated as new (as Linux does) |
//! | any other TCP | smoltcp with no socket: it answers unknown TCP with RST |
//! | not TCP (UDP, ARP, NDP, ICMP) | smoltcp with the UDP sockets' set (`host/udp.rs`): it matches UDP by port, handles ARP/NDP itself |

use core::net::SocketAddr;

use smoltcp::iface::PollIngressSingleResult;
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, PacketMeta, RxToken};
use smoltcp::socket::tcp::State;
use smoltcp::wire::IpEndpoint;

use super::probe::PeerAck;
use super::{Inner, Role};
use crate::frame::{self, TcpInfo};

/// A connection's 4-tuple, as the demux map files it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) struct Tuple {
    pub(super) local: IpEndpoint,
    pub(super) remote: IpEndpoint,
}

/// Where a frame goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    /// To the socket in this slab slot.
    Socket(u32),
    /// To smoltcp without any socket.
    NoSocket,
    /// Nowhere: a SYN beyond a full accept queue.
    Drop,
}

impl<D: Device> Inner<D> {
    /// Takes one frame from the device and hands it to smoltcp with the socket it belongs to.
    /// `false` when the device had nothing.
    pub(super) fn ingress_one(&mut self, ts: smoltcp::time::Instant) -> bool {
        let mut route = Route::NoSocket;
        let mut non_tcp = false;
        {
            let Inner {
                iface,
                device,
                caps,
                socks,
                no_socket,
                stats,
                router,
                config,
                udp,
                ..
            } = self;
            let Some((rx, tx)) = device.receive(ts) else {
                return false;
            };
            let meta = rx.meta();
            let early_retransmit = config.early_retransmit.is_some();
            // The frame is looked at and handed over inside one `consume`, without a copy.
            rx.consume(|frame| {
                stats.frames_in += 1;
                // One look at the headers and one checksum pass per TCP frame: smoltcp is
                // built not to verify TCP checksums (`rx_caps`), the routing and early
                // retransmission reuse this parse.
                let segment = frame::tcp_segment(frame, caps.medium);
                route = match &segment {
                    Some(seg) if !seg.checksums_ok() => {
                        stats.bad_checksums += 1;
                        Route::Drop
                    }
                    Some(seg) => router.route(&seg.info(), ts, socks, stats),
                    None => {
                        non_tcp = true;
                        Route::NoSocket
                    }
                };
                let mut one = OneFrame {
                    frame: Some(frame),
                    meta,
                    tx: Some(tx),
                    caps,
                };
                let sock = match route {
                    Route::Drop => return,
                    Route::Socket(i) => socks.at_mut(i).map(|(_, sock)| sock),
                    Route::NoSocket => None,
                };
                match sock {
                    Some(sock) => {
                        let _: PollIngressSingleResult =
                            iface.poll_ingress_single(ts, &mut one, &mut sock.set);
                        if let (true, Some(seg)) = (early_retransmit, &segment) {
                            PeerAck::observe(&mut sock.peer_ack, seg, ts.total_micros());
                        }
                    }
                    // Not TCP: UDP goes to the datagram sockets (smoltcp matches the port);
                    // ARP, NDP and ICMP need no socket, and get the UDP set harmlessly.
                    None if non_tcp => {
                        let _: PollIngressSingleResult =
                            iface.poll_ingress_single(ts, &mut one, udp.set_mut());
                    }
                    None => {
                        let _: PollIngressSingleResult =
                            iface.poll_ingress_single(ts, &mut one, no_socket);
                    }
                }
            });
        }
        if let Route::Socket(i) = route {
            self.sync_later(i);
        }
        if non_tcp {
            // An ARP or NDP answer may be what a stalled socket waits for.
            self.retry_stalled(ts);
        }
        self.reap_pending();
        true
    }
}

/// The routing state: the demux map, the listeners' ports and pools, reaped sockets.
pub(super) struct Router {
    /// Every socket with a 4-tuple, by tuple.
    pub(super) demux: alloc::collections::BTreeMap<Tuple, u32>,
    /// Port → the listener on it, and the listeners themselves.
    pub(super) ports: super::ports::Ports,
    pub(super) listeners: super::slab::Slab<super::Listener>,
    /// TIME-WAIT sockets a new SYN took over: removed after the frame.
    pub(super) reap: alloc::vec::Vec<u32>,
}

impl Router {
    fn route(
        &mut self,
        info: &TcpInfo,
        ts: smoltcp::time::Instant,
        socks: &mut super::slab::Slab<super::Sock>,
        stats: &mut super::HostStats,
    ) -> Route {
        let tuple = Tuple {
            local: IpEndpoint::new(info.dst, info.dst_port),
            remote: IpEndpoint::new(info.src, info.src_port),
        };
        if let Some(&index) = self.demux.get(&tuple) {
            let reuse = info.is_connect()
                && socks.at(index).is_some_and(|s| {
                    matches!(s.role, Role::Orphan { .. }) && s.tcp().state() == State::TimeWait
                });
            if !reuse {
                return Route::Socket(index);
            }
            // A new connection from a 4-tuple we hold in TIME-WAIT: the old one is over.
            self.demux.remove(&tuple);
            if let Some((_, s)) = socks.at_mut(index) {
                s.tuple = None;
            }
            self.reap.push(index);
        }
        if !info.is_connect() {
            return Route::NoSocket;
        }
        let Some(&lid) = self.ports.listeners.get(&info.dst_port) else {
            return Route::NoSocket;
        };
        let Some(l) = self.listeners.get_mut(lid) else {
            return Route::NoSocket;
        };
        if l.endpoint.addr.is_some_and(|a| a != info.dst) {
            return Route::NoSocket;
        }
        let endpoint = l.endpoint;
        let min_age = l.eviction_age();
        // A free socket takes the SYN; else a half-open one is evicted for it. The scan starts
        // where the last one stopped, so under a flood it rarely walks the whole pool.
        let mut oldest: Option<(i64, u32)> = None;
        let mut unanswerable = None;
        let len = l.pool.len();
        for k in 0..len {
            let pos = (l.cursor + k) % len;
            let index = l.pool[pos];
            let Some(sock) = socks.at(index) else {
                continue;
            };
            let Role::Pooled {
                half_open_since, ..
            } = sock.role
            else {
                continue;
            };
            match sock.tcp().state() {
                State::Listen => {
                    l.cursor = pos + 1;
                    set_half_open(socks, index, ts);
                    return Route::Socket(index);
                }
                State::SynReceived if sock.synack_blocked => {
                    l.cursor = pos + 1;
                    unanswerable = Some(index);
                    break;
                }
                State::SynReceived => {
                    let since = half_open_since.unwrap_or(i64::MIN);
                    if oldest.is_none_or(|(t, _)| since < t) {
                        oldest = Some((since, index));
                    }
                }
                _ => {}
            }
        }
        // First choice: a half-open socket whose SYN-ACK never left because its peer's
        // address does not resolve (no ARP/NDP answer): the mark of a spoofed source; no real
        // client loses anything. Else the oldest one, once older than a handshake takes.
        let victim = unanswerable.or_else(|| {
            oldest
                .filter(|&(since, _)| ts.total_micros() - since >= min_age)
                .map(|(_, i)| i)
        });
        let now = ts.total_micros();
        let Some(index) = victim else {
            // Every pool socket holds a connection that waits for accept, or a half-open one
            // young enough that its peer may still answer: drop, as Linux does with a full
            // queue; the client retransmits.
            stats.syns_dropped += 1;
            log::trace!(
                "SYN {} -> {} dropped: accept pool full",
                tuple.remote,
                tuple.local
            );
            l.pressure.note(Pressured::Dropped, now, l.local, len);
            return Route::Drop;
        };
        l.pressure.note(Pressured::Evicted, now, l.local, len);
        // Evict silently (no RST: a half-open peer under a flood is usually spoofed), as
        // Linux drops the oldest request when its SYN queue overflows without cookies.
        if let Some((_, sock)) = socks.at_mut(index) {
            if let Some(old) = sock.tuple.take() {
                log::trace!(
                    "half-open {} -> {} evicted for a SYN from {}",
                    old.local,
                    old.remote,
                    tuple.remote
                );
                self.demux.remove(&old);
            }
            sock.forget_neighbor();
            let s = sock.tcp_mut();
            s.abort();
            // Cannot fail: the socket is closed now and the port is non-zero. `listen` forgets
            // the old peer, so the abort sends nothing.
            let _ = s.listen(endpoint);
        }
        stats.half_open_evicted += 1;
        set_half_open(socks, index, ts);
        Route::Socket(index)
    }
}

/// What a full accept pool did with a SYN.
#[derive(Clone, Copy)]
enum Pressured {
    /// A half-open connection was evicted to make room for it.
    Evicted,
    /// It was dropped.
    Dropped,
}

/// How often at most a listener warns that its accept pool is full: a SYN flood costs one log
/// line a second, not one per SYN.
const PRESSURE_WARNING_INTERVAL_MICROS: i64 = 1_000_000;

/// A listener's accept-pool pressure since its last warning (`HostStats` has the totals).
#[derive(Default)]
pub(super) struct Pressure {
    evicted: u64,
    dropped: u64,
    /// When the last warning was logged (microseconds).
    last_warning: Option<i64>,
}

impl Pressure {
    /// Counts one SYN a full pool of `pool` sockets handled; warns if none was logged for a
    /// while.
    fn note(&mut self, what: Pressured, now: i64, listener: SocketAddr, pool: usize) {
        match what {
            Pressured::Evicted => self.evicted += 1,
            Pressured::Dropped => self.dropped += 1,
        }
        if self
            .last_warning
            .is_some_and(|t| now.saturating_sub(t) < PRESSURE_WARNING_INTERVAL_MICROS)
        {
            return;
        }
        log::warn!(
            "listener {listener}: accept pool of {pool} full: {} half-open connections evicted, {} SYNs dropped since the last warning",
            self.evicted,
            self.dropped
        );
        *self = Pressure {
            evicted: 0,
            dropped: 0,
            last_warning: Some(now),
        };
    }
}

/// Records when a pool socket took a SYN (the eviction order).
fn set_half_open(
    socks: &mut super::slab::Slab<super::Sock>,
    index: u32,
    ts: smoltcp::time::Instant,
) {
    if let Some((_, sock)) = socks.at_mut(index) {
        if let Role::Pooled {
            half_open_since, ..
        } = &mut sock.role
        {
            *half_open_since = Some(ts.total_micros());
        }
    }
}

/// A device that yields one already-received frame, so the host can look at a frame before
/// smoltcp does and still hand it over without a copy.
pub(super) struct OneFrame<'f, 'c, T> {
    pub(super) frame: Option<&'f [u8]>,
    pub(super) meta: PacketMeta,
    pub(super) tx: Option<T>,
    pub(super) caps: &'c DeviceCapabilities,
}

pub(super) struct FrameRx<'f> {
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

/// The capabilities smoltcp's interface is built with: the device's, except that smoltcp does
/// not verify TCP checksums on receive, since `Inner::ingress_one` verifies them once before
/// a frame reaches smoltcp (and drops those that fail). smoltcp still computes them on send.
pub(super) fn rx_caps(device: &DeviceCapabilities) -> DeviceCapabilities {
    let mut caps = device.clone();
    caps.checksum.tcp = match caps.checksum.tcp {
        Checksum::Both | Checksum::Tx => Checksum::Tx,
        Checksum::Rx | Checksum::None => Checksum::None,
    };
    caps
}

/// A device that only reports capabilities: what `Interface::new` reads (it takes nothing
/// else from the device).
pub(super) struct CapsOnly(pub(super) DeviceCapabilities);

impl Device for CapsOnly {
    type RxToken<'a>
        = FrameRx<'static>
    where
        Self: 'a;
    type TxToken<'a>
        = NoRoom
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.0.clone()
    }
}

/// The transmit token type of [`CapsOnly`], which never hands one out.
pub(super) enum NoRoom {}

impl smoltcp::phy::TxToken for NoRoom {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, _len: usize, _f: F) -> R {
        match self {}
    }
}
