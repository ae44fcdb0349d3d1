//! UDP sockets with Go's semantics (Go: `net.UDPConn` over `internal/poll.FD`), written once
//! for every [`DatagramBackend`].
//!
//! The loops are TCP's (`crate::tcp`): take the direction's lock (Go's fdMutex), `prepare` the
//! pollDesc (closed or expired fails before any I/O), try the backend, and on `WouldBlock`
//! wait on the pollDesc and retry. Read and write deadlines, close-while-blocked and the error
//! shapes are therefore the same as a stream's. What differs is in `docs/semantics.md#udp`:
//! a datagram is sent whole or not at all, and a datagram longer than the read buffer is
//! reported ([`ErrorKind::MessageTruncated`]) instead of cut silently.

use alloc::sync::Arc;
use core::fmt;
use core::net::SocketAddr;
use netpoll_core::sync::{AtomicBool, Ordering};

use netpoll_core::sched::ReadinessWait;
use netpoll_core::{Direction, Handle, Instant, PollError};

use crate::error::{Error, ErrorKind, Op, TryError};
use crate::fd::Fd;
use crate::tcp::COOP_BUDGET;
use netpoll_core::backend::DatagramBackend;

/// A UDP socket. Go: `net.UDPConn`.
///
/// All methods take `&self`: one task may read while another writes, and concurrent reads (or
/// writes) queue behind each other (Go's fdMutex). Clones share the socket; `close` from any
/// clone wakes every blocked operation with a closed error.
///
/// ```
/// use netpoll_stack::{DatagramBackend, Error, ErrorKind, UdpSocket};
///
/// /// A UDP echo server on any backend: kernel sockets or smoltcp.
/// async fn serve<B: DatagramBackend>(backend: &B) -> Result<(), Error> {
///     let socket = UdpSocket::bind(backend, "127.0.0.1:9009".parse().unwrap())?;
///     let mut buf = [0u8; 1500];
///     loop {
///         match socket.read_from(&mut buf).await {
///             Ok((n, from)) => {
///                 socket.write_to(&buf[..n], from).await?;
///             }
///             // Longer than `buf`: its start is in `buf`, the rest is gone. Skip it.
///             Err(e) if e.kind() == ErrorKind::MessageTruncated => continue,
///             Err(e) => return Err(e),
///         }
///     }
/// }
/// ```
pub struct UdpSocket<B: DatagramBackend> {
    fd: Arc<Fd<B>>,
    /// Set once by `connect`: `write` needs it, `write_to` refuses it (as Go). Shared by clones.
    connected: Arc<AtomicBool>,
}

impl<B: DatagramBackend> Clone for UdpSocket<B> {
    fn clone(&self) -> Self {
        UdpSocket {
            fd: self.fd.clone(),
            connected: self.connected.clone(),
        }
    }
}

impl<B: DatagramBackend> fmt::Debug for UdpSocket<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("key", &self.fd.pd.key())
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

/// Counts one operation against the cooperative budget ([`COOP_BUDGET`]); true when the task
/// should yield once. A datagram flood must not keep a reader from ever yielding.
fn budget_spent<B: DatagramBackend>(fd: &Fd<B>, dir: Direction) -> bool {
    // Relaxed load + store: a scheduling hint (as in `crate::tcp`).
    let streak = &fd.streak[dir as usize];
    let n = streak.load(Ordering::Relaxed) + 1;
    let spent = u32::from(n) >= COOP_BUDGET;
    streak.store(if spent { 0 } else { n }, Ordering::Relaxed);
    spent
}

/// The pollDesc wait after `WouldBlock`; the task gives up its worker, so its budget restarts.
fn wait<B: DatagramBackend>(fd: &Fd<B>, dir: Direction) -> ReadinessWait<'_> {
    fd.streak[dir as usize].store(0, Ordering::Relaxed);
    fd.backend.handle().io().wait(&fd.pd, dir)
}

fn wait_error(op: Op) -> impl Fn(PollError) -> Error {
    move |e| udp_error(op, e.into())
}

/// An error of `op` on a UDP socket (its message says `udp`).
fn udp_error(op: Op, kind: ErrorKind) -> Error {
    Error::new(op, kind).on_udp()
}

impl<B: DatagramBackend> UdpSocket<B> {
    /// Binds a UDP socket to `addr` (port 0 picks a free port). Go: `net.ListenUDP`.
    pub fn bind(backend: &B, addr: SocketAddr) -> Result<Self, Error> {
        let err = |k| udp_error(Op::Listen, k);
        let socket = backend.bind_datagram(addr).map_err(err)?;
        let fd = Fd::new(backend, socket).map_err(err)?;
        Ok(UdpSocket {
            fd,
            connected: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Sets the default peer: [`read`](Self::read) then receives only its datagrams and
    /// [`write`](Self::write) sends to it; [`write_to`](Self::write_to) fails with
    /// [`ErrorKind::AlreadyConnected`] afterwards (Go: `ErrWriteToConnected`). May be called
    /// again to change the peer. Go: the `connect` of `net.DialUDP`.
    pub fn connect(&self, addr: SocketAddr) -> Result<(), Error> {
        let err = |k| udp_error(Op::Connect, k);
        let _ref = self.fd.incref().map_err(err)?;
        self.fd
            .backend
            .connect_datagram(&self.fd.socket, addr)
            .map_err(err)?;
        // Release: pairs with the Acquire loads in `write` and `write_to`.
        self.connected.store(true, Ordering::Release);
        Ok(())
    }

    /// Receives one datagram, waiting until one arrives; returns its length and sender.
    /// Go: `UDPConn.ReadFrom`.
    ///
    /// A datagram longer than `buf` fails with [`ErrorKind::MessageTruncated`]: `buf` holds its first `buf.len()` bytes
    /// ([`Error::transferred`]), the rest is discarded, and the next read gets the next
    /// datagram. Go returns the cut length with no error instead.
    pub async fn read_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Error> {
        let err = |k| udp_error(Op::Read, k);
        let fd = &*self.fd;
        if budget_spent(fd, Direction::Read) {
            netpoll_core::yield_now().await;
        }
        let _lock = fd.lock(Direction::Read).await.map_err(err)?;
        fd.pd
            .prepare(Direction::Read)
            .map_err(wait_error(Op::Read))?;
        loop {
            match fd.backend.try_recv_from(&fd.socket, buf) {
                Ok((len, _)) if len > buf.len() => {
                    return Err(err(ErrorKind::MessageTruncated).with_transferred(buf.len()));
                }
                Ok((len, from)) => return Ok((len, from)),
                Err(TryError::WouldBlock) => wait(fd, Direction::Read)
                    .await
                    .map_err(wait_error(Op::Read))?,
                Err(TryError::Failed(k)) => return Err(err(k)),
            }
        }
    }

    /// Receives one datagram from the connected peer (or from anyone, if not connected);
    /// as [`read_from`](Self::read_from) without the sender. Go: `UDPConn.Read`.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.read_from(buf).await.map(|(n, _)| n)
    }

    /// Sends `buf` as one datagram to `addr`, waiting for room in the send buffer. Returns
    /// `buf.len()`: a datagram is never sent in part. Go: `UDPConn.WriteTo`.
    pub async fn write_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize, Error> {
        // Acquire: pairs with the Release store in `connect`.
        if self.connected.load(Ordering::Acquire) {
            return Err(udp_error(Op::Write, ErrorKind::AlreadyConnected));
        }
        self.send(buf, Some(addr)).await
    }

    /// Sends `buf` as one datagram to the connected peer; [`ErrorKind::NotConnected`] before
    /// [`connect`](Self::connect). Go: `UDPConn.Write`.
    pub async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        // Acquire: pairs with the Release store in `connect`.
        if !self.connected.load(Ordering::Acquire) {
            return Err(udp_error(Op::Write, ErrorKind::NotConnected));
        }
        self.send(buf, None).await
    }

    async fn send(&self, buf: &[u8], to: Option<SocketAddr>) -> Result<usize, Error> {
        let err = |k| udp_error(Op::Write, k);
        let fd = &*self.fd;
        if budget_spent(fd, Direction::Write) {
            netpoll_core::yield_now().await;
        }
        let _lock = fd.lock(Direction::Write).await.map_err(err)?;
        fd.pd
            .prepare(Direction::Write)
            .map_err(wait_error(Op::Write))?;
        loop {
            match fd.backend.try_send_to(&fd.socket, buf, to) {
                Ok(n) => return Ok(n),
                Err(TryError::WouldBlock) => wait(fd, Direction::Write)
                    .await
                    .map_err(wait_error(Op::Write))?,
                Err(TryError::Failed(k)) => return Err(err(k)),
            }
        }
    }

    /// The bound address (with the real port if bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        let _ref = self.fd.incref().map_err(|k| udp_error(Op::Get, k))?;
        self.fd
            .backend
            .local_addr(&self.fd.socket)
            .map_err(|k| udp_error(Op::Get, k))
    }

    /// The connected peer; [`ErrorKind::NotConnected`] before [`connect`](Self::connect).
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        let _ref = self.fd.incref().map_err(|k| udp_error(Op::Get, k))?;
        self.fd
            .backend
            .peer_addr(&self.fd.socket)
            .map_err(|k| udp_error(Op::Get, k))
    }

    fn set_deadlines(&self, dirs: &[Direction], deadline: Option<Instant>) -> Result<(), Error> {
        // Go: `incref` first, so a closed socket reports closed.
        let _ref = self.fd.incref().map_err(|k| udp_error(Op::Set, k))?;
        self.fd
            .backend
            .handle()
            .io()
            .set_deadline(&self.fd.pd, dirs, deadline);
        Ok(())
    }

    /// Sets the deadline of reads (`None`: none). A read blocked now fails with a timeout
    /// when it passes; a past deadline fails reads at once. Go: `SetReadDeadline`.
    pub fn set_read_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        self.set_deadlines(&[Direction::Read], deadline)
    }

    /// Sets the deadline of writes (`None`: none). Go: `SetWriteDeadline`.
    pub fn set_write_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        self.set_deadlines(&[Direction::Write], deadline)
    }

    /// Sets both deadlines. Go: `SetDeadline`.
    pub fn set_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        self.set_deadlines(&Direction::BOTH, deadline)
    }

    /// Closes the socket: every blocked or later operation fails with a closed error, and the
    /// port is free again when this returns. A second close fails with a closed error.
    pub async fn close(&self) -> Result<(), Error> {
        self.fd
            .close(false)
            .await
            .map_err(|k| udp_error(Op::Close, k))
    }

    /// The scheduler this socket is polled by.
    pub fn handle(&self) -> &Handle {
        self.fd.backend.handle()
    }
}
