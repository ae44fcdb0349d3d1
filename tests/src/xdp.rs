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
use core::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use netpoll_drivers::netns::{self, ip};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, XdpDevice, XdpMode};
use netpoll_hosted::MixedNet;

use crate::mixed::{current_test, MixedBackend, MixedSocket};
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
        let test = current_test("XdpHarness");
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

/// The backend of this instance: smoltcp on the XdpDevice (the server side) or the kernel (the
/// client side).
pub type XdpBackend = MixedBackend<XdpDevice>;
/// A socket of a [`XdpBackend`].
pub type XdpSocket = MixedSocket;
