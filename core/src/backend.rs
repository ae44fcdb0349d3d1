//! The socket-backend contract: what `netpoll-hosted` (kernel sockets) and `netpoll-drivers`
//! (smoltcp) implement so that the loops of `netpoll-stack` (Go's `internal/poll`) run
//! unchanged on both. It lives in the core so that backends depend on the core only
//! (`stack → core ← hosted, drivers`).
//!
//! A backend owns sockets and does non-blocking I/O on them; it never waits. Waiting is the
//! core's job: the stack registers each socket under its pollDesc's [`Key`], and the backend's
//! readiness source reports edges for that key. Every method is a non-blocking attempt that
//! returns [`TryError::WouldBlock`] when it cannot make progress now; after such a result the
//! backend must report an edge for the key when progress becomes possible (the
//! edge-triggered contract in `netpoll_core::source`).
//!
//! # Sockets and their lifetime
//!
//! The stack creates a socket, [`SocketBackend::register`]s it, uses it, and finally calls
//! [`SocketBackend::deregister`] and then [`SocketBackend::close`] exactly once, after every
//! operation on it returned (Go: `pd.close()` before `CloseFunc(Sysfd)`). A socket's `Drop`
//! must not release the OS resource a second time.

use core::net::SocketAddr;

use core::fmt;

use crate::poll_desc::PollError;
use crate::sched::Handle;
use crate::source::Key;

/// Which half of a connection to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// No more reads (Go: `CloseRead`).
    Read,
    /// No more writes; the peer reads EOF (Go: `CloseWrite`).
    Write,
}

/// A provider of non-blocking TCP sockets, plus the scheduler they are polled by.
///
/// Cloning must be cheap (an `Arc`); clones share the same sockets and scheduler.
pub trait SocketBackend: Clone + Send + Sync + 'static {
    /// One socket: a listener or a stream.
    type Socket: Send + Sync + 'static;

    /// The scheduler whose pollDescs this backend's readiness source feeds.
    fn handle(&self) -> &Handle;

    /// Creates a socket bound to `addr`, listening with an accept queue of `backlog`
    /// connections. Port 0 picks a free port.
    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<Self::Socket, ErrorKind>;

    /// Creates an unconnected stream socket able to reach `remote`.
    fn stream(&self, remote: SocketAddr) -> Result<Self::Socket, ErrorKind>;

    /// Arms edge-triggered readiness for `socket` under `key` (Go: `netpollopen`).
    fn register(&self, socket: &Self::Socket, key: Key) -> Result<(), ErrorKind>;

    /// Stops readiness reports for `socket` (Go: `netpollclose`). Stale events may still
    /// arrive; the key's generation makes them harmless.
    fn deregister(&self, socket: &Self::Socket);

    /// Takes one established connection off the accept queue, unregistered.
    ///
    /// A connection reset while queued may be reported as
    /// `Failed(ErrorKind::ConnectionAborted)`; the stack then tries the next one.
    fn try_accept(&self, listener: &Self::Socket) -> Result<(Self::Socket, SocketAddr), TryError>;

    /// Starts connecting to `addr`. `WouldBlock`: in progress; a write edge follows when it
    /// finishes either way.
    fn start_connect(&self, socket: &Self::Socket, addr: SocketAddr) -> Result<(), TryError>;

    /// Whether a started connect finished: `Ok` connected, `WouldBlock` still in progress (the
    /// wake-up was spurious), `Failed` refused or unreachable.
    fn finish_connect(&self, socket: &Self::Socket) -> Result<(), TryError>;

    /// Reads into `buf` (non-empty). `Ok(0)` is end of stream.
    fn try_read(&self, socket: &Self::Socket, buf: &mut [u8]) -> Result<usize, TryError>;

    /// As [`SocketBackend::try_read`], and also whether this read proved the receive queue
    /// empty ("drained"). After a drained read the stack waits for the next readiness edge
    /// before reading again, saving a read that could only say `WouldBlock` (the edge-triggered
    /// contract guarantees that edge). `true` must be certain; `false` is always safe, and is
    /// what the default says.
    fn try_read_drained(
        &self,
        socket: &Self::Socket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        self.try_read(socket, buf).map(|n| (n, false))
    }

    /// Whether registering `socket` ([`SocketBackend::register`]) reports data already queued
    /// on it as a readiness edge, as epoll's `EPOLL_CTL_ADD` of an edge-triggered descriptor
    /// does. The stack then treats a new socket as drained: its first read (or `readable`
    /// wait) waits for that edge instead of trying a read that, on an idle connection, could
    /// only say `WouldBlock`. `true` must be certain; `false` is always safe, and is what the
    /// default says.
    fn edge_on_register(&self, socket: &Self::Socket) -> bool {
        let _ = socket;
        false
    }

    /// Writes from `buf` (non-empty); returns how much the stack accepted. A userspace stack
    /// must transmit or wake its poller before returning
    /// (`docs/design.md#a-userspace-send-does-not-transmit`).
    fn try_write(&self, socket: &Self::Socket, buf: &[u8]) -> Result<usize, TryError>;

    /// Shuts down one direction. The backend must raise the edges that wake a task blocked in
    /// that direction.
    fn shutdown(&self, socket: &Self::Socket, how: Shutdown) -> Result<(), ErrorKind>;

    /// The local address.
    fn local_addr(&self, socket: &Self::Socket) -> Result<SocketAddr, ErrorKind>;

    /// The peer's address.
    fn peer_addr(&self, socket: &Self::Socket) -> Result<SocketAddr, ErrorKind>;

    /// Enables or disables Nagle's algorithm's opposite (`TCP_NODELAY`).
    fn set_nodelay(&self, socket: &Self::Socket, nodelay: bool) -> Result<(), ErrorKind>;

    /// Whether `TCP_NODELAY` is on.
    fn nodelay(&self, socket: &Self::Socket) -> Result<bool, ErrorKind>;

    /// Releases the socket (called once, after [`SocketBackend::deregister`]). `abort` sends a
    /// reset instead of a FIN (Go: `SetLinger(0)` + `Close`). A listener's port is free again
    /// when this returns.
    fn close(&self, socket: &Self::Socket, abort: bool);
}

/// A provider of non-blocking datagram (UDP) sockets, on top of a [`SocketBackend`]: the
/// datagram sockets share its socket type, so the stack's fd lifecycle (register, deregister,
/// close exactly once) is the same for both. A TCP-only backend does not implement it.
///
/// As with TCP, every method is a non-blocking attempt; after `WouldBlock` the backend must
/// report a readiness edge for the socket's key when a datagram arrives (read) or when there
/// is room to send again (write).
///
/// ```
/// use core::net::SocketAddr;
/// use netpoll_core::backend::{DatagramBackend, TryError};
///
/// /// Echoes one datagram back to its sender, if one is queued now.
/// # #[allow(dead_code)]
/// fn echo_once<B: DatagramBackend>(b: &B, socket: &B::Socket) -> Result<(), TryError> {
///     let mut buf = [0u8; 1500];
///     let (len, from): (usize, SocketAddr) = b.try_recv_from(socket, &mut buf)?;
///     // `len` is the datagram's whole length: more than `buf.len()` means it was cut.
///     let n = len.min(buf.len());
///     b.try_send_to(socket, &buf[..n], Some(from)).map(drop)
/// }
/// ```
pub trait DatagramBackend: SocketBackend {
    /// Creates a datagram socket bound to `addr`, unregistered. Port 0 picks a free port;
    /// an unspecified IP receives on every address of the host.
    fn bind_datagram(&self, addr: SocketAddr) -> Result<Self::Socket, ErrorKind>;

    /// Sets the socket's default peer (Go: `DialUDP`'s `connect`): [`try_send_to`] with no
    /// address sends there, and only datagrams from it are received afterwards.
    ///
    /// [`try_send_to`]: DatagramBackend::try_send_to
    fn connect_datagram(&self, socket: &Self::Socket, addr: SocketAddr) -> Result<(), ErrorKind>;

    /// Takes the oldest queued datagram, copying what fits into `buf`. Returns the datagram's
    /// **whole** length (larger than `buf.len()` when the rest was cut off and discarded, as
    /// `MSG_TRUNC` reports it) and its sender.
    fn try_recv_from(
        &self,
        socket: &Self::Socket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError>;

    /// Queues `buf` as one datagram to `to`, or to the connected peer when `to` is `None`.
    /// Returns `buf.len()`: a datagram is sent whole or not at all. `WouldBlock`: no room in
    /// the send buffer now; a datagram that can never fit is `MessageTooLong`.
    fn try_send_to(
        &self,
        socket: &Self::Socket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError>;
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The socket was closed locally (Go: `net.ErrClosed`).
    Closed,
    /// The deadline passed (Go: `os.ErrDeadlineExceeded`).
    TimedOut,
    /// The readiness source reported an error-only event (Go: `ErrNotPollable`).
    NotPollable,
    /// The peer reset the connection (RST; Go: `ECONNRESET`). Not EOF, not temporary.
    ConnectionReset,
    /// Nobody listens at the address (Go: `ECONNREFUSED`).
    ConnectionRefused,
    /// The connection was aborted (Go: `ECONNABORTED`).
    ConnectionAborted,
    /// Writing after our own or the peer's shutdown (Go: `EPIPE`).
    BrokenPipe,
    /// The socket is not connected (Go: `ENOTCONN`).
    NotConnected,
    /// The local address is taken (Go: `EADDRINUSE`).
    AddrInUse,
    /// The local address is not ours (Go: `EADDRNOTAVAIL`).
    AddrNotAvailable,
    /// No route to the host (Go: `EHOSTUNREACH`).
    HostUnreachable,
    /// The network is unreachable (Go: `ENETUNREACH`).
    NetworkUnreachable,
    /// An argument was invalid (Go: `EINVAL`).
    InvalidInput,
    /// Out of sockets, buffers, ports or descriptors (Go: `EMFILE`, `ENOBUFS`, ...).
    OutOfResources,
    /// The backend cannot do this.
    Unsupported,
    /// A non-blocking attempt (`try_read`, `try_write`) could not proceed now (Go: `EAGAIN`,
    /// which Go's blocking API never shows). Never returned by the waiting operations.
    WouldBlock,
    /// A received datagram was longer than the buffer: the buffer holds its first bytes, the
    /// rest was discarded (netpoll reports what Go's `ReadFrom` leaves silent,
    /// `docs/semantics.md#udp`).
    MessageTruncated,
    /// A datagram too large to send at all (Go: `EMSGSIZE`).
    MessageTooLong,
    /// `write_to` on a connected datagram socket (Go: `ErrWriteToConnected`).
    AlreadyConnected,
    /// Any other OS error, by errno.
    Os(i32),
}

impl ErrorKind {
    /// Go's message for this error.
    pub fn message(self) -> &'static str {
        match self {
            ErrorKind::Closed => "use of closed network connection",
            ErrorKind::TimedOut => "i/o timeout",
            ErrorKind::NotPollable => "not pollable",
            ErrorKind::ConnectionReset => "connection reset by peer",
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::ConnectionAborted => "software caused connection abort",
            ErrorKind::BrokenPipe => "broken pipe",
            ErrorKind::NotConnected => "transport endpoint is not connected",
            ErrorKind::AddrInUse => "address already in use",
            ErrorKind::AddrNotAvailable => "cannot assign requested address",
            ErrorKind::HostUnreachable => "no route to host",
            ErrorKind::NetworkUnreachable => "network is unreachable",
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::OutOfResources => "no buffer space available",
            ErrorKind::Unsupported => "operation not supported",
            ErrorKind::WouldBlock => "resource temporarily unavailable",
            ErrorKind::MessageTruncated => "message truncated: datagram longer than the buffer",
            ErrorKind::MessageTooLong => "message too long",
            ErrorKind::AlreadyConnected => "use of WriteTo with pre-connected connection",
            ErrorKind::Os(_) => "os error",
        }
    }
}

impl From<PollError> for ErrorKind {
    /// Go: `convertErr` in `internal/poll/fd_poll_runtime.go`.
    fn from(e: PollError) -> Self {
        match e {
            PollError::Closing => ErrorKind::Closed,
            PollError::TimedOut => ErrorKind::TimedOut,
            PollError::NotPollable => ErrorKind::NotPollable,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Os(errno) => write!(f, "os error {errno}"),
            k => f.write_str(k.message()),
        }
    }
}

/// The outcome of a non-blocking attempt (`try_*`): in the blocking API `WouldBlock` is never
/// an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryError {
    /// Nothing can be done now; wait for readiness and retry (Go: `EAGAIN`).
    WouldBlock,
    /// The attempt failed.
    Failed(ErrorKind),
}

impl From<ErrorKind> for TryError {
    fn from(k: ErrorKind) -> Self {
        TryError::Failed(k)
    }
}

impl fmt::Display for TryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryError::WouldBlock => f.write_str("operation would block"),
            TryError::Failed(k) => k.fmt(f),
        }
    }
}

impl core::error::Error for TryError {}
