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
//! Every operation that queues egress (write, connect, shutdown, close) or drains a receive
//! buffer at least half full (the window reopens) wakes the poller after releasing the host
//! lock; the poller's next pass transmits and re-reads smoltcp's timers: a userspace send does
//! not transmit by itself (`docs/userspace-engine.md`, "Nothing waits for a timer"). So a
//! segment leaves only while a scheduler polls the host (see the crate docs' caution about
//! `close`).

use core::fmt;
use core::net::SocketAddr;

use alloc::vec::Vec;
use netpoll_core::backend::{DatagramBackend, ErrorKind, Shutdown, SocketBackend, TryError};
use netpoll_core::{Handle, Key};
use smoltcp::phy::Device;
use smoltcp::socket::dns::QueryHandle;
use smoltcp::wire::{DnsQueryType, IpAddress};

use crate::host::{Done, Host, Id, ResolveError};

/// A socket of a [`SmolBackend`]: a stream, a listener or a UDP socket. A plain id; the stack closes it
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
    Datagram,
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

    /// An operation's value, after waking the poller if the operation asked for it: queued
    /// egress must not wait for an event that may never come (Go: `netpollBreak`). Waking
    /// rather than transmitting here lets the poller's next pass (a blocked poller now, else
    /// within the scheduler's bounded poll interval) run one egress for every socket written
    /// meanwhile. The host lock is already released: the poller takes it next.
    fn finish<R>(&self, done: Done<R>) -> R {
        if done.wake_poller {
            self.handle.io().notify();
        }
        done.value
    }

    /// The IPv4 addresses of host `name`, asked of the servers in
    /// [`Config::dns_servers`](crate::Config::dns_servers) by the host's smoltcp DNS socket.
    ///
    /// Fails with [`ResolveError::NoDnsServer`] when no server is configured and with
    /// [`ResolveError::NoAnswer`] once smoltcp gives up (10 to 15 s per server without a
    /// reply, or an error reply). The query is sent and retransmitted by the poller, so a
    /// scheduler must be polling the host, as for any socket. Dropping the future abandons
    /// the query.
    ///
    /// ```
    /// use netpoll_drivers::smoltcp::wire::IpAddress;
    /// use netpoll_drivers::{Config, ResolveError, WireNet, WIRE_ADDR_B};
    ///
    /// // `Config::dns_servers` is empty by default: resolution is off.
    /// let mut net = WireNet::new();
    /// let a = net.a.clone();
    /// let found = net.scheduler.block_on(async move { a.resolve("example.test").await });
    /// assert_eq!(found, Err(ResolveError::NoDnsServer));
    ///
    /// // Ask host B, where no DNS server runs: smoltcp retransmits, then gives up (in the
    /// // wire's simulated time, so at once here).
    /// let mut net = WireNet::builder()
    ///     .configure(|c: &mut Config| c.dns_servers = vec![IpAddress::from(WIRE_ADDR_B)])
    ///     .build()?;
    /// let a = net.a.clone();
    /// let found = net.scheduler.block_on(async move { a.resolve("example.test").await });
    /// assert_eq!(found, Err(ResolveError::NoAnswer));
    /// # Ok::<(), netpoll_drivers::DriverError>(())
    /// ```
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddress>, ResolveError> {
        self.resolve_records(name, DnsQueryType::A).await
    }

    /// The addresses of host `name` from records of type `kind` (`A` for IPv4, `Aaaa` for
    /// IPv6); otherwise as [`resolve`](Self::resolve).
    pub async fn resolve_records(
        &self,
        name: &str,
        kind: DnsQueryType,
    ) -> Result<Vec<IpAddress>, ResolveError> {
        let query = self.finish(self.host.start_query(name, kind))?;
        let mut pending = PendingQuery {
            backend: self,
            query: Some(query),
        };
        core::future::poll_fn(|cx| {
            let result = self.finish(self.host.poll_query(query, cx.waker()));
            if result.is_ready() {
                pending.query = None;
            }
            result
        })
        .await
    }

    /// `socket`'s id if it is a stream.
    fn stream_id(socket: &SmolSocket) -> Result<Id, ErrorKind> {
        match socket.kind {
            Kind::Stream => Ok(socket.id),
            Kind::Listener | Kind::Datagram => Err(ErrorKind::InvalidInput),
        }
    }

    /// `socket`'s id if it is a UDP socket.
    fn datagram_id(socket: &SmolSocket) -> Result<Id, ErrorKind> {
        match socket.kind {
            Kind::Datagram => Ok(socket.id),
            Kind::Stream | Kind::Listener => Err(ErrorKind::InvalidInput),
        }
    }
}

/// A query the resolving future still waits for: cancelled if the future is dropped.
struct PendingQuery<'a, D: Device> {
    backend: &'a SmolBackend<D>,
    query: Option<QueryHandle>,
}

impl<D: Device> Drop for PendingQuery<'_, D> {
    fn drop(&mut self) {
        if let Some(query) = self.query.take() {
            self.backend.finish(self.backend.host.cancel_query(query));
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
        let id = self.finish(self.host.listen(addr, backlog))?;
        Ok(SmolSocket {
            kind: Kind::Listener,
            id,
        })
    }

    fn stream(&self, remote: SocketAddr) -> Result<SmolSocket, ErrorKind> {
        // Reachability is decided by `start_connect` (smoltcp picks the source address then).
        let _ = remote;
        let id = self.finish(self.host.open_stream());
        Ok(SmolSocket {
            kind: Kind::Stream,
            id,
        })
    }

    fn register(&self, socket: &SmolSocket, key: Key) -> Result<(), ErrorKind> {
        self.finish(match socket.kind {
            Kind::Stream => self.host.register_stream(socket.id, key),
            Kind::Listener => self.host.register_listener(socket.id, key),
            Kind::Datagram => self.host.register_datagram(socket.id, key),
        })
    }

    /// Registering a stream arms its read edge and queues it for the next poll, which
    /// reports data (or the end) already there.
    fn edge_on_register(&self, socket: &SmolSocket) -> bool {
        socket.kind == Kind::Stream
    }

    fn deregister(&self, socket: &SmolSocket) {
        self.finish(match socket.kind {
            Kind::Stream => self.host.deregister_stream(socket.id),
            Kind::Listener => self.host.deregister_listener(socket.id),
            Kind::Datagram => self.host.deregister_datagram(socket.id),
        })
    }

    fn try_accept(&self, listener: &SmolSocket) -> Result<(SmolSocket, SocketAddr), TryError> {
        if listener.kind != Kind::Listener {
            return Err(ErrorKind::InvalidInput.into());
        }
        let (id, peer) = self.finish(self.host.try_accept(listener.id))?;
        Ok((
            SmolSocket {
                kind: Kind::Stream,
                id,
            },
            peer,
        ))
    }

    fn start_connect(&self, socket: &SmolSocket, addr: SocketAddr) -> Result<(), TryError> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.start_connect(id, addr))
    }

    fn finish_connect(&self, socket: &SmolSocket) -> Result<(), TryError> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.finish_connect(id))
    }

    fn try_read(&self, socket: &SmolSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        self.try_read_drained(socket, buf).map(|(n, _)| n)
    }

    fn try_read_drained(
        &self,
        socket: &SmolSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.try_read_drained(id, buf))
    }

    fn try_write(&self, socket: &SmolSocket, buf: &[u8]) -> Result<usize, TryError> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.try_write(id, buf))
    }

    fn shutdown(&self, socket: &SmolSocket, how: Shutdown) -> Result<(), ErrorKind> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.shutdown(id, how))
    }

    fn local_addr(&self, socket: &SmolSocket) -> Result<SocketAddr, ErrorKind> {
        self.finish(match socket.kind {
            Kind::Listener => self.host.listener_addr(socket.id),
            Kind::Stream => self.host.local_addr(socket.id),
            Kind::Datagram => self.host.datagram_local_addr(socket.id),
        })
    }

    fn peer_addr(&self, socket: &SmolSocket) -> Result<SocketAddr, ErrorKind> {
        if socket.kind == Kind::Datagram {
            return self.finish(self.host.datagram_peer_addr(socket.id));
        }
        let id = Self::stream_id(socket)?;
        self.finish(self.host.peer_addr(id))
    }

    fn set_nodelay(&self, socket: &SmolSocket, nodelay: bool) -> Result<(), ErrorKind> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.set_nodelay(id, nodelay))
    }

    fn nodelay(&self, socket: &SmolSocket) -> Result<bool, ErrorKind> {
        let id = Self::stream_id(socket)?;
        self.finish(self.host.nodelay(id))
    }

    fn close(&self, socket: &SmolSocket, abort: bool) {
        self.finish(match socket.kind {
            Kind::Listener => self.host.close_listener(socket.id),
            Kind::Stream => self.host.close_stream(socket.id, abort),
            Kind::Datagram => self.host.close_datagram(socket.id),
        })
    }
}

/// UDP over smoltcp's `socket-udp` (`host/udp.rs`): bounded rings from the `udp_*` fields of
/// [`Config`](crate::Config), a datagram longer than the read buffer reported with its whole
/// length, no IP fragmentation (a datagram must fit the MTU).
impl<D> DatagramBackend for SmolBackend<D>
where
    D: Device + Send + 'static,
{
    fn bind_datagram(&self, addr: SocketAddr) -> Result<SmolSocket, ErrorKind> {
        let id = self.finish(self.host.bind_datagram(addr))?;
        Ok(SmolSocket {
            kind: Kind::Datagram,
            id,
        })
    }

    fn connect_datagram(&self, socket: &SmolSocket, addr: SocketAddr) -> Result<(), ErrorKind> {
        let id = Self::datagram_id(socket)?;
        self.finish(self.host.connect_datagram(id, addr))
    }

    fn try_recv_from(
        &self,
        socket: &SmolSocket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError> {
        let id = Self::datagram_id(socket)?;
        self.finish(self.host.try_recv_from(id, buf))
    }

    fn try_send_to(
        &self,
        socket: &SmolSocket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        let id = Self::datagram_id(socket)?;
        self.finish(self.host.try_send_to(id, buf, to))
    }
}
