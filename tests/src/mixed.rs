//! The backend of the instances that put smoltcp on a real device (TAP, AF_XDP) and the
//! kernel's TCP stack on the other end of the link, polled by one
//! [`MixedNet`](netpoll_hosted::MixedNet) scheduler: each call goes to the stack whose socket
//! it is given.

use core::fmt;
use core::net::SocketAddr;

use netpoll_core::{Handle, Key};
use netpoll_drivers::smoltcp::phy::Device;
use netpoll_drivers::{SmolBackend, SmolSocket};
use netpoll_hosted::{KernelBackend, KernelSocket};
use netpoll_stack::backend::Shutdown;
use netpoll_stack::{ErrorKind, SocketBackend, TryError};

/// The libtest name of the running test (libtest names each test's thread after it), which is
/// how a namespace harness re-runs just this case inside a namespace; `harness` names the
/// harness in the panic when called elsewhere.
pub(crate) fn current_test(harness: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => panic!("{harness} runs only inside a #[test] (it re-runs the test by name)"),
    }
}

/// The backend of an instance whose server is smoltcp on device `D` and whose client is the
/// kernel: both are polled by the same [`MixedNet`](netpoll_hosted::MixedNet) scheduler, so
/// one [`Env`](crate::Env) can hold them.
pub enum MixedBackend<D: Device> {
    /// smoltcp on the device.
    Smol(SmolBackend<D>),
    /// Kernel sockets, polled through the mixed source's epoll half.
    Kernel(KernelBackend),
}

impl<D: Device> Clone for MixedBackend<D> {
    fn clone(&self) -> Self {
        match self {
            MixedBackend::Smol(b) => MixedBackend::Smol(b.clone()),
            MixedBackend::Kernel(b) => MixedBackend::Kernel(b.clone()),
        }
    }
}

impl<D: Device> fmt::Debug for MixedBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixedBackend::Smol(b) => f.debug_tuple("Smol").field(b).finish(),
            MixedBackend::Kernel(b) => f.debug_tuple("Kernel").field(b).finish(),
        }
    }
}

/// A socket of a [`MixedBackend`]; always of the variant of the backend that made it.
#[derive(Debug)]
pub enum MixedSocket {
    /// A smoltcp socket.
    Smol(SmolSocket),
    /// A kernel socket.
    Kernel(KernelSocket),
}

/// Runs `$e` with the backend and socket of the same stack bound to `$b` and `$s`.
macro_rules! dispatch {
    ($self:expr, $socket:expr, |$b:ident, $s:ident| $e:expr) => {
        match ($self, $socket) {
            (MixedBackend::Smol($b), MixedSocket::Smol($s)) => $e,
            (MixedBackend::Kernel($b), MixedSocket::Kernel($s)) => $e,
            _ => mismatch(),
        }
    };
}

/// A socket handed to the other stack's backend: the stack never does that (each socket goes
/// back to the backend that made it), so this is a harness bug.
#[track_caller]
fn mismatch() -> ! {
    panic!("MixedBackend: a socket was used with the other stack's backend")
}

impl<D: Device + Send + 'static> SocketBackend for MixedBackend<D> {
    type Socket = MixedSocket;

    fn handle(&self) -> &Handle {
        match self {
            MixedBackend::Smol(b) => b.handle(),
            MixedBackend::Kernel(b) => b.handle(),
        }
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<MixedSocket, ErrorKind> {
        match self {
            MixedBackend::Smol(b) => b.listen(addr, backlog).map(MixedSocket::Smol),
            MixedBackend::Kernel(b) => b.listen(addr, backlog).map(MixedSocket::Kernel),
        }
    }

    fn stream(&self, remote: SocketAddr) -> Result<MixedSocket, ErrorKind> {
        match self {
            MixedBackend::Smol(b) => b.stream(remote).map(MixedSocket::Smol),
            MixedBackend::Kernel(b) => b.stream(remote).map(MixedSocket::Kernel),
        }
    }

    fn register(&self, socket: &MixedSocket, key: Key) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.register(s, key))
    }

    fn deregister(&self, socket: &MixedSocket) {
        dispatch!(self, socket, |b, s| b.deregister(s))
    }

    fn try_accept(&self, listener: &MixedSocket) -> Result<(MixedSocket, SocketAddr), TryError> {
        match (self, listener) {
            (MixedBackend::Smol(b), MixedSocket::Smol(l)) => b
                .try_accept(l)
                .map(|(s, peer)| (MixedSocket::Smol(s), peer)),
            (MixedBackend::Kernel(b), MixedSocket::Kernel(l)) => b
                .try_accept(l)
                .map(|(s, peer)| (MixedSocket::Kernel(s), peer)),
            _ => mismatch(),
        }
    }

    fn start_connect(&self, socket: &MixedSocket, addr: SocketAddr) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.start_connect(s, addr))
    }

    fn finish_connect(&self, socket: &MixedSocket) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.finish_connect(s))
    }

    fn try_read(&self, socket: &MixedSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_read(s, buf))
    }

    fn try_read_drained(
        &self,
        socket: &MixedSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        dispatch!(self, socket, |b, s| b.try_read_drained(s, buf))
    }

    fn edge_on_register(&self, socket: &MixedSocket) -> bool {
        dispatch!(self, socket, |b, s| b.edge_on_register(s))
    }

    fn try_write(&self, socket: &MixedSocket, buf: &[u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_write(s, buf))
    }

    fn shutdown(&self, socket: &MixedSocket, how: Shutdown) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.shutdown(s, how))
    }

    fn local_addr(&self, socket: &MixedSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.local_addr(s))
    }

    fn peer_addr(&self, socket: &MixedSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.peer_addr(s))
    }

    fn set_nodelay(&self, socket: &MixedSocket, nodelay: bool) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.set_nodelay(s, nodelay))
    }

    fn nodelay(&self, socket: &MixedSocket) -> Result<bool, ErrorKind> {
        dispatch!(self, socket, |b, s| b.nodelay(s))
    }

    fn close(&self, socket: &MixedSocket, abort: bool) {
        dispatch!(self, socket, |b, s| b.close(s, abort))
    }
}

impl<D: Device + Send + 'static> netpoll_stack::DatagramBackend for MixedBackend<D> {
    fn bind_datagram(&self, addr: SocketAddr) -> Result<MixedSocket, ErrorKind> {
        match self {
            MixedBackend::Smol(b) => b.bind_datagram(addr).map(MixedSocket::Smol),
            MixedBackend::Kernel(b) => b.bind_datagram(addr).map(MixedSocket::Kernel),
        }
    }

    fn connect_datagram(&self, socket: &MixedSocket, addr: SocketAddr) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.connect_datagram(s, addr))
    }

    fn try_recv_from(
        &self,
        socket: &MixedSocket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError> {
        dispatch!(self, socket, |b, s| b.try_recv_from(s, buf))
    }

    fn try_send_to(
        &self,
        socket: &MixedSocket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_send_to(s, buf, to))
    }
}
