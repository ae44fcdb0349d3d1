//! Kernel-socket-only conversions and options for [`TcpStream`] and [`TcpListener`] (which
//! are `netpoll-stack`'s generic types, so these come as extension traits): conversion from
//! and to `std::net`, keep-alive and TTL. `AsRawFd` is implemented on both types directly.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use netpoll_stack::{Error, ErrorKind, Op};

use crate::backend::{error_kind, KernelSocket};
use crate::sys::socket as sock;
use crate::{TcpListener, TcpStream};

/// Options and conversions of a kernel [`TcpStream`]; bring it into scope with
/// `use netpoll_hosted::TcpStreamExt`.
///
/// ```
/// use std::time::Duration;
/// use netpoll_hosted::{Runtime, TcpStream, TcpStreamExt};
///
/// let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = server.local_addr().unwrap();
/// Runtime::new().unwrap().block_on(async move {
///     // A connection made with std, then driven by netpoll.
///     let stream = TcpStream::from_std(std::net::TcpStream::connect(addr)?)?;
///     stream.set_keepalive(Some(Duration::from_secs(30)))?;
///     stream.set_ttl(64)?;
///     assert_eq!(stream.keepalive()?, Some(Duration::from_secs(30)));
///     let (mut peer, _) = server.accept()?;
///     stream.write_all(b"hi").await?;
///     // And back to std (still non-blocking, as tokio's `into_std`).
///     let std_stream = stream.into_std()?;
///     std_stream.set_nonblocking(false)?;
///     let mut buf = [0u8; 2];
///     std::io::Read::read_exact(&mut peer, &mut buf)?;
///     assert_eq!(&buf, b"hi");
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap();
/// ```
pub trait TcpStreamExt: Sized {
    /// Adopts a connected `std::net::TcpStream` on the current runtime: sets it non-blocking
    /// and registers it with the poller (tokio: `TcpStream::from_std`; Go: `net.FileConn`).
    /// Its socket options are kept as they are (`TCP_NODELAY` is not turned on).
    ///
    /// # Panics
    /// Outside [`Runtime::block_on`](crate::Runtime::block_on).
    fn from_std(stream: std::net::TcpStream) -> io::Result<Self>;

    /// Hands the connection to `std::net`: a second descriptor for the same socket (Go:
    /// `TCPConn.File`), still non-blocking as tokio's `into_std` leaves it (call
    /// `set_nonblocking(false)` for blocking use). This handle is dropped; the socket stays
    /// open until the `std` stream and every clone of this stream are gone.
    ///
    /// Fails, handing the stream back, if netpoll already read a byte the `std` stream would
    /// never see (a read that filled its buffer exactly reads one byte ahead): read once more
    /// (`try_read` with a one-byte buffer returns it) and retry.
    fn into_std(self) -> Result<std::net::TcpStream, IntoStdError<Self>>;

    /// Turns keep-alive probes on with `period` both as the idle time before the first probe
    /// and as the interval between probes (whole seconds, at least one), or off with `None`
    /// (Go: `SetKeepAlive` + `SetKeepAlivePeriod`).
    fn set_keepalive(&self, period: Option<Duration>) -> Result<(), Error>;

    /// The keep-alive idle time, or `None` when keep-alive is off.
    fn keepalive(&self) -> Result<Option<Duration>, Error>;

    /// Sets the time-to-live (IPv4) or hop limit (IPv6) of outgoing packets, 1 to 255.
    fn set_ttl(&self, ttl: u32) -> Result<(), Error>;

    /// The time-to-live (IPv4) or hop limit (IPv6) of outgoing packets.
    fn ttl(&self) -> Result<u32, Error>;
}

/// Conversions and options of a kernel [`TcpListener`]; bring it into scope with
/// `use netpoll_hosted::TcpListenerExt`.
pub trait TcpListenerExt: Sized {
    /// Adopts a listening `std::net::TcpListener` on the current runtime: sets it
    /// non-blocking and registers it (tokio: `TcpListener::from_std`; Go: `net.FileListener`).
    ///
    /// # Panics
    /// Outside [`Runtime::block_on`](crate::Runtime::block_on).
    fn from_std(listener: std::net::TcpListener) -> io::Result<Self>;

    /// Hands the listener to `std::net`: a second descriptor for the same socket, still
    /// non-blocking. This handle is dropped; the socket stays open until the `std` listener
    /// and every clone of this listener are gone.
    fn into_std(self) -> io::Result<std::net::TcpListener>;

    /// Sets the time-to-live (IPv4) or hop limit (IPv6) of the connections' packets.
    fn set_ttl(&self, ttl: u32) -> Result<(), Error>;

    /// The time-to-live (IPv4) or hop limit (IPv6).
    fn ttl(&self) -> Result<u32, Error>;
}

/// [`TcpStreamExt::into_std`] could not hand the connection over; the stream comes back
/// unchanged.
pub struct IntoStdError<S> {
    stream: S,
    /// `None`: a byte read ahead; else why duplicating the descriptor failed.
    failure: Option<Error>,
}

impl<S> IntoStdError<S> {
    /// The stream, unchanged.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Whether it failed because of a byte read ahead (read it, then retry), rather than a
    /// closed stream or a lack of descriptors.
    pub fn is_read_ahead(&self) -> bool {
        self.failure.is_none()
    }
}

impl<S> fmt::Debug for IntoStdError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoStdError")
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl<S> fmt::Display for IntoStdError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            None => f.write_str(
                "netpoll holds a byte read ahead that a std stream would lose; read it first",
            ),
            Some(e) => write!(f, "into_std: {e}"),
        }
    }
}

impl<S> std::error::Error for IntoStdError<S> {}

impl<S> From<IntoStdError<S>> for io::Error {
    fn from(e: IntoStdError<S>) -> Self {
        match e.failure {
            None => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            Some(failure) => failure.into(),
        }
    }
}

/// The socket option call of an extension method, on a live socket.
fn option<T>(
    socket: &KernelSocket,
    call: impl FnOnce(std::os::fd::RawFd) -> io::Result<T>,
) -> Result<T, ErrorKind> {
    call(socket.as_raw_fd()).map_err(|e| error_kind(&e))
}

/// A descriptor for `std`, taken under a reference so a closed socket reports closed.
fn duplicate(socket: &KernelSocket) -> Result<OwnedFd, ErrorKind> {
    sock::dup_cloexec(socket.as_raw_fd()).map_err(|e| error_kind(&e))
}

impl TcpStreamExt for TcpStream {
    fn from_std(stream: std::net::TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        let socket = KernelSocket::new(OwnedFd::from(stream));
        Ok(TcpStream::from_socket(&crate::backend(), socket)?)
    }

    fn into_std(self) -> Result<std::net::TcpStream, IntoStdError<Self>> {
        if self.socket().has_read_ahead() {
            return Err(IntoStdError {
                stream: self,
                failure: None,
            });
        }
        match self.with_socket(Op::Get, |_, s| duplicate(s)) {
            Ok(fd) => Ok(std::net::TcpStream::from(fd)),
            Err(e) => Err(IntoStdError {
                stream: self,
                failure: Some(e),
            }),
        }
    }

    fn set_keepalive(&self, period: Option<Duration>) -> Result<(), Error> {
        let secs = period.map(|d| {
            let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            u32::try_from(whole).unwrap_or(u32::MAX)
        });
        self.with_socket(Op::Set, |_, s| {
            option(s, |fd| sock::set_keepalive(fd, secs))
        })
    }

    fn keepalive(&self) -> Result<Option<Duration>, Error> {
        let secs = self.with_socket(Op::Get, |_, s| option(s, sock::keepalive))?;
        Ok(secs.map(|s| Duration::from_secs(s.into())))
    }

    fn set_ttl(&self, ttl: u32) -> Result<(), Error> {
        self.with_socket(Op::Set, |_, s| option(s, |fd| sock::set_ttl(fd, ttl)))
    }

    fn ttl(&self) -> Result<u32, Error> {
        self.with_socket(Op::Get, |_, s| option(s, sock::ttl))
    }
}

impl TcpListenerExt for TcpListener {
    fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let socket = KernelSocket::new(OwnedFd::from(listener));
        Ok(TcpListener::from_socket(&crate::backend(), socket)?)
    }

    fn into_std(self) -> io::Result<std::net::TcpListener> {
        let fd = self.with_socket(Op::Get, |_, s| duplicate(s))?;
        Ok(std::net::TcpListener::from(fd))
    }

    fn set_ttl(&self, ttl: u32) -> Result<(), Error> {
        self.with_socket(Op::Set, |_, s| option(s, |fd| sock::set_ttl(fd, ttl)))
    }

    fn ttl(&self) -> Result<u32, Error> {
        self.with_socket(Op::Get, |_, s| option(s, sock::ttl))
    }
}
