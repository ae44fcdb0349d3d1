//! The backend socket under a [`TcpStream`] or [`TcpListener`], for backend crates that add
//! their own conversions and options (netpoll-hosted: `from_std`, `into_std`, keep-alive,
//! TTL, `AsRawFd`).
//!
//! [`TcpStream::from_socket`] adopts a socket made outside the stack (Go: `net.FileConn`);
//! [`TcpStream::with_socket`] runs one backend call on it under a reference (Go: `incref`
//! around `SetsockoptInt`), so a closed stream reports [`ErrorKind::Closed`] instead of
//! touching a released socket.

use crate::error::{Error, ErrorKind, Op};
use crate::fd::Fd;
use crate::tcp::{TcpListener, TcpStream};
use netpoll_core::backend::SocketBackend;

/// Runs `f` on the socket under a reference: fails with `Closed` once the socket is closed.
fn with_ref<B: SocketBackend, T>(
    fd: &Fd<B>,
    op: Op,
    f: impl FnOnce(&B, &B::Socket) -> Result<T, ErrorKind>,
) -> Result<T, Error> {
    let _ref = fd.incref().map_err(|k| Error::new(op, k))?;
    f(&fd.backend, &fd.socket).map_err(|k| Error::new(op, k))
}

impl<B: SocketBackend> TcpStream<B> {
    /// Adopts a connected socket the backend made outside the stack: opens its pollDesc and
    /// registers it, as `accept` does for a new connection (Go: `net.FileConn`). On failure
    /// the socket is closed.
    pub fn from_socket(backend: &B, socket: B::Socket) -> Result<Self, Error> {
        let fd = Fd::new(backend, socket).map_err(|k| Error::new(Op::Connect, k))?;
        Ok(TcpStream { fd })
    }

    /// Runs one backend call on the socket, reported as `op`: a socket option, say. Holds a
    /// reference for the call, so a concurrent `close` waits for it and a closed stream
    /// fails with [`ErrorKind::Closed`].
    pub fn with_socket<T>(
        &self,
        op: Op,
        f: impl FnOnce(&B, &B::Socket) -> Result<T, ErrorKind>,
    ) -> Result<T, Error> {
        with_ref(&self.fd, op, f)
    }

    /// The backend socket, without a reference: after `close` it is released (a kernel
    /// socket's descriptor then reads -1). Prefer [`with_socket`](Self::with_socket).
    pub fn socket(&self) -> &B::Socket {
        &self.fd.socket
    }
}

impl<B: SocketBackend> TcpListener<B> {
    /// Adopts a listening socket the backend made outside the stack (Go:
    /// `net.FileListener`). On failure the socket is closed.
    pub fn from_socket(backend: &B, socket: B::Socket) -> Result<Self, Error> {
        let fd = Fd::new(backend, socket).map_err(|k| Error::new(Op::Listen, k))?;
        Ok(TcpListener { fd })
    }

    /// Runs one backend call on the socket under a reference (see
    /// [`TcpStream::with_socket`]).
    pub fn with_socket<T>(
        &self,
        op: Op,
        f: impl FnOnce(&B, &B::Socket) -> Result<T, ErrorKind>,
    ) -> Result<T, Error> {
        with_ref(&self.fd, op, f)
    }

    /// The backend socket, without a reference (see [`TcpStream::socket`]).
    pub fn socket(&self) -> &B::Socket {
        &self.fd.socket
    }
}

#[cfg(all(feature = "std", unix))]
mod unix {
    extern crate std;

    use std::os::fd::{AsRawFd, RawFd};

    use crate::tcp::{TcpListener, TcpStream};
    use netpoll_core::backend::SocketBackend;

    /// The socket's descriptor; -1 once the stream is closed. There is no `AsFd`: `close`
    /// takes `&self`, so a `BorrowedFd` could outlive the descriptor it names.
    impl<B: SocketBackend> AsRawFd for TcpStream<B>
    where
        B::Socket: AsRawFd,
    {
        fn as_raw_fd(&self) -> RawFd {
            self.socket().as_raw_fd()
        }
    }

    /// The socket's descriptor; -1 once the listener is closed (see `TcpStream`'s).
    impl<B: SocketBackend> AsRawFd for TcpListener<B>
    where
        B::Socket: AsRawFd,
    {
        fn as_raw_fd(&self) -> RawFd {
            self.socket().as_raw_fd()
        }
    }
}
