//! An echo server on smoltcp over a TAP device (feature `tap`, Linux, needs `CAP_NET_ADMIN`).
//!
//! Run it inside a network namespace so nothing touches the host's network:
//!
//! ```text
//! ip netns add np && ip netns exec np bash
//! cargo run -p netpoll-drivers --features tap --example tap_echo -- tap0 10.0.0.2/24 &
//! ip addr add 10.0.0.1/24 dev tap0 && ip link set tap0 up && ip link set lo up
//! nc 10.0.0.2 7
//! exit; ip netns delete np
//! ```
//!
//! Arguments: the TAP name (default `tap0`) and smoltcp's address (default `10.0.0.2/24`). The
//! interface is created if it does not exist; bring it up once the program runs.

use core::net::SocketAddr;
use core::str::FromStr;

use netpoll_drivers::smoltcp::wire::IpCidr;
use netpoll_drivers::{Config, TapNet};
use netpoll_stack::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "tap0".into());
    let cidr = args.next().unwrap_or_else(|| "10.0.0.2/24".into());
    let cidr = match IpCidr::from_str(&cidr) {
        Ok(c) => c,
        Err(()) => {
            eprintln!("tap_echo: {cidr:?} is not an address with a prefix length");
            std::process::exit(2);
        }
    };
    let config = Config {
        addresses: vec![cidr],
        ..Config::default()
    };
    let mut net = match TapNet::open(&name, config) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("tap_echo: open {name}: {e}");
            std::process::exit(1);
        }
    };
    let backend = net.backend.clone();
    let handle = net.scheduler.handle().clone();
    let addr = SocketAddr::new(cidr.address().into(), 7);
    let result = net.scheduler.try_block_on(async move {
        let listener = TcpListener::bind(&backend, addr).expect("listen");
        println!("tap_echo: listening on {addr} via {name}");
        loop {
            let (conn, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tap_echo: accept: {e}");
                    continue;
                }
            };
            println!("tap_echo: connection from {peer}");
            handle.spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = conn.close().await;
            });
        }
    });
    if let Err(e) = result {
        eprintln!("tap_echo: {e}");
        std::process::exit(1);
    }
}
