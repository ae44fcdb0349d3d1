//! The smoltcp instance over the in-memory wire: both ends are smoltcp hosts (10.0.0.1 serves,
//! 10.0.0.2 connects) joined by `netpoll_drivers::Wire`, one scheduler, simulated time.
//! Needs no privileges; runs everywhere.

use core::future::Future;
use core::net::IpAddr;

use netpoll_drivers::{Config, SmolBackend, WireDevice, WireNet, WIRE_ADDR_A};

use crate::{Env, Harness};

/// Runs a case on a fresh [`WireNet`] (two smoltcp hosts, one scheduler, simulated clock).
#[derive(Debug)]
pub struct WireHarness;

impl Harness for WireHarness {
    type Backend = SmolBackend<WireDevice>;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<Self::Backend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut net = WireNet::new();
        let config = Config::default();
        // One stream can hand the network at most its send buffer plus the peer's window.
        let max_buffered = config.tx_buffer + config.rx_buffer;
        let env = Env::new(
            net.a.clone(),
            net.b.clone(),
            IpAddr::V4(WIRE_ADDR_A),
            max_buffered,
        );
        net.scheduler.block_on(body(env));
    }
}
