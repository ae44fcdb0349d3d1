//! Errors, shaped like Go's `*net.OpError`: the operation that failed plus why.
//!
//! Three outcomes Go keeps apart stay apart here (`docs/semantics.md#shutdown-versus-close`):
//! a local close is [`ErrorKind::Closed`] ("use of closed network connection"), a peer's FIN
//! is `Ok(0)` from `read`, a peer's reset is [`ErrorKind::ConnectionReset`]. The strings are
//! frozen (golang/go#4373, golang/go#19252).

use core::fmt;

pub use netpoll_core::backend::{ErrorKind, TryError};

/// The operation that failed (Go: `OpError.Op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Binding or listening.
    Listen,
    /// Accepting a connection.
    Accept,
    /// Connecting (Go: `dial`).
    Connect,
    /// Reading.
    Read,
    /// Writing.
    Write,
    /// Closing.
    Close,
    /// Shutting down one direction.
    Shutdown,
    /// Setting a deadline or option (Go: `set`).
    Set,
    /// Querying an address or option (Go: `get`).
    Get,
}

impl Op {
    /// Go's spelling of the operation.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Listen => "listen",
            Op::Accept => "accept",
            Op::Connect => "dial",
            Op::Read => "read",
            Op::Write => "write",
            Op::Close => "close",
            Op::Shutdown => "shutdown",
            Op::Set => "set",
            Op::Get => "get",
        }
    }
}

/// A failed operation: Go's `*net.OpError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    op: Op,
    kind: ErrorKind,
    transferred: usize,
    /// From a UDP socket: the message says `udp` where a stream's says `tcp` (Go: `OpError.Net`).
    udp: bool,
}

impl Error {
    /// An error of `kind` from operation `op`.
    pub const fn new(op: Op, kind: ErrorKind) -> Self {
        Error {
            op,
            kind,
            transferred: 0,
            udp: false,
        }
    }

    /// The same error, from a UDP socket.
    pub(crate) const fn on_udp(mut self) -> Self {
        self.udp = true;
        self
    }

    pub(crate) const fn with_transferred(mut self, n: usize) -> Self {
        self.transferred = n;
        self
    }

    /// The operation that failed.
    pub const fn op(&self) -> Op {
        self.op
    }

    /// Why it failed.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Bytes the operation moved before it failed: for `write_all`, what the stack accepted
    /// (Go: the `nn` that `Write` returns with its error, checklist #16 of `docs/semantics.md`).
    /// Zero for other operations.
    pub const fn transferred(&self) -> usize {
        self.transferred
    }

    /// Whether this is a deadline expiry (Go: `Timeout()`, `errors.Is(err,
    /// os.ErrDeadlineExceeded)`).
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::TimedOut
    }

    /// Go's `Temporary()`: true only for a deadline expiry. A reset is not temporary (Go #24808).
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::TimedOut
    }

    /// Whether a non-blocking attempt (`try_read`, `try_write`) found nothing to do now: wait
    /// (`readable`, or the blocking call) and retry.
    pub fn is_would_block(&self) -> bool {
        self.kind == ErrorKind::WouldBlock
    }

    /// Whether the socket was closed locally (Go: `errors.Is(err, net.ErrClosed)`).
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = if self.udp { "udp" } else { "tcp" };
        write!(f, "{} {net}: {}", self.op.as_str(), self.kind)
    }
}

impl core::error::Error for Error {}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind {
            ErrorKind::Closed => K::NotConnected,
            ErrorKind::TimedOut => K::TimedOut,
            ErrorKind::ConnectionReset => K::ConnectionReset,
            ErrorKind::ConnectionRefused => K::ConnectionRefused,
            ErrorKind::ConnectionAborted => K::ConnectionAborted,
            ErrorKind::BrokenPipe => K::BrokenPipe,
            ErrorKind::NotConnected => K::NotConnected,
            ErrorKind::AddrInUse => K::AddrInUse,
            ErrorKind::AddrNotAvailable => K::AddrNotAvailable,
            ErrorKind::HostUnreachable => K::HostUnreachable,
            ErrorKind::NetworkUnreachable => K::NetworkUnreachable,
            ErrorKind::InvalidInput => K::InvalidInput,
            ErrorKind::OutOfResources => K::OutOfMemory,
            ErrorKind::Unsupported => K::Unsupported,
            ErrorKind::WouldBlock => K::WouldBlock,
            // `ErrorKind` is non-exhaustive: kinds added later map to `Other` until listed here.
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}
