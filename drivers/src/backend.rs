//! [`SmolBackend`]: the `netpoll_core::SocketBackend` over a smoltcp [`Host`].
//!
//! Error mapping (smoltcp reports only `InvalidState` / `Finished`; the host's sticky flags say
//! why):
//!
//! | what happened | `try_read` | `try_write` | `finish_connect` |
//! |---|---|---|---|
//! | peer's FIN, data drained | `Ok(0)` | writes still work (CLOSE-WAIT) | – |
//! | RST after ESTABLISHED | `ConnectionReset` (after buffered data) | `ConnectionReset` | – |
//! | RST in SYN-SENT (nobody listens) | `ConnectionRefused` | `ConnectionRefused` | `ConnectionRefused` |
//! | our own `shutdown(Write)` | – | `BrokenPipe` | – |
//! | our own `shutdown(Read)` | `Ok(0)` | – | – |
//!
//! Every operation that queues egress (write, connect, shutdown, close) or opens the receive
//! window (a read that took data) runs a bounded `poll_egress` inline, so the segment leaves
//! before the operation returns, and then wakes the poller after releasing the host lock, so
//! it re-reads smoltcp's timers: a userspace send does not transmit by itself
//! (`docs/userspace-engine.md`, "Nothing waits for a timer").

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use netpoll_core::backend::{ErrorKind, Shutdown, SocketBackend, TryError};
use netpoll_core::{Handle, Key, Readiness};
use smoltcp::phy::Device;
use smoltcp::socket::tcp::{self, ConnectError, RecvError, State};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use crate::clock::dur_to_smol;
use crate::host::{Host, Id, Inner, Listener, Role, Stream};

/// A socket of a [`SmolBackend`]: a stream or a listener. A plain id; the stack closes it
/// exactly once through [`SocketBackend::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmolSocket {
    kind: Kind,
    id: Id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Stream,
    Listener,
}

/// The smoltcp socket backend: what `netpoll_stack::TcpListener` and `TcpStream` run on.
///
/// Cloning is cheap and clones share the host and scheduler.
pub struct SmolBackend<D: Device> {
    host: Host<D>,
    handle: Handle,
}

impl<D: Device> Clone for SmolBackend<D> {
    fn clone(&self) -> Self {
        SmolBackend {
            host: self.host.clone(),
            handle: self.handle.clone(),
        }
    }
}

impl<D: Device> fmt::Debug for SmolBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolBackend")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<D: Device> SmolBackend<D> {
    /// A backend for `host`, whose edges the scheduler behind `handle` receives: that
    /// scheduler must poll a [`SmolSource`](crate::SmolSource) that drives `host`.
    pub fn new(host: Host<D>, handle: Handle) -> Self {
        SmolBackend { host, handle }
    }

    /// The host this backend's sockets live on.
    pub fn host(&self) -> &Host<D> {
        &self.host
    }

    /// Runs `op` under the host lock. If `op` queued egress or opened the window, transmits at
    /// once (bounded egress, still under the lock) and then wakes the poller, which must
    /// recompute its timeout: the segment just sent armed a retransmit timer (nothing waits for a timer).
    ///
    /// Transmitting inline, not only waking the poller, means a segment leaves before the
    /// operation returns even if the scheduler stops right after (a server task that closes
    /// and ends `block_on`): the FIN is on the wire. Retransmissions still need the poller.
    fn with<R>(&self, op: impl FnOnce(&mut Inner<D>) -> R) -> R {
        let (r, kick) = {
            let mut inner = self.host.lock();
            let r = op(&mut inner);
            inner.sync_touched();
            (r, core::mem::take(&mut inner.kick))
        };
        if kick {
            // Queued egress must not wait for an event that may never come. Wake the
            // poller rather than transmit here: its next pass (a blocked poller now, else
            // within the scheduler's bounded poll interval) runs one egress for every socket
            // written meanwhile, where transmitting per write walked all sockets per write.
            // Go: netpollBreak. Outside the host lock: the poller takes it next.
            self.handle.io().notify();
        }
        r
    }
}

/// The socket's stream state and smoltcp socket.
fn stream_parts<D: Device>(
    inner: &mut Inner<D>,
    sock: SmolSocket,
) -> Result<(&mut Stream, &mut tcp::Socket<'static>), ErrorKind> {
    if sock.kind != Kind::Stream {
        return Err(ErrorKind::InvalidInput);
    }
    let s = inner.socks.get_mut(sock.id).ok_or(ErrorKind::Closed)?;
    if !matches!(s.role, Role::Stream(_)) {
        return Err(ErrorKind::Closed);
    }
    inner.touched.push(sock.id.index);
    let (role, sk, _) = s.parts();
    let Role::Stream(st) = role else {
        return Err(ErrorKind::Closed);
    };
    Ok((st, sk))
}

/// The error a failed connection reports to an operation that cannot proceed.
fn conn_error(st: &Stream) -> ErrorKind {
    if st.reset {
        ErrorKind::ConnectionReset
    } else if st.refused {
        ErrorKind::ConnectionRefused
    } else {
        ErrorKind::NotConnected
    }
}

impl<D: Device> Inner<D> {
    fn listen(&mut self, addr: SocketAddr, backlog: u32) -> Result<SmolSocket, ErrorKind> {
        let ip: IpAddress = addr.ip().into();
        if !ip.is_unspecified() && !self.iface.has_ip_addr(ip) {
            return Err(ErrorKind::AddrNotAvailable);
        }
        let port = match addr.port() {
            0 => self.router.ports.pick().ok_or(ErrorKind::OutOfResources)?,
            p if self.router.ports.in_use(p) => return Err(ErrorKind::AddrInUse),
            p => p,
        };
        let endpoint = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(ip),
            port,
        };
        let backlog = backlog.clamp(1, self.config.max_backlog.max(1)) as usize;
        let half_open_timeout = dur_to_smol(self.config.half_open_timeout);
        let lid = self.router.listeners.insert(Listener {
            key: None,
            armed: false,
            endpoint,
            local: SocketAddr::new(addr.ip(), port),
            pool: Vec::with_capacity(backlog),
            ready: VecDeque::new(),
            half_open_timeout,
            handshake_us: Listener::INITIAL_HANDSHAKE_US,
            cursor: 0,
        });
        let mut pool = Vec::with_capacity(backlog);
        for _ in 0..backlog {
            let id = self.add_pool_socket(lid, endpoint, half_open_timeout);
            pool.push(id.index);
        }
        if let Some(l) = self.router.listeners.get_mut(lid) {
            l.pool = pool;
        }
        self.router.ports.listeners.insert(port, lid);
        Ok(SmolSocket {
            kind: Kind::Listener,
            id: lid,
        })
    }

    fn close_listener(&mut self, lid: Id) {
        let Some(l) = self.router.listeners.remove(lid) else {
            return;
        };
        if self.router.ports.listeners.get(&l.endpoint.port) == Some(&lid) {
            self.router.ports.listeners.remove(&l.endpoint.port);
        }
        for index in l.pool {
            let Some(id) = self.socks.id_at(index) else {
                continue;
            };
            let Some(state) = self.socks.get(id).map(|s| s.tcp().state()) else {
                continue;
            };
            match state {
                // Nothing owed to anyone: the port is free as soon as these are gone.
                State::Listen | State::SynReceived | State::Closed => self.remove_socket(id),
                // A connection nobody accepted: reset it, as the kernel does.
                _ => self.orphan(id, true),
            }
        }
        self.kick = true;
    }

    fn try_accept(&mut self, lid: Id) -> Result<(SmolSocket, SocketAddr), TryError> {
        loop {
            let l = self
                .router
                .listeners
                .get_mut(lid)
                .ok_or(ErrorKind::Closed)?;
            let Some(index) = l.ready.pop_front() else {
                l.armed = true;
                return Err(TryError::WouldBlock);
            };
            let (endpoint, half_open_timeout) = (l.endpoint, l.half_open_timeout);
            let Some(id) = self.socks.id_at(index) else {
                continue;
            };
            self.touched.push(index);
            let Some(s) = self.socks.get_mut(id).map(|s| s.tcp_mut()) else {
                continue;
            };
            let (local, peer) = (s.local_endpoint(), s.remote_endpoint());
            let stale = matches!(
                s.state(),
                State::Closed | State::Listen | State::SynReceived
            );
            let (Some(local), Some(peer), false) = (local, peer, stale) else {
                // Reset (or timed out) before we got to it: skip silently (Go #6163).
                if s.state() != State::Listen {
                    s.abort();
                    // Cannot fail: the socket is closed and the port is non-zero.
                    let _ = s.listen(endpoint);
                }
                if let Some(sock) = self.socks.get_mut(id) {
                    sock.role = Role::Pooled {
                        listener: lid,
                        queued: false,
                        half_open_since: None,
                    };
                }
                self.stats.aborted_before_accept += 1;
                continue;
            };
            let mut st = Stream {
                local: Some(local.into()),
                peer: Some(peer.into()),
                ..Stream::default()
            };
            st.observe(s);
            // A user's connection has no timeout of its own (Go: deadlines are per operation).
            s.set_timeout(None);
            if let Some(sock) = self.socks.get_mut(id) {
                sock.role = Role::Stream(st);
            }
            // Refill the pool: a fresh listening socket takes the accepted one's place.
            let fresh = self.add_pool_socket(lid, endpoint, half_open_timeout);
            if let Some(l) = self.router.listeners.get_mut(lid) {
                if let Some(slot) = l.pool.iter_mut().find(|i| **i == index) {
                    *slot = fresh.index;
                }
            }
            self.stats.accepted += 1;
            return Ok((
                SmolSocket {
                    kind: Kind::Stream,
                    id,
                },
                peer.into(),
            ));
        }
    }

    fn start_connect(&mut self, sock: SmolSocket, addr: SocketAddr) -> Result<(), TryError> {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(ErrorKind::InvalidInput.into());
        }
        if self.iface.has_ip_addr(IpAddress::from(addr.ip())) {
            // smoltcp has no loopback path: the SYN would wait forever for an ARP answer from
            // ourselves. Say so at once instead of hanging until a deadline.
            return Err(ErrorKind::Unsupported.into());
        }
        {
            let (st, _) = stream_parts(self, sock)?;
            if st.connecting || st.established {
                return Err(ErrorKind::InvalidInput.into());
            }
        }
        let port = self.router.ports.alloc().ok_or(ErrorKind::OutOfResources)?;
        self.touched.push(sock.id.index);
        let Inner {
            iface,
            socks,
            router,
            kick,
            ..
        } = self;
        let ports = &mut router.ports;
        let Some(s) = socks.get_mut(sock.id) else {
            ports.release(port);
            return Err(ErrorKind::Closed.into());
        };
        let (role, sk, _) = s.parts();
        let Role::Stream(st) = role else {
            ports.release(port);
            return Err(ErrorKind::Closed.into());
        };
        match sk.connect(iface.context(), IpEndpoint::from(addr), port) {
            Ok(()) => {
                st.connecting = true;
                st.port = Some(port);
                st.peer = Some(addr);
                st.local = sk.local_endpoint().map(SocketAddr::from);
                st.armed_write = true;
                // The SYN must leave now (nothing waits for a timer).
                *kick = true;
                Err(TryError::WouldBlock)
            }
            Err(e) => {
                ports.release(port);
                Err(match e {
                    // No source address for this destination: no interface address of its
                    // family, no route.
                    ConnectError::Unaddressable => ErrorKind::NetworkUnreachable,
                    ConnectError::InvalidState => ErrorKind::InvalidInput,
                }
                .into())
            }
        }
    }

    fn finish_connect(&mut self, sock: SmolSocket) -> Result<(), TryError> {
        let (st, s) = stream_parts(self, sock)?;
        st.observe(s);
        if st.established {
            return Ok(());
        }
        match s.state() {
            State::SynSent | State::SynReceived => {
                st.armed_write = true;
                Err(TryError::WouldBlock)
            }
            _ => Err(conn_error(st).into()),
        }
    }

    /// A read that also tells whether it emptied the receive buffer. If it did, the read edge
    /// is armed now, under the host lock that smoltcp's ingress takes too, so whatever comes
    /// next (data, FIN, reset) raises an edge: "drained" is certain.
    fn try_read_drained(
        &mut self,
        sock: SmolSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        let (st, s) = stream_parts(self, sock)?;
        st.observe(s);
        if st.shut_read {
            return Ok((0, false));
        }
        let queued = s.recv_queue();
        let mut kick = false;
        let read = match s.recv_slice(buf) {
            Ok(0) if buf.is_empty() => Ok((0, false)),
            Ok(0) => {
                // ESTABLISHED or FIN-WAIT with an empty buffer.
                st.armed_read = true;
                Err(TryError::WouldBlock)
            }
            Ok(n) => {
                // The window opened. When it had shrunk below half, the peer may be waiting
                // for the update (nothing waits for a timer); smaller openings ride on the next ACK or poll.
                kick = queued >= s.recv_capacity() / 2;
                // Drained only in states where more data can still arrive and so raise an
                // edge: smoltcp keeps data readable after a reset (CLOSED with a non-empty
                // buffer), and after that no edge ever comes.
                let open = matches!(
                    s.state(),
                    State::Established | State::FinWait1 | State::FinWait2
                );
                let drained = open && !st.fin && s.recv_queue() == 0;
                if drained {
                    st.armed_read = true;
                }
                Ok((n, drained))
            }
            Err(RecvError::Finished) => {
                st.fin = true;
                Ok((0, false))
            }
            Err(RecvError::InvalidState) => match s.state() {
                State::SynSent | State::SynReceived => {
                    st.armed_read = true;
                    Err(TryError::WouldBlock)
                }
                _ if st.fin => Ok((0, false)),
                _ => Err(conn_error(st).into()),
            },
        };
        self.kick |= kick;
        read
    }

    fn try_read(&mut self, sock: SmolSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        self.try_read_drained(sock, buf).map(|(n, _)| n)
    }

    fn try_write(&mut self, sock: SmolSocket, buf: &[u8]) -> Result<usize, TryError> {
        let (st, s) = stream_parts(self, sock)?;
        st.observe(s);
        if st.shut_write {
            return Err(ErrorKind::BrokenPipe.into());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match s.send_slice(buf) {
            Ok(0) => {
                // Send buffer full.
                st.armed_write = true;
                Err(TryError::WouldBlock)
            }
            Ok(n) => {
                // The data must leave now (nothing waits for a timer).
                self.kick = true;
                Ok(n)
            }
            Err(_) => match s.state() {
                State::SynSent | State::SynReceived => {
                    st.armed_write = true;
                    Err(TryError::WouldBlock)
                }
                _ if st.reset || st.refused => Err(conn_error(st).into()),
                // Our FIN is out (a close raced this write) or the connection finished.
                _ if st.established => Err(ErrorKind::BrokenPipe.into()),
                _ => Err(ErrorKind::NotConnected.into()),
            },
        }
    }

    fn shutdown(&mut self, sock: SmolSocket, how: Shutdown) -> Result<(), ErrorKind> {
        let (st, s) = stream_parts(self, sock)?;
        st.observe(s);
        if !st.established {
            return Err(if st.reset || st.refused {
                conn_error(st)
            } else {
                ErrorKind::NotConnected
            });
        }
        let edge = match how {
            Shutdown::Read => {
                // smoltcp cannot close the receive half; reads just end here (Linux also
                // returns EOF after SHUT_RD).
                st.shut_read = true;
                Readiness::READABLE
            }
            Shutdown::Write => {
                // FIN after the queued data.
                s.close();
                crate::host::fin_probe(s);
                st.shut_write = true;
                Readiness::WRITABLE
            }
        };
        if let Some(key) = st.key {
            // Wake a task blocked in that direction; it retries and sees the shutdown.
            self.raised.push((key, edge));
        }
        self.kick = true;
        Ok(())
    }

    fn register(&mut self, sock: SmolSocket, key: Key) -> Result<(), ErrorKind> {
        match sock.kind {
            Kind::Stream => {
                let (st, _) = stream_parts(self, sock)?;
                st.key = Some(key);
                // Report what is already readable, as epoll's `EPOLL_CTL_ADD` does
                // (`SocketBackend::edge_on_register`): arm the read edge and have the next
                // poll look at the socket.
                st.armed_read = true;
                st.armed_write = false;
                if let Some(s) = self.socks.get_mut(sock.id) {
                    s.mark_dirty();
                }
            }
            Kind::Listener => {
                let l = self
                    .router
                    .listeners
                    .get_mut(sock.id)
                    .ok_or(ErrorKind::Closed)?;
                l.key = Some(key);
                l.armed = false;
            }
        }
        Ok(())
    }

    fn deregister(&mut self, sock: SmolSocket) {
        match sock.kind {
            Kind::Stream => {
                if let Ok((st, _)) = stream_parts(self, sock) {
                    st.key = None;
                    st.armed_read = false;
                    st.armed_write = false;
                }
            }
            Kind::Listener => {
                if let Some(l) = self.router.listeners.get_mut(sock.id) {
                    l.key = None;
                    l.armed = false;
                }
            }
        }
    }
}

impl<D> SocketBackend for SmolBackend<D>
where
    D: Device + Send + 'static,
{
    type Socket = SmolSocket;

    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<SmolSocket, ErrorKind> {
        self.with(|inner| inner.listen(addr, backlog))
    }

    fn stream(&self, remote: SocketAddr) -> Result<SmolSocket, ErrorKind> {
        // Reachability is decided by `start_connect` (smoltcp picks the source address then).
        let _ = remote;
        self.with(|inner| {
            let id = inner.add_socket(Role::Stream(Stream::default()));
            Ok(SmolSocket {
                kind: Kind::Stream,
                id,
            })
        })
    }

    fn register(&self, socket: &SmolSocket, key: Key) -> Result<(), ErrorKind> {
        self.with(|inner| inner.register(*socket, key))
    }

    /// Registering a stream arms its read edge and queues it for the next poll, which
    /// reports data (or the end) already there.
    fn edge_on_register(&self, socket: &SmolSocket) -> bool {
        socket.kind == Kind::Stream
    }

    fn deregister(&self, socket: &SmolSocket) {
        self.with(|inner| inner.deregister(*socket));
    }

    fn try_accept(&self, listener: &SmolSocket) -> Result<(SmolSocket, SocketAddr), TryError> {
        if listener.kind != Kind::Listener {
            return Err(ErrorKind::InvalidInput.into());
        }
        self.with(|inner| inner.try_accept(listener.id))
    }

    fn start_connect(&self, socket: &SmolSocket, addr: SocketAddr) -> Result<(), TryError> {
        self.with(|inner| inner.start_connect(*socket, addr))
    }

    fn finish_connect(&self, socket: &SmolSocket) -> Result<(), TryError> {
        self.with(|inner| inner.finish_connect(*socket))
    }

    fn try_read(&self, socket: &SmolSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        self.with(|inner| inner.try_read(*socket, buf))
    }

    fn try_read_drained(
        &self,
        socket: &SmolSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        self.with(|inner| inner.try_read_drained(*socket, buf))
    }

    fn try_write(&self, socket: &SmolSocket, buf: &[u8]) -> Result<usize, TryError> {
        self.with(|inner| inner.try_write(*socket, buf))
    }

    fn shutdown(&self, socket: &SmolSocket, how: Shutdown) -> Result<(), ErrorKind> {
        self.with(|inner| inner.shutdown(*socket, how))
    }

    fn local_addr(&self, socket: &SmolSocket) -> Result<SocketAddr, ErrorKind> {
        self.with(|inner| match socket.kind {
            Kind::Listener => inner
                .router
                .listeners
                .get(socket.id)
                .map(|l| l.local)
                .ok_or(ErrorKind::Closed),
            Kind::Stream => {
                let (st, s) = stream_parts(inner, *socket)?;
                st.observe(s);
                st.local.ok_or(ErrorKind::NotConnected)
            }
        })
    }

    fn peer_addr(&self, socket: &SmolSocket) -> Result<SocketAddr, ErrorKind> {
        self.with(|inner| {
            let (st, s) = stream_parts(inner, *socket)?;
            st.observe(s);
            match st.peer {
                Some(p) if st.established => Ok(p),
                _ => Err(ErrorKind::NotConnected),
            }
        })
    }

    fn set_nodelay(&self, socket: &SmolSocket, nodelay: bool) -> Result<(), ErrorKind> {
        self.with(|inner| {
            let (_, s) = stream_parts(inner, *socket)?;
            s.set_nagle_enabled(!nodelay);
            Ok(())
        })
    }

    fn nodelay(&self, socket: &SmolSocket) -> Result<bool, ErrorKind> {
        self.with(|inner| {
            let (_, s) = stream_parts(inner, *socket)?;
            Ok(!s.nagle_enabled())
        })
    }

    fn close(&self, socket: &SmolSocket, abort: bool) {
        self.with(|inner| match socket.kind {
            Kind::Listener => inner.close_listener(socket.id),
            Kind::Stream => inner.orphan(socket.id, abort),
        });
    }
}
