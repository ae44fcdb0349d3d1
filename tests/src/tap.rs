//! The TAP instance: the server is smoltcp on a real TAP device, the client is the **kernel's**
//! TCP stack on the TAP's other side, both polled by one scheduler
//! ([`netpoll_hosted::MixedNet`]: the TAP wait also watches the epoll descriptor).
//!
//! Every case runs in a network namespace of its own: the harness re-runs the test binary
//! inside a fresh namespace (`ip netns exec NS <exe> <test> --exact`), where it opens TAP
//! `nptap0`, gives the kernel side 10.7.0.1/24, puts smoltcp on 10.7.0.2/24, runs the case,
//! and deletes the namespace afterwards. Namespace names carry the process id and a counter, so
//! cases run in parallel. No traffic leaves the namespace.
//!
//! Without the privileges this needs (root, iproute2, `/dev/net/tun`) a case skips with a
//! message, unless `CI=true`, where that is a failure.
//!
//! [`TapHarness`] is expanded by `tests/tests/tap.rs`:
//! `conformance_suite!(netpoll_conformance::tap::TapHarness)`.

use core::future::Future;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use netpoll_core::{Handle, Key};
use netpoll_drivers::netns::{self, ip};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, SmolBackend, SmolSocket, TapDevice};
use netpoll_hosted::{KernelBackend, KernelSocket, MixedNet};
use netpoll_stack::backend::Shutdown;
use netpoll_stack::{ErrorKind, SocketBackend, TryError};

use crate::{Env, Harness};

/// The TAP interface, created anew in each namespace.
const TAP: &str = "nptap0";
/// smoltcp's address: the server side.
pub const SMOL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
/// The kernel's address on the TAP: the client side.
pub const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
/// Runs a case in a fresh network namespace: server on smoltcp over TAP, client on the kernel
/// TCP stack, one scheduler ([`MixedNet`]).
#[derive(Debug)]
pub struct TapHarness;

impl Harness for TapHarness {
    type Backend = TapBackend;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<TapBackend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        netns::in_netns(&current_test(), "npconf", || run_inside(body));
    }
}

/// Inside the namespace: build the TAP, addresses and both backends, run the case.
fn run_inside<F, Fut>(body: F)
where
    F: FnOnce(Env<TapBackend>) -> Fut,
    Fut: Future<Output = ()>,
{
    let config = Config::with_address(
        IpCidr::new(SMOL_ADDR.into(), 24),
        EthernetAddress([0x02, 0, 0, 0x07, 0, 0x02]),
    );
    // One stream hands the network at most its send buffer plus the peer's receive buffer.
    // Either end may be the kernel, so the sum of both stacks' limits is a bound both ways.
    let max_buffered = crate::hosted::kernel_max_buffered() + config.tx_buffer + config.rx_buffer;
    let mut net = MixedNet::open(TAP, config).expect("open TAP device and the mixed scheduler");
    ip(&["link", "set", "lo", "up"]).expect("bring lo up");
    // Keep the link quiet: no IPv6 router solicitations or MLD reports for smoltcp to ignore.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    ip(&["addr", "add", &format!("{KERNEL_ADDR}/24"), "dev", TAP]).expect("address the TAP");
    ip(&["link", "set", TAP, "up"]).expect("bring the TAP up");
    let env = Env::new(
        TapBackend::Smol(net.smol.clone()),
        TapBackend::Kernel(net.kernel.clone()),
        IpAddr::V4(SMOL_ADDR),
        max_buffered,
    );
    net.scheduler.block_on(body(env));
}

/// The libtest name of the running test (libtest names each test's thread after it), which is
/// how the harness re-runs just this case inside a namespace.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => panic!("TapHarness runs only inside a #[test] (it re-runs the test by name)"),
    }
}

// ===== The backend: either stack =====

/// The backend of the TAP instance: smoltcp (the server side) or the kernel (the client
/// side). Both are polled by the same [`MixedNet`] scheduler, so one [`Env`] can hold them.
#[derive(Debug, Clone)]
pub enum TapBackend {
    /// smoltcp on the TAP device.
    Smol(SmolBackend<TapDevice>),
    /// Kernel sockets, polled through the mixed source's epoll half.
    Kernel(KernelBackend),
}

/// A socket of a [`TapBackend`]; always of the variant of the backend that made it.
#[derive(Debug)]
pub enum TapSocket {
    /// A smoltcp socket.
    Smol(SmolSocket),
    /// A kernel socket.
    Kernel(KernelSocket),
}

/// Runs `$e` with the backend and socket of the same stack bound to `$b` and `$s`.
macro_rules! dispatch {
    ($self:expr, $socket:expr, |$b:ident, $s:ident| $e:expr) => {
        match ($self, $socket) {
            (TapBackend::Smol($b), TapSocket::Smol($s)) => $e,
            (TapBackend::Kernel($b), TapSocket::Kernel($s)) => $e,
            _ => mismatch(),
        }
    };
}

/// A socket handed to the other stack's backend: the stack never does that (each socket goes
/// back to the backend that made it), so this is a harness bug.
#[track_caller]
fn mismatch() -> ! {
    panic!("TapBackend: a socket was used with the other stack's backend")
}

impl SocketBackend for TapBackend {
    type Socket = TapSocket;

    fn handle(&self) -> &Handle {
        match self {
            TapBackend::Smol(b) => b.handle(),
            TapBackend::Kernel(b) => b.handle(),
        }
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<TapSocket, ErrorKind> {
        match self {
            TapBackend::Smol(b) => b.listen(addr, backlog).map(TapSocket::Smol),
            TapBackend::Kernel(b) => b.listen(addr, backlog).map(TapSocket::Kernel),
        }
    }

    fn stream(&self, remote: SocketAddr) -> Result<TapSocket, ErrorKind> {
        match self {
            TapBackend::Smol(b) => b.stream(remote).map(TapSocket::Smol),
            TapBackend::Kernel(b) => b.stream(remote).map(TapSocket::Kernel),
        }
    }

    fn register(&self, socket: &TapSocket, key: Key) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.register(s, key))
    }

    fn deregister(&self, socket: &TapSocket) {
        dispatch!(self, socket, |b, s| b.deregister(s))
    }

    fn try_accept(&self, listener: &TapSocket) -> Result<(TapSocket, SocketAddr), TryError> {
        match (self, listener) {
            (TapBackend::Smol(b), TapSocket::Smol(l)) => {
                b.try_accept(l).map(|(s, peer)| (TapSocket::Smol(s), peer))
            }
            (TapBackend::Kernel(b), TapSocket::Kernel(l)) => b
                .try_accept(l)
                .map(|(s, peer)| (TapSocket::Kernel(s), peer)),
            _ => mismatch(),
        }
    }

    fn start_connect(&self, socket: &TapSocket, addr: SocketAddr) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.start_connect(s, addr))
    }

    fn finish_connect(&self, socket: &TapSocket) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.finish_connect(s))
    }

    fn try_read(&self, socket: &TapSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_read(s, buf))
    }

    fn try_read_drained(
        &self,
        socket: &TapSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        dispatch!(self, socket, |b, s| b.try_read_drained(s, buf))
    }

    fn edge_on_register(&self, socket: &TapSocket) -> bool {
        dispatch!(self, socket, |b, s| b.edge_on_register(s))
    }

    fn try_write(&self, socket: &TapSocket, buf: &[u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_write(s, buf))
    }

    fn shutdown(&self, socket: &TapSocket, how: Shutdown) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.shutdown(s, how))
    }

    fn local_addr(&self, socket: &TapSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.local_addr(s))
    }

    fn peer_addr(&self, socket: &TapSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.peer_addr(s))
    }

    fn set_nodelay(&self, socket: &TapSocket, nodelay: bool) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.set_nodelay(s, nodelay))
    }

    fn nodelay(&self, socket: &TapSocket) -> Result<bool, ErrorKind> {
        dispatch!(self, socket, |b, s| b.nodelay(s))
    }

    fn close(&self, socket: &TapSocket, abort: bool) {
        dispatch!(self, socket, |b, s| b.close(s, abort))
    }
}

impl netpoll_stack::DatagramBackend for TapBackend {
    fn bind_datagram(&self, addr: SocketAddr) -> Result<TapSocket, ErrorKind> {
        match self {
            TapBackend::Smol(b) => b.bind_datagram(addr).map(TapSocket::Smol),
            TapBackend::Kernel(b) => b.bind_datagram(addr).map(TapSocket::Kernel),
        }
    }

    fn connect_datagram(&self, socket: &TapSocket, addr: SocketAddr) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.connect_datagram(s, addr))
    }

    fn try_recv_from(
        &self,
        socket: &TapSocket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError> {
        dispatch!(self, socket, |b, s| b.try_recv_from(s, buf))
    }

    fn try_send_to(
        &self,
        socket: &TapSocket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_send_to(s, buf, to))
    }
}
