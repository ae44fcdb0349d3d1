//! The AF_XDP instance: the server is smoltcp on an AF_XDP socket bound to one end of a veth
//! pair, the client is the **kernel's** TCP stack on the other end, both polled by one
//! scheduler ([`netpoll_hosted::MixedNet`] over `netpoll_drivers::XdpDevice`: the socket's
//! wait also watches the epoll descriptor).
//!
//! Every case runs in a network namespace of its own (the harness re-runs the test binary
//! inside a fresh namespace, as the TAP instance does), where it creates veth pair `npxk`
//! (kernel, 10.6.0.1/24) / `npxs` (AF_XDP; smoltcp is 10.6.0.2/24), turns off the kernel
//! end's checksum and segmentation offloads (XDP sees a frame as the peer handed it, so a
//! checksum left to "hardware" would reach smoltcp unfilled), runs the case, and deletes the
//! namespace afterwards. No traffic leaves the namespace. The socket binds in copy mode (veth
//! has no zero-copy), with the program on veth's driver hook.
//!
//! Without the privileges this needs (root, iproute2, ethtool) a case skips with a message,
//! unless `CI=true`, where that is a failure.
//!
//! [`XdpHarness`] is expanded by `tests/tests/xdp.rs`:
//! `conformance_suite!(netpoll_conformance::xdp::XdpHarness)`.

use core::future::Future;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

use netpoll_core::{Handle, Key};
use netpoll_drivers::netns::{self, ip};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, SmolBackend, SmolSocket, XdpDevice, XdpMode};
use netpoll_hosted::{KernelBackend, KernelSocket, MixedNet};
use netpoll_stack::backend::Shutdown;
use netpoll_stack::{ErrorKind, SocketBackend, TryError};

use crate::{Env, Harness};

/// The veth end the AF_XDP socket binds to (no kernel address).
const XDP_END: &str = "npxs";
/// The veth end the kernel's stack uses.
const KERNEL_END: &str = "npxk";
/// smoltcp's address: the server side.
pub const SMOL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 6, 0, 2);
/// The kernel's address on the veth: the client side.
pub const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 6, 0, 1);

/// Runs a case in a fresh network namespace: server on smoltcp over AF_XDP, client on the
/// kernel TCP stack, one scheduler ([`MixedNet`]).
#[derive(Debug)]
pub struct XdpHarness;

impl Harness for XdpHarness {
    type Backend = XdpBackend;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<XdpBackend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let test = current_test();
        if std::env::var_os(netns::INSIDE).is_none() && !has_ethtool() {
            return netns::skip(
                &test,
                "no ethtool (needed to turn off the veth's checksum offload; apt-get install ethtool)",
            );
        }
        netns::in_netns(&test, "npxdp", || run_inside(body));
    }
}

fn has_ethtool() -> bool {
    Command::new("ethtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `ethtool ARGS`; the error says what failed.
fn ethtool(args: &[&str]) -> Result<(), String> {
    match Command::new("ethtool").args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ethtool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("ethtool {}: {e}", args.join(" "))),
    }
}

/// Inside the namespace: build the veth pair, addresses and both backends, run the case.
fn run_inside<F, Fut>(body: F)
where
    F: FnOnce(Env<XdpBackend>) -> Fut,
    Fut: Future<Output = ()>,
{
    let config = Config::with_address(
        IpCidr::new(SMOL_ADDR.into(), 24),
        EthernetAddress([0x02, 0, 0, 0x06, 0, 0x02]),
    );
    // One stream hands the network at most its send buffer plus the peer's receive buffer.
    // Either end may be the kernel, so the sum of both stacks' limits is a bound both ways.
    let max_buffered = crate::hosted::kernel_max_buffered() + config.tx_buffer + config.rx_buffer;
    ip(&["link", "set", "lo", "up"]).expect("bring lo up");
    ip(&[
        "link", "add", KERNEL_END, "type", "veth", "peer", "name", XDP_END,
    ])
    .expect("create the veth pair");
    for end in [KERNEL_END, XDP_END] {
        // Keep the link quiet: no IPv6 router solicitations or MLD reports for smoltcp.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
        ethtool(&[
            "-K", end, "tx", "off", "rx", "off", "gso", "off", "tso", "off", "gro", "off",
        ])
        .expect("turn the veth's offloads off");
    }
    ip(&[
        "addr",
        "add",
        &format!("{KERNEL_ADDR}/24"),
        "dev",
        KERNEL_END,
    ])
    .expect("address the veth");
    ip(&["link", "set", KERNEL_END, "up"]).expect("bring the kernel end up");
    ip(&["link", "set", XDP_END, "up"]).expect("bring the AF_XDP end up");
    let device = XdpDevice::open_with_mtu(XDP_END, config.mtu).expect("open the AF_XDP socket");
    assert_eq!(device.mode(), XdpMode::Copy, "veth has no zero-copy AF_XDP");
    let waiter = device.waiter();
    let mut net = MixedNet::with_waiter(device, config, |epoll| waiter.also_watch(epoll))
        .expect("build the mixed scheduler");
    let env = Env::new(
        XdpBackend::Smol(net.smol.clone()),
        XdpBackend::Kernel(net.kernel.clone()),
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
        _ => panic!("XdpHarness runs only inside a #[test] (it re-runs the test by name)"),
    }
}

// ===== The backend: either stack =====

/// The backend of the AF_XDP instance: smoltcp (the server side) or the kernel (the client
/// side). Both are polled by the same [`MixedNet`] scheduler, so one [`Env`] can hold them.
#[derive(Debug, Clone)]
pub enum XdpBackend {
    /// smoltcp on the AF_XDP socket.
    Smol(SmolBackend<XdpDevice>),
    /// Kernel sockets, polled through the mixed source's epoll half.
    Kernel(KernelBackend),
}

/// A socket of a [`XdpBackend`]; always of the variant of the backend that made it.
#[derive(Debug)]
pub enum XdpSocket {
    /// A smoltcp socket.
    Smol(SmolSocket),
    /// A kernel socket.
    Kernel(KernelSocket),
}

/// Runs `$e` with the backend and socket of the same stack bound to `$b` and `$s`.
macro_rules! dispatch {
    ($self:expr, $socket:expr, |$b:ident, $s:ident| $e:expr) => {
        match ($self, $socket) {
            (XdpBackend::Smol($b), XdpSocket::Smol($s)) => $e,
            (XdpBackend::Kernel($b), XdpSocket::Kernel($s)) => $e,
            _ => mismatch(),
        }
    };
}

/// A socket handed to the other stack's backend: the stack never does that (each socket goes
/// back to the backend that made it), so this is a harness bug.
#[track_caller]
fn mismatch() -> ! {
    panic!("XdpBackend: a socket was used with the other stack's backend")
}

impl SocketBackend for XdpBackend {
    type Socket = XdpSocket;

    fn handle(&self) -> &Handle {
        match self {
            XdpBackend::Smol(b) => b.handle(),
            XdpBackend::Kernel(b) => b.handle(),
        }
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<XdpSocket, ErrorKind> {
        match self {
            XdpBackend::Smol(b) => b.listen(addr, backlog).map(XdpSocket::Smol),
            XdpBackend::Kernel(b) => b.listen(addr, backlog).map(XdpSocket::Kernel),
        }
    }

    fn stream(&self, remote: SocketAddr) -> Result<XdpSocket, ErrorKind> {
        match self {
            XdpBackend::Smol(b) => b.stream(remote).map(XdpSocket::Smol),
            XdpBackend::Kernel(b) => b.stream(remote).map(XdpSocket::Kernel),
        }
    }

    fn register(&self, socket: &XdpSocket, key: Key) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.register(s, key))
    }

    fn deregister(&self, socket: &XdpSocket) {
        dispatch!(self, socket, |b, s| b.deregister(s))
    }

    fn try_accept(&self, listener: &XdpSocket) -> Result<(XdpSocket, SocketAddr), TryError> {
        match (self, listener) {
            (XdpBackend::Smol(b), XdpSocket::Smol(l)) => {
                b.try_accept(l).map(|(s, peer)| (XdpSocket::Smol(s), peer))
            }
            (XdpBackend::Kernel(b), XdpSocket::Kernel(l)) => b
                .try_accept(l)
                .map(|(s, peer)| (XdpSocket::Kernel(s), peer)),
            _ => mismatch(),
        }
    }

    fn start_connect(&self, socket: &XdpSocket, addr: SocketAddr) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.start_connect(s, addr))
    }

    fn finish_connect(&self, socket: &XdpSocket) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.finish_connect(s))
    }

    fn try_read(&self, socket: &XdpSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_read(s, buf))
    }

    fn try_read_drained(
        &self,
        socket: &XdpSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        dispatch!(self, socket, |b, s| b.try_read_drained(s, buf))
    }

    fn edge_on_register(&self, socket: &XdpSocket) -> bool {
        dispatch!(self, socket, |b, s| b.edge_on_register(s))
    }

    fn try_write(&self, socket: &XdpSocket, buf: &[u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_write(s, buf))
    }

    fn shutdown(&self, socket: &XdpSocket, how: Shutdown) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.shutdown(s, how))
    }

    fn local_addr(&self, socket: &XdpSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.local_addr(s))
    }

    fn peer_addr(&self, socket: &XdpSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.peer_addr(s))
    }

    fn set_nodelay(&self, socket: &XdpSocket, nodelay: bool) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.set_nodelay(s, nodelay))
    }

    fn nodelay(&self, socket: &XdpSocket) -> Result<bool, ErrorKind> {
        dispatch!(self, socket, |b, s| b.nodelay(s))
    }

    fn close(&self, socket: &XdpSocket, abort: bool) {
        dispatch!(self, socket, |b, s| b.close(s, abort))
    }
}

impl netpoll_stack::DatagramBackend for XdpBackend {
    fn bind_datagram(&self, addr: SocketAddr) -> Result<XdpSocket, ErrorKind> {
        match self {
            XdpBackend::Smol(b) => b.bind_datagram(addr).map(XdpSocket::Smol),
            XdpBackend::Kernel(b) => b.bind_datagram(addr).map(XdpSocket::Kernel),
        }
    }

    fn connect_datagram(&self, socket: &XdpSocket, addr: SocketAddr) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.connect_datagram(s, addr))
    }

    fn try_recv_from(
        &self,
        socket: &XdpSocket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError> {
        dispatch!(self, socket, |b, s| b.try_recv_from(s, buf))
    }

    fn try_send_to(
        &self,
        socket: &XdpSocket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_send_to(s, buf, to))
    }
}
