//! UDP sockets on the host: smoltcp's `socket-udp` sockets, all in one socket set of their
//! own (a datagram socket has no 4-tuple to demultiplex on, and smoltcp matches a datagram to
//! a socket by port), with bounded receive and send rings from [`Config`](crate::Config)
//! (`udp_*` fields: a count of datagrams plus payload bytes each).
//!
//! Readiness: an operation that finds nothing to receive (or no room to send) marks the
//! socket as waiting in that direction; each drive pass looks at the waiting sockets only and
//! raises the edge once a datagram is queued (or the send ring has emptied). A socket nobody
//! waits on costs nothing per pass.
//!
//! Ports come from a port allocator of their own (UDP and TCP ports are separate
//! namespaces): every bound socket is filed in its `listeners` map, so port 0 picks a port no
//! other UDP socket holds. ICMP port-unreachable is not reported to the sender's socket.

use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use netpoll_core::backend::{ErrorKind, TryError};
use netpoll_core::{Events, Key, Readiness};
use smoltcp::iface::{PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::udp::{self, PacketBuffer, PacketMetadata, RecvError, SendError};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::ports::Ports;
use super::slab::Slab;
use super::{Done, Host, Id, Inner};
use crate::clock::from_smol;

/// One UDP socket's bookkeeping; the smoltcp socket lives in [`Datagrams::set`].
struct DatagramSock {
    handle: SocketHandle,
    key: Option<Key>,
    local: SocketAddr,
    /// The connected peer: sends without an address go there, datagrams from others are
    /// dropped on receipt.
    peer: Option<IpEndpoint>,
    /// A receive found nothing: raise a read edge when a datagram is queued.
    want_read: bool,
    /// A send found no room: raise a write edge when the send ring has emptied.
    want_write: bool,
    /// On [`Datagrams::waiting`].
    listed: bool,
}

/// Every UDP socket of a host.
pub(super) struct Datagrams {
    /// The smoltcp UDP sockets, handed to smoltcp with every non-TCP frame and every egress.
    set: SocketSet<'static>,
    socks: Slab<DatagramSock>,
    ports: Ports,
    /// Slab indices of sockets with a `want_*` flag set: the only ones a drive pass looks at.
    waiting: Vec<u32>,
    /// Some socket has datagrams queued to send.
    pending_egress: bool,
    /// The resolver's smoltcp DNS socket, in `set` too (`host/dns.rs`), made on first use.
    pub(super) dns: Option<SocketHandle>,
    /// DNS queries in flight: while any is, every drive pass polls the set (smoltcp sends
    /// and retransmits queries, and gives up, from egress).
    pub(super) dns_pending: usize,
}

impl Datagrams {
    pub(super) fn new(ephemeral_ports: (u16, u16)) -> Self {
        Datagrams {
            set: SocketSet::new(Vec::new()),
            socks: Slab::new(),
            ports: Ports::new(ephemeral_ports),
            waiting: Vec::new(),
            pending_egress: false,
            dns: None,
            dns_pending: 0,
        }
    }

    /// The set to hand smoltcp with a frame that is not TCP.
    pub(super) fn set_mut(&mut self) -> &mut SocketSet<'static> {
        &mut self.set
    }

    fn socket(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.set.get_mut::<udp::Socket<'static>>(handle)
    }

    fn wait(&mut self, index: u32, read: bool) {
        let Some((_, sock)) = self.socks.at_mut(index) else {
            return;
        };
        if read {
            sock.want_read = true;
        } else {
            sock.want_write = true;
        }
        if !sock.listed {
            sock.listed = true;
            self.waiting.push(index);
        }
    }
}

impl<D: Device> Host<D> {
    /// Runs `op` under the host lock; the caller wakes the poller if it queued egress.
    fn datagram_op<R>(&self, op: impl FnOnce(&mut Inner<D>) -> R) -> Done<R> {
        let mut inner = self.inner.lock();
        let value = op(&mut inner);
        Done {
            value,
            wake_poller: core::mem::take(&mut inner.kick),
        }
    }

    /// A UDP socket bound to `addr` (port 0: an ephemeral one).
    pub(crate) fn bind_datagram(&self, addr: SocketAddr) -> Done<Result<Id, ErrorKind>> {
        self.datagram_op(|inner| inner.bind_datagram(addr))
    }

    /// Sets datagram socket `id`'s peer.
    pub(crate) fn connect_datagram(&self, id: Id, addr: SocketAddr) -> Done<Result<(), ErrorKind>> {
        self.datagram_op(|inner| {
            let sock = inner.udp.socks.get_mut(id).ok_or(ErrorKind::Closed)?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(ErrorKind::InvalidInput);
            }
            sock.peer = Some(IpEndpoint::from(addr));
            Ok(())
        })
    }

    /// Files `key` for datagram socket `id`'s edges.
    pub(crate) fn register_datagram(&self, id: Id, key: Key) -> Done<Result<(), ErrorKind>> {
        self.datagram_op(|inner| {
            let sock = inner.udp.socks.get_mut(id).ok_or(ErrorKind::Closed)?;
            sock.key = Some(key);
            Ok(())
        })
    }

    /// Datagram socket `id` reports no more edges.
    pub(crate) fn deregister_datagram(&self, id: Id) -> Done<()> {
        self.datagram_op(|inner| {
            if let Some(sock) = inner.udp.socks.get_mut(id) {
                sock.key = None;
            }
        })
    }

    /// Takes the oldest datagram of socket `id` (from its peer, if connected).
    pub(crate) fn try_recv_from(
        &self,
        id: Id,
        buf: &mut [u8],
    ) -> Done<Result<(usize, SocketAddr), TryError>> {
        self.datagram_op(|inner| inner.try_recv_from(id, buf))
    }

    /// Queues one datagram on socket `id`, to `to` or to its peer.
    pub(crate) fn try_send_to(
        &self,
        id: Id,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Done<Result<usize, TryError>> {
        self.datagram_op(|inner| inner.try_send_to(id, buf, to))
    }

    /// Datagram socket `id`'s bound address.
    pub(crate) fn datagram_local_addr(&self, id: Id) -> Done<Result<SocketAddr, ErrorKind>> {
        self.datagram_op(|inner| {
            let sock = inner.udp.socks.get(id).ok_or(ErrorKind::Closed)?;
            Ok(sock.local)
        })
    }

    /// Datagram socket `id`'s peer.
    pub(crate) fn datagram_peer_addr(&self, id: Id) -> Done<Result<SocketAddr, ErrorKind>> {
        self.datagram_op(|inner| {
            let sock = inner.udp.socks.get(id).ok_or(ErrorKind::Closed)?;
            sock.peer.map(endpoint_addr).ok_or(ErrorKind::NotConnected)
        })
    }

    /// Releases datagram socket `id` and its port. Datagrams still queued to send are
    /// dropped, as a kernel socket's may be.
    pub(crate) fn close_datagram(&self, id: Id) -> Done<()> {
        self.datagram_op(|inner| {
            let udp = &mut inner.udp;
            if let Some(sock) = udp.socks.remove(id) {
                udp.ports.listeners.remove(&sock.local.port());
                udp.set.remove(sock.handle);
                udp.waiting.retain(|&i| i != id.index);
            }
        })
    }
}

fn endpoint_addr(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(e.addr.into(), e.port)
}

impl<D: Device> Inner<D> {
    fn bind_datagram(&mut self, addr: SocketAddr) -> Result<Id, ErrorKind> {
        let ip = IpAddress::from(addr.ip());
        if !ip.is_unspecified() && !self.iface.has_ip_addr(ip) {
            return Err(ErrorKind::AddrNotAvailable);
        }
        let udp = &mut self.udp;
        let port = match addr.port() {
            0 => udp.ports.pick().ok_or(ErrorKind::OutOfResources)?,
            p if udp.ports.in_use(p) => return Err(ErrorKind::AddrInUse),
            p => p,
        };
        let c = &self.config;
        let mut socket = udp::Socket::new(
            PacketBuffer::new(
                vec![PacketMetadata::EMPTY; c.udp_rx_datagrams],
                vec![0u8; c.udp_rx_buffer],
            ),
            PacketBuffer::new(
                vec![PacketMetadata::EMPTY; c.udp_tx_datagrams],
                vec![0u8; c.udp_tx_buffer],
            ),
        );
        let endpoint = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(ip),
            port,
        };
        // Cannot fail: a fresh socket, a non-zero port.
        socket.bind(endpoint).map_err(|_| ErrorKind::InvalidInput)?;
        let handle = udp.set.add(socket);
        let id = udp.socks.insert(DatagramSock {
            handle,
            key: None,
            local: SocketAddr::new(addr.ip(), port),
            peer: None,
            want_read: false,
            want_write: false,
            listed: false,
        });
        udp.ports.listeners.insert(port, id);
        Ok(id)
    }

    fn try_recv_from(&mut self, id: Id, buf: &mut [u8]) -> Result<(usize, SocketAddr), TryError> {
        let udp = &mut self.udp;
        let sock = udp.socks.get(id).ok_or(ErrorKind::Closed)?;
        let (handle, peer) = (sock.handle, sock.peer);
        let socket = udp.socket(handle);
        loop {
            match socket.recv() {
                Ok((payload, meta)) => {
                    // Connected: another sender's datagram is dropped, as the kernel does.
                    if peer.is_some_and(|p| p != meta.endpoint) {
                        continue;
                    }
                    let n = payload.len().min(buf.len());
                    buf[..n].copy_from_slice(&payload[..n]);
                    return Ok((payload.len(), endpoint_addr(meta.endpoint)));
                }
                Err(RecvError::Exhausted) => break,
                Err(RecvError::Truncated) => return Err(ErrorKind::InvalidInput.into()),
            }
        }
        udp.wait(id.index, true);
        Err(TryError::WouldBlock)
    }

    fn try_send_to(
        &mut self,
        id: Id,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        let ip_mtu = self.caps.ip_mtu();
        let udp = &mut self.udp;
        let sock = udp.socks.get(id).ok_or(ErrorKind::Closed)?;
        let to = match to {
            Some(a) if a.ip().is_unspecified() || a.port() == 0 => {
                return Err(ErrorKind::InvalidInput.into())
            }
            Some(a) => IpEndpoint::from(a),
            None => sock.peer.ok_or(ErrorKind::NotConnected)?,
        };
        // No IP fragmentation: a datagram must fit one IP packet with its IP and 8-byte UDP
        // headers.
        let ip_header = match to.addr {
            IpAddress::Ipv4(_) => 20,
            IpAddress::Ipv6(_) => 40,
        };
        let max_payload = ip_mtu.saturating_sub(ip_header + 8);
        let handle = sock.handle;
        let socket = udp.socket(handle);
        if buf.len() > socket.payload_send_capacity() || buf.len() > max_payload {
            return Err(ErrorKind::MessageTooLong.into());
        }
        match socket.send_slice(buf, to) {
            Ok(()) => {
                udp.pending_egress = true;
                self.kick = true;
                Ok(buf.len())
            }
            Err(SendError::BufferFull) => {
                udp.wait(id.index, false);
                Err(TryError::WouldBlock)
            }
            Err(SendError::Unaddressable) => Err(ErrorKind::InvalidInput.into()),
        }
    }

    /// Part of a drive pass: sends queued datagrams, then raises the edges waiting sockets
    /// can now use. Returns when smoltcp wants the UDP sockets polled again (a datagram
    /// waiting for its neighbor's address).
    pub(super) fn drive_datagrams(
        &mut self,
        ts: smoltcp::time::Instant,
        events: &mut dyn Events,
    ) -> Option<core::time::Duration> {
        let udp = &mut self.udp;
        if udp.socks.len() == 0 && udp.dns_pending == 0 {
            return None;
        }
        if udp.pending_egress || udp.dns_pending > 0 {
            let budget = self.config.egress_budget.max(1);
            for _ in 0..budget {
                if self.iface.poll_egress(ts, &mut self.device, &mut udp.set)
                    != PollResult::SocketStateChanged
                {
                    break;
                }
            }
            udp.pending_egress = udp
                .set
                .iter()
                .any(|(_, s)| matches!(s, smoltcp::socket::Socket::Udp(u) if u.send_queue() > 0));
        }
        let Datagrams {
            set,
            socks,
            waiting,
            ..
        } = udp;
        waiting.retain(|&index| {
            let Some((_, sock)) = socks.at_mut(index) else {
                return false;
            };
            let socket = set.get::<udp::Socket<'static>>(sock.handle);
            let mut ready = Readiness::EMPTY;
            if sock.want_read && socket.can_recv() {
                sock.want_read = false;
                ready |= Readiness::READABLE;
            }
            if sock.want_write && socket.send_queue() == 0 {
                sock.want_write = false;
                ready |= Readiness::WRITABLE;
            }
            if ready != Readiness::EMPTY {
                if let Some(key) = sock.key {
                    events.push_event(key, ready);
                }
            }
            sock.listed = sock.want_read || sock.want_write;
            sock.listed
        });
        if !udp.pending_egress && udp.dns_pending == 0 {
            return None;
        }
        self.iface.poll_delay(ts, &udp.set).map(from_smol)
    }
}
