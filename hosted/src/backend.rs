//! Kernel TCP sockets as a [`SocketBackend`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU16, Ordering};
use std::sync::Arc;

use netpoll_core::backend::{ErrorKind, Shutdown, SocketBackend, TryError};
use netpoll_core::{Handle, Key};

use crate::source::Poller;
use crate::sys::socket as sock;

/// Maps an OS error to the stack's error kinds.
pub fn error_kind(e: &io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => ErrorKind::ConnectionReset,
        Some(libc::ECONNREFUSED) => ErrorKind::ConnectionRefused,
        Some(libc::ECONNABORTED) => ErrorKind::ConnectionAborted,
        Some(libc::EPIPE) => ErrorKind::BrokenPipe,
        Some(libc::ENOTCONN) => ErrorKind::NotConnected,
        Some(libc::EADDRINUSE) => ErrorKind::AddrInUse,
        Some(libc::EADDRNOTAVAIL) => ErrorKind::AddrNotAvailable,
        Some(libc::EHOSTUNREACH) => ErrorKind::HostUnreachable,
        Some(libc::ENETUNREACH) => ErrorKind::NetworkUnreachable,
        Some(libc::EINVAL) => ErrorKind::InvalidInput,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            ErrorKind::OutOfResources
        }
        Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP) => ErrorKind::Unsupported,
        Some(errno) => ErrorKind::Os(errno),
        None => ErrorKind::Os(0),
    }
}

fn try_error(e: io::Error) -> TryError {
    if e.kind() == io::ErrorKind::WouldBlock {
        TryError::WouldBlock
    } else {
        TryError::Failed(error_kind(&e))
    }
}

/// A kernel socket descriptor, owned: [`SocketBackend::close`] closes it (the stack calls it
/// exactly once), and dropping a socket that was never closed closes it too.
#[derive(Debug)]
pub struct KernelSocket {
    fd: sock::SocketFd,
    /// One byte read ahead by `try_read_drained` (`STASHED | byte`), delivered first next time.
    stash: AtomicU16,
    /// An error the kernel reported while a stashed byte was being delivered: the next read's.
    pending_errno: AtomicI32,
}

/// Flag bit of [`KernelSocket::stash`].
const STASHED: u16 = 0x100;

impl KernelSocket {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        KernelSocket {
            fd: sock::SocketFd::new(fd),
            stash: AtomicU16::new(0),
            pending_errno: AtomicI32::new(0),
        }
    }
}

impl KernelSocket {
    /// The raw descriptor (valid until the stack closes the socket; -1 after).
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }

    /// Whether a read took data out of the kernel that no caller has had yet (the byte read
    /// ahead by `try_read_drained`, or the error found behind it): a second descriptor for
    /// the socket would not see it.
    pub(crate) fn has_read_ahead(&self) -> bool {
        // Relaxed: see `try_read_drained`; a caller that races a read gets either answer.
        self.stash.load(Ordering::Relaxed) & STASHED != 0
            || self.pending_errno.load(Ordering::Relaxed) != 0
    }
}

/// The descriptor (-1 once the stack closed the socket); lets `TcpStream` and `TcpListener`
/// implement `AsRawFd`.
impl AsRawFd for KernelSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

/// Non-blocking kernel TCP sockets polled by epoll. Cheap to clone: one pointer, which
/// every socket holds a copy of.
#[derive(Debug, Clone)]
pub struct KernelBackend {
    shared: Arc<KernelShared>,
}

#[derive(Debug)]
struct KernelShared {
    poller: Arc<Poller>,
    handle: Handle,
}

impl KernelBackend {
    pub(crate) fn new(poller: Arc<Poller>, handle: Handle) -> Self {
        KernelBackend {
            shared: Arc::new(KernelShared { poller, handle }),
        }
    }
}

/// Retries a syscall interrupted by a signal.
fn no_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl SocketBackend for KernelBackend {
    type Socket = KernelSocket;

    /// Reads with `readv` into `buf` plus one spare byte, so that even a read that fills `buf`
    /// exactly (fixed-size messages: the common case) tells whether the receive queue emptied:
    /// getting at most `buf.len()` bytes of the `buf.len() + 1` asked proves it, because
    /// `tcp_recvmsg` stops early only when the queue is empty, and data still in the socket
    /// backlog raises a new epoll edge when `release_sock` processes it. A spare byte that did
    /// arrive is kept and delivered first by the next read. A FIN or reset already received is
    /// not "data": the stack checks `PollDesc::read_closed` (set by the `EPOLLRDHUP`/
    /// `EPOLLHUP`/`EPOLLERR` edge) before trusting "drained". Net effect: one `read` per
    /// message instead of a second one that says `EAGAIN`.
    fn try_read_drained(
        &self,
        socket: &KernelSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        // Relaxed (both atomics): only the holder of the stack's read lock for this socket
        // touches them, and that lock orders successive readers.
        // Plain loads first: both are almost always empty, and a read-modify-write on every
        // read would cost a locked instruction each on the hot path.
        let errno = socket.pending_errno.load(Ordering::Relaxed);
        if errno != 0 {
            socket.pending_errno.store(0, Ordering::Relaxed);
            return Err(TryError::Failed(error_kind(&io::Error::from_raw_os_error(
                errno,
            ))));
        }
        let mut off = 0;
        let stash = socket.stash.load(Ordering::Relaxed);
        if stash & STASHED != 0 {
            socket.stash.store(0, Ordering::Relaxed);
            buf[0] = stash as u8;
            off = 1;
            if buf.len() == 1 {
                return Ok((1, false));
            }
        }
        let mut spare = [0u8; 1];
        let want = buf.len() - off;
        match no_eintr(|| sock::read_vectored(socket.fd.raw(), &mut buf[off..], &mut spare)) {
            Ok(n) if n > want => {
                socket
                    .stash
                    .store(STASHED | u16::from(spare[0]), Ordering::Relaxed);
                Ok((buf.len(), false))
            }
            // End of stream: deliver a stashed byte first; the next read sees EOF again.
            Ok(0) => Ok((off, false)),
            Ok(n) => Ok((off + n, true)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if off == 1 {
                    Ok((1, true))
                } else {
                    Err(TryError::WouldBlock)
                }
            }
            Err(e) if off == 1 => {
                // The stashed byte came before the error: deliver it, report the error next.
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                socket.pending_errno.store(errno, Ordering::Relaxed);
                Ok((1, false))
            }
            Err(e) => Err(TryError::Failed(error_kind(&e))),
        }
    }

    fn handle(&self) -> &Handle {
        &self.shared.handle
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<KernelSocket, ErrorKind> {
        // A failed step drops `fd`, which closes it.
        let fd = sock::tcp_socket(&addr).map_err(|e| error_kind(&e))?;
        let raw = fd.as_raw_fd();
        // Go sets SO_REUSEADDR on listeners so listen-close-listen works.
        sock::set_reuseaddr(raw).map_err(|e| error_kind(&e))?;
        sock::bind(raw, &addr).map_err(|e| error_kind(&e))?;
        sock::listen(raw, backlog).map_err(|e| error_kind(&e))?;
        Ok(KernelSocket::new(fd))
    }

    fn stream(&self, remote: SocketAddr) -> Result<KernelSocket, ErrorKind> {
        let fd = sock::tcp_socket(&remote).map_err(|e| error_kind(&e))?;
        // TCP_NODELAY on by default, as Go (on failure, dropping `fd` closes it).
        sock::set_nodelay(fd.as_raw_fd(), true).map_err(|e| error_kind(&e))?;
        Ok(KernelSocket::new(fd))
    }

    fn register(&self, socket: &KernelSocket, key: Key) -> Result<(), ErrorKind> {
        self.shared
            .poller
            .register(socket.fd.raw(), key)
            .map_err(|e| error_kind(&e))
    }

    /// `EPOLL_CTL_ADD` of an edge-triggered descriptor polls it once and queues an event if
    /// data (or the end) is already there, so data that arrived before registration is an
    /// edge too.
    fn edge_on_register(&self, _socket: &KernelSocket) -> bool {
        true
    }

    fn deregister(&self, socket: &KernelSocket) {
        // ENOENT/EBADF would mean a bookkeeping bug; the close that follows releases the fd
        // from epoll anyway, so nothing leaks.
        let _ = self.shared.poller.deregister(socket.fd.raw());
    }

    fn try_accept(&self, listener: &KernelSocket) -> Result<(KernelSocket, SocketAddr), TryError> {
        let (fd, peer) = no_eintr(|| sock::accept(listener.fd.raw())).map_err(try_error)?;
        if let Err(e) = sock::set_nodelay(fd.as_raw_fd(), true) {
            // A connection reset in the queue can fail here; skip it like ECONNABORTED
            // (returning drops `fd`, which closes it).
            return Err(match error_kind(&e) {
                ErrorKind::InvalidInput | ErrorKind::ConnectionReset => {
                    TryError::Failed(ErrorKind::ConnectionAborted)
                }
                k => TryError::Failed(k),
            });
        }
        Ok((KernelSocket::new(fd), peer))
    }

    fn start_connect(&self, socket: &KernelSocket, addr: SocketAddr) -> Result<(), TryError> {
        match sock::connect(socket.fd.raw(), &addr) {
            Ok(()) => Ok(()),
            // EINTR: the connect goes on asynchronously (Go: netFD.connect treats it so).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINPROGRESS | libc::EALREADY | libc::EINTR)
                ) =>
            {
                Err(TryError::WouldBlock)
            }
            Err(e) => Err(TryError::Failed(error_kind(&e))),
        }
    }

    fn finish_connect(&self, socket: &KernelSocket) -> Result<(), TryError> {
        match sock::take_error(socket.fd.raw()) {
            Ok(None) => {}
            Ok(Some(e)) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EALREADY)) => {
                return Err(TryError::WouldBlock)
            }
            Ok(Some(e)) | Err(e) => return Err(TryError::Failed(error_kind(&e))),
        }
        // No pending error is not proof of a connection: a spurious wake-up looks the same
        // (Go #14548, #19289). getpeername succeeds only once connected.
        match sock::peer_addr(socket.fd.raw()) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(TryError::WouldBlock),
            Err(e) => Err(TryError::Failed(error_kind(&e))),
        }
    }

    fn try_read(&self, socket: &KernelSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        // Through the same path, so a stashed byte is never skipped.
        self.try_read_drained(socket, buf).map(|(n, _)| n)
    }

    fn try_write(&self, socket: &KernelSocket, buf: &[u8]) -> Result<usize, TryError> {
        no_eintr(|| sock::send(socket.fd.raw(), buf)).map_err(try_error)
    }

    fn shutdown(&self, socket: &KernelSocket, how: Shutdown) -> Result<(), ErrorKind> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
        };
        sock::shutdown(socket.fd.raw(), how).map_err(|e| error_kind(&e))
    }

    fn local_addr(&self, socket: &KernelSocket) -> Result<SocketAddr, ErrorKind> {
        sock::local_addr(socket.fd.raw()).map_err(|e| error_kind(&e))
    }

    fn peer_addr(&self, socket: &KernelSocket) -> Result<SocketAddr, ErrorKind> {
        sock::peer_addr(socket.fd.raw()).map_err(|e| error_kind(&e))
    }

    fn set_nodelay(&self, socket: &KernelSocket, nodelay: bool) -> Result<(), ErrorKind> {
        sock::set_nodelay(socket.fd.raw(), nodelay).map_err(|e| error_kind(&e))
    }

    fn nodelay(&self, socket: &KernelSocket) -> Result<bool, ErrorKind> {
        sock::nodelay(socket.fd.raw()).map_err(|e| error_kind(&e))
    }

    fn close(&self, socket: &KernelSocket, abort: bool) {
        if abort {
            // Best effort: if it fails the peer sees FIN instead of RST.
            let _ = sock::set_linger_zero(socket.fd.raw());
        }
        socket.fd.close();
    }
}
