//! The socket operations [`SmolBackend`](crate::SmolBackend) calls: listen, accept, connect,
//! read, write, shutdown, (de)registration, addresses, close. Each [`Host`] method takes the
//! host lock once, runs the operation, re-files the sockets it touched, and says in its
//! [`Done`] whether the caller must wake the poller.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::SocketAddr;

use netpoll_core::backend::{ErrorKind, Shutdown, TryError};
use netpoll_core::{Key, Readiness};
use smoltcp::phy::Device;
use smoltcp::socket::tcp::{self, ConnectError, RecvError, State};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::stream::fin_probe;
use super::{Host, Id, Inner, Listener, Role, Stream};
use crate::clock::dur_to_smol;

/// What a socket operation returned, and whether it queued egress (write, connect, shutdown,
/// close) or drained a receive buffer at least half full (the window
/// reopens): then the caller wakes the
/// poller, whose next pass transmits and re-reads smoltcp's timers (a userspace send does not
/// transmit by itself; `docs/userspace-engine.md`, "Nothing waits for a timer"). The host lock
/// is already released, so the poller can take it at once.
#[must_use]
pub(crate) struct Done<R> {
    pub(crate) value: R,
    pub(crate) wake_poller: bool,
}

impl<D: Device> Host<D> {
    /// Runs `op` under the host lock, then re-files every socket it touched.
    fn op<R>(&self, op: impl FnOnce(&mut Inner<D>) -> R) -> Done<R> {
        let mut inner = self.inner.lock();
        let value = op(&mut inner);
        inner.sync_touched();
        Done {
            value,
            wake_poller: core::mem::take(&mut inner.kick),
        }
    }

    /// A listener on `addr` (port 0: an ephemeral one) whose accept pool holds `backlog`
    /// sockets, clamped to `1..=Config::max_backlog`.
    pub(crate) fn listen(&self, addr: SocketAddr, backlog: u32) -> Done<Result<Id, ErrorKind>> {
        self.op(|inner| inner.listen(addr, backlog))
    }

    /// A fresh, unconnected stream socket.
    pub(crate) fn open_stream(&self) -> Done<Id> {
        self.op(|inner| inner.add_socket(Role::Stream(Stream::default())))
    }

    /// Files `key` for stream `id`'s edges and queues the socket for the next poll, which
    /// reports what is already readable.
    pub(crate) fn register_stream(&self, id: Id, key: Key) -> Done<Result<(), ErrorKind>> {
        self.op(|inner| inner.register_stream(id, key))
    }

    /// Files `key` for listener `lid`'s accept edges.
    pub(crate) fn register_listener(&self, lid: Id, key: Key) -> Done<Result<(), ErrorKind>> {
        self.op(|inner| inner.register_listener(lid, key))
    }

    /// Stream `id` reports no more edges.
    pub(crate) fn deregister_stream(&self, id: Id) -> Done<()> {
        self.op(|inner| inner.deregister_stream(id))
    }

    /// Listener `lid` reports no more edges.
    pub(crate) fn deregister_listener(&self, lid: Id) -> Done<()> {
        self.op(|inner| inner.deregister_listener(lid))
    }

    /// The oldest established connection of listener `lid`'s pool, and its peer; a fresh
    /// listening socket takes its place in the pool.
    pub(crate) fn try_accept(&self, lid: Id) -> Done<Result<(Id, SocketAddr), TryError>> {
        self.op(|inner| inner.try_accept(lid))
    }

    /// Sends stream `id`'s SYN to `addr` from an ephemeral port.
    pub(crate) fn start_connect(&self, id: Id, addr: SocketAddr) -> Done<Result<(), TryError>> {
        self.op(|inner| inner.start_connect(id, addr))
    }

    /// Whether stream `id`'s connect completed, failed, or is still in progress.
    pub(crate) fn finish_connect(&self, id: Id) -> Done<Result<(), TryError>> {
        self.op(|inner| inner.finish_connect(id))
    }

    /// Reads from stream `id` into `buf`; also tells whether the read emptied the receive
    /// buffer (see `Inner::try_read_drained`).
    pub(crate) fn try_read_drained(
        &self,
        id: Id,
        buf: &mut [u8],
    ) -> Done<Result<(usize, bool), TryError>> {
        self.op(|inner| inner.try_read_drained(id, buf))
    }

    /// Queues as much of `buf` as stream `id`'s send buffer takes.
    pub(crate) fn try_write(&self, id: Id, buf: &[u8]) -> Done<Result<usize, TryError>> {
        self.op(|inner| inner.try_write(id, buf))
    }

    /// Ends stream `id`'s reads or writes (a FIN after the queued data).
    pub(crate) fn shutdown(&self, id: Id, how: Shutdown) -> Done<Result<(), ErrorKind>> {
        self.op(|inner| inner.shutdown(id, how))
    }

    /// The address listener `lid` is bound to.
    pub(crate) fn listener_addr(&self, lid: Id) -> Done<Result<SocketAddr, ErrorKind>> {
        self.op(|inner| {
            inner
                .router
                .listeners
                .get(lid)
                .map(|l| l.local)
                .ok_or(ErrorKind::Closed)
        })
    }

    /// Stream `id`'s local address, once it has one.
    pub(crate) fn local_addr(&self, id: Id) -> Done<Result<SocketAddr, ErrorKind>> {
        self.op(|inner| {
            let (st, s) = stream_parts(inner, id)?;
            st.observe(s);
            st.local.ok_or(ErrorKind::NotConnected)
        })
    }

    /// Stream `id`'s peer, once the connection is established.
    pub(crate) fn peer_addr(&self, id: Id) -> Done<Result<SocketAddr, ErrorKind>> {
        self.op(|inner| {
            let (st, s) = stream_parts(inner, id)?;
            st.observe(s);
            match st.peer {
                Some(p) if st.established => Ok(p),
                _ => Err(ErrorKind::NotConnected),
            }
        })
    }

    /// Turns Nagle's algorithm on stream `id` off (`nodelay`) or on.
    pub(crate) fn set_nodelay(&self, id: Id, nodelay: bool) -> Done<Result<(), ErrorKind>> {
        self.op(|inner| {
            let (_, s) = stream_parts(inner, id)?;
            s.set_nagle_enabled(!nodelay);
            Ok(())
        })
    }

    /// Whether Nagle's algorithm is off on stream `id`.
    pub(crate) fn nodelay(&self, id: Id) -> Done<Result<bool, ErrorKind>> {
        self.op(|inner| {
            let (_, s) = stream_parts(inner, id)?;
            Ok(!s.nagle_enabled())
        })
    }

    /// Closes listener `lid`: frees its port, resets the connections nobody accepted.
    pub(crate) fn close_listener(&self, lid: Id) -> Done<()> {
        self.op(|inner| inner.close_listener(lid))
    }

    /// Hands stream `id` over to finish its close on its own (`abort`: with an RST).
    pub(crate) fn close_stream(&self, id: Id, abort: bool) -> Done<()> {
        self.op(|inner| inner.orphan(id, abort))
    }
}

/// The socket's stream state and smoltcp socket.
fn stream_parts<D: Device>(
    inner: &mut Inner<D>,
    id: Id,
) -> Result<(&mut Stream, &mut tcp::Socket<'static>), ErrorKind> {
    let s = inner.socks.get_mut(id).ok_or(ErrorKind::Closed)?;
    if !matches!(s.role, Role::Stream(_)) {
        return Err(ErrorKind::Closed);
    }
    inner.touched.push(id.index);
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
    fn listen(&mut self, addr: SocketAddr, backlog: u32) -> Result<Id, ErrorKind> {
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
            pressure: Default::default(),
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
        log::debug!(
            "listen {} (accept pool of {backlog})",
            SocketAddr::new(addr.ip(), port)
        );
        Ok(lid)
    }

    fn close_listener(&mut self, lid: Id) {
        let Some(l) = self.router.listeners.remove(lid) else {
            return;
        };
        log::debug!("close listener {}", l.local);
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

    fn try_accept(&mut self, lid: Id) -> Result<(Id, SocketAddr), TryError> {
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
            log::debug!("accept {}", st.tuple());
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
            return Ok((id, peer.into()));
        }
    }

    fn start_connect(&mut self, id: Id, addr: SocketAddr) -> Result<(), TryError> {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(ErrorKind::InvalidInput.into());
        }
        if self.iface.has_ip_addr(IpAddress::from(addr.ip())) {
            // smoltcp has no loopback path: the SYN would wait forever for an ARP answer from
            // ourselves. Say so at once instead of hanging until a deadline.
            return Err(ErrorKind::Unsupported.into());
        }
        {
            let (st, _) = stream_parts(self, id)?;
            if st.connecting || st.established {
                return Err(ErrorKind::InvalidInput.into());
            }
        }
        let port = self.router.ports.alloc().ok_or(ErrorKind::OutOfResources)?;
        self.touched.push(id.index);
        let Inner {
            iface,
            socks,
            router,
            kick,
            ..
        } = self;
        let ports = &mut router.ports;
        let Some(s) = socks.get_mut(id) else {
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
                log::debug!("connect {}", st.tuple());
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

    fn finish_connect(&mut self, id: Id) -> Result<(), TryError> {
        let (st, s) = stream_parts(self, id)?;
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
    fn try_read_drained(&mut self, id: Id, buf: &mut [u8]) -> Result<(usize, bool), TryError> {
        let (st, s) = stream_parts(self, id)?;
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

    fn try_write(&mut self, id: Id, buf: &[u8]) -> Result<usize, TryError> {
        let (st, s) = stream_parts(self, id)?;
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

    fn shutdown(&mut self, id: Id, how: Shutdown) -> Result<(), ErrorKind> {
        let (st, s) = stream_parts(self, id)?;
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
                fin_probe(s);
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

    fn register_stream(&mut self, id: Id, key: Key) -> Result<(), ErrorKind> {
        let (st, _) = stream_parts(self, id)?;
        st.key = Some(key);
        // Report what is already readable, as epoll's `EPOLL_CTL_ADD` does
        // (`SocketBackend::edge_on_register`): arm the read edge and have the next
        // poll look at the socket.
        st.armed_read = true;
        st.armed_write = false;
        if let Some(s) = self.socks.get_mut(id) {
            s.mark_dirty();
        }
        Ok(())
    }

    fn register_listener(&mut self, lid: Id, key: Key) -> Result<(), ErrorKind> {
        let l = self
            .router
            .listeners
            .get_mut(lid)
            .ok_or(ErrorKind::Closed)?;
        l.key = Some(key);
        l.armed = false;
        Ok(())
    }

    fn deregister_stream(&mut self, id: Id) {
        if let Ok((st, _)) = stream_parts(self, id) {
            st.key = None;
            st.armed_read = false;
            st.armed_write = false;
        }
    }

    fn deregister_listener(&mut self, lid: Id) {
        if let Some(l) = self.router.listeners.get_mut(lid) {
            l.key = None;
            l.armed = false;
        }
    }
}
