//! The IPv6 instances: the same TCP cases with every address an IPv6 one. Kernel sockets over
//! `[::1]` ([`HostedV6Harness`], two workers), and two smoltcp hosts on the in-memory wire
//! addressed `fd00:6e70::1` and `fd00:6e70::2` ([`WireV6Harness`]; the wire is in memory, so
//! the addresses reach nothing outside the test). Both stacks resolve neighbours over IPv6
//! (NDP) here, not ARP.

use core::future::Future;
use core::net::{IpAddr, Ipv6Addr};

use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, SmolBackend, WireDevice, WireNet};
use netpoll_hosted::{KernelBackend, Runtime};

use crate::{Env, Harness};

/// Host A's (the server's) address in [`WireV6Harness`]'s network.
pub const WIRE_V6_ADDR_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6e70, 0, 0, 0, 0, 0, 1);
/// Host B's (the client's) address in [`WireV6Harness`]'s network.
pub const WIRE_V6_ADDR_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6e70, 0, 0, 0, 0, 0, 2);

/// Runs a case on a fresh two-worker runtime with kernel sockets, every address `[::1]`.
#[derive(Debug)]
pub struct HostedV6Harness;

impl Harness for HostedV6Harness {
    type Backend = KernelBackend;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<KernelBackend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut rt = Runtime::builder()
            .workers(2)
            .build()
            .expect("create the hosted runtime (epoll, eventfd)");
        let backend = rt.backend().clone();
        let env = Env::new(
            backend.clone(),
            backend,
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            crate::hosted::kernel_max_buffered(),
        );
        rt.block_on(body(env));
    }
}

/// Runs a case on a fresh [`WireNet`] whose two smoltcp hosts have only IPv6 addresses
/// (`/64`), one scheduler, simulated time.
#[derive(Debug)]
pub struct WireV6Harness;

impl Harness for WireV6Harness {
    type Backend = SmolBackend<WireDevice>;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<Self::Backend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let host = |addr: Ipv6Addr, mac: [u8; 6], seed: u64| Config {
            random_seed: Config::default().random_seed ^ seed,
            ..Config::with_address(IpCidr::new(addr.into(), 64), EthernetAddress(mac))
        };
        let mut net = WireNet::builder()
            .config_a(host(WIRE_V6_ADDR_A, [0x02, 0, 0, 0, 0x06, 0x01], 0))
            .config_b(host(WIRE_V6_ADDR_B, [0x02, 0, 0, 0, 0x06, 0x02], 0xb))
            .build()
            .expect("build the IPv6 wire network");
        let config = Config::default();
        let max_buffered = config.tx_buffer + config.rx_buffer;
        let env = Env::new(
            net.a.clone(),
            net.b.clone(),
            IpAddr::V6(WIRE_V6_ADDR_A),
            max_buffered,
        );
        net.scheduler.block_on(body(env));
    }
}

/// Checks that instance `H` really runs over IPv6: both ends of a connection have IPv6
/// addresses, and bytes cross it.
pub fn check_both_ends_are_ipv6<H: Harness>() {
    use netpoll_stack::TcpStream;

    H::run(|env| async move {
        let listener = env.listen();
        let server_addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(&env.client, server_addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        for addr in [
            server_addr,
            peer,
            client.local_addr().unwrap(),
            server.peer_addr().unwrap(),
        ] {
            assert!(addr.is_ipv6(), "{addr}");
        }
        client.write_all(b"v6").await.unwrap();
        let mut buf = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            got += server.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(&buf, b"v6");
    });
}
