//! Kernel UDP sockets as a [`DatagramBackend`]: `recvfrom` with `MSG_TRUNC` (so a datagram
//! longer than the buffer is reported with its whole length, `docs/semantics.md#udp`) and
//! `sendto` with `MSG_NOSIGNAL`. The sockets are [`KernelSocket`]s registered with epoll like
//! TCP's: a datagram's arrival is a read edge, room in the send buffer a write edge.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use netpoll_core::backend::{DatagramBackend, ErrorKind, TryError};

use crate::backend::{error_kind, KernelBackend, KernelSocket};
use crate::sys::socket as sock;

/// The kernel's datagram errors, then the shared mapping.
fn datagram_error_kind(e: &io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::EMSGSIZE) => ErrorKind::MessageTooLong,
        // `send` with no address on an unconnected socket.
        Some(libc::EDESTADDRREQ) => ErrorKind::NotConnected,
        Some(libc::EISCONN) => ErrorKind::AlreadyConnected,
        _ => error_kind(e),
    }
}

/// Retries a syscall interrupted by a signal; `EAGAIN` becomes `WouldBlock`.
fn attempt<T>(mut f: impl FnMut() -> io::Result<T>) -> Result<T, TryError> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(TryError::WouldBlock),
            Err(e) => return Err(TryError::Failed(datagram_error_kind(&e))),
        }
    }
}

impl DatagramBackend for KernelBackend {
    fn bind_datagram(&self, addr: SocketAddr) -> Result<KernelSocket, ErrorKind> {
        // A failed step drops `fd`, which closes it.
        let fd = sock::udp_socket(&addr).map_err(|e| datagram_error_kind(&e))?;
        sock::bind(fd.as_raw_fd(), &addr).map_err(|e| datagram_error_kind(&e))?;
        Ok(KernelSocket::new(fd))
    }

    fn connect_datagram(&self, socket: &KernelSocket, addr: SocketAddr) -> Result<(), ErrorKind> {
        // A UDP connect only records the peer: it never blocks.
        sock::connect(socket.as_raw_fd(), &addr).map_err(|e| datagram_error_kind(&e))
    }

    fn try_recv_from(
        &self,
        socket: &KernelSocket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError> {
        attempt(|| sock::recv_from(socket.as_raw_fd(), buf))
    }

    fn try_send_to(
        &self,
        socket: &KernelSocket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        attempt(|| sock::send_to(socket.as_raw_fd(), buf, to.as_ref()))
    }
}
