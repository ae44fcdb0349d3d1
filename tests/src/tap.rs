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
use core::net::{IpAddr, Ipv4Addr};

use netpoll_drivers::netns::{self, ip};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, TapDevice};
use netpoll_hosted::MixedNet;

use crate::mixed::{current_test, MixedBackend, MixedSocket};
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
        netns::in_netns(&current_test("TapHarness"), "npconf", || run_inside(body));
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

/// The backend of this instance: smoltcp on the TapDevice (the server side) or the kernel (the
/// client side).
pub type TapBackend = MixedBackend<TapDevice>;
/// A socket of a [`TapBackend`].
pub type TapSocket = MixedSocket;
