//! Ready-made setups: two smoltcp hosts on an in-memory wire under one scheduler.

use alloc::sync::Arc;
use core::net::{IpAddr, Ipv4Addr};

use netpoll_core::{Clock, Scheduler};
use smoltcp::wire::{EthernetAddress, IpCidr};

use crate::backend::SmolBackend;
use crate::clock::SimClock;
use crate::config::Config;
use crate::error::DriverError;
use crate::host::Host;
use crate::source::SmolSource;
use crate::wire::{Side, Watch, Wire, WireConfig, WireDevice, WireWaiter};

/// The scheduler type of a [`WireNet`].
pub type WireScheduler = Scheduler<SmolSource<WireDevice, WireWaiter>>;

/// Host A's address in a default [`WireNet`].
pub const WIRE_ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Host B's address in a default [`WireNet`].
pub const WIRE_ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Two smoltcp hosts joined by a [`Wire`], driven by one scheduler: listen on `a`, connect
/// from `b`, all in one process, without privileges.
///
/// ```
/// use netpoll_drivers::WireNet;
/// use netpoll_stack::{TcpListener, TcpStream};
///
/// let mut net = WireNet::new();
/// let (a, b) = (net.a.clone(), net.b.clone());
/// let addr = net.addr_a(7);
/// let handle = net.scheduler.handle().clone();
/// let got = net.scheduler.block_on(async move {
///     let listener = TcpListener::bind(&a, addr).unwrap();
///     let server = handle.spawn(async move {
///         let (conn, _) = listener.accept().await.unwrap();
///         let mut buf = [0u8; 5];
///         let n = conn.read(&mut buf).await.unwrap();
///         conn.write_all(&buf[..n]).await.unwrap();
///     });
///     let conn = TcpStream::connect(&b, addr).await.unwrap();
///     conn.write_all(b"hello").await.unwrap();
///     let mut buf = [0u8; 5];
///     let n = conn.read(&mut buf).await.unwrap();
///     server.await;
///     buf[..n].to_vec()
/// });
/// assert_eq!(got, b"hello");
/// ```
pub struct WireNet {
    /// The scheduler driving both hosts.
    pub scheduler: WireScheduler,
    /// Host A's backend (10.0.0.1 by default).
    pub a: SmolBackend<WireDevice>,
    /// Host B's backend (10.0.0.2 by default).
    pub b: SmolBackend<WireDevice>,
    /// The wire: statistics and fault injection.
    pub wire: Wire,
    /// The clock the scheduler and both hosts read.
    pub clock: Arc<dyn Clock>,
}

impl core::fmt::Debug for WireNet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WireNet")
            .field("scheduler", &self.scheduler)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

impl Default for WireNet {
    fn default() -> Self {
        WireNet::new()
    }
}

impl WireNet {
    /// Two default hosts (10.0.0.1/24 and 10.0.0.2/24) in simulated time.
    pub fn new() -> Self {
        match WireNetBuilder::default().build() {
            Ok(net) => net,
            // The defaults are valid; `build` only rejects user configuration.
            Err(e) => unreachable!("wire net: default configuration rejected: {e}"),
        }
    }

    /// A builder to change configurations, faults or the clock.
    pub fn builder() -> WireNetBuilder {
        WireNetBuilder::default()
    }

    /// `port` on host A's first address.
    pub fn addr_a(&self, port: u16) -> core::net::SocketAddr {
        core::net::SocketAddr::new(first_addr(self.a.host()), port)
    }

    /// `port` on host B's first address.
    pub fn addr_b(&self, port: u16) -> core::net::SocketAddr {
        core::net::SocketAddr::new(first_addr(self.b.host()), port)
    }
}

fn first_addr(host: &Host<WireDevice>) -> IpAddr {
    host.addresses()
        .first()
        .map(|c| c.address().into())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Builds a [`WireNet`].
#[derive(Debug, Clone)]
pub struct WireNetBuilder {
    a: Config,
    b: Config,
    wire: WireConfig,
    real_time: bool,
}

impl Default for WireNetBuilder {
    fn default() -> Self {
        WireNetBuilder {
            a: Config::with_address(
                IpCidr::new(WIRE_ADDR_A.into(), 24),
                EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            ),
            b: Config {
                random_seed: Config::default().random_seed ^ 0xb,
                ..Config::with_address(
                    IpCidr::new(WIRE_ADDR_B.into(), 24),
                    EthernetAddress([0x02, 0, 0, 0, 0, 0x02]),
                )
            },
            wire: WireConfig::default(),
            real_time: false,
        }
    }
}

impl WireNetBuilder {
    /// Host A's configuration.
    pub fn config_a(mut self, config: Config) -> Self {
        self.a = config;
        self
    }

    /// Host B's configuration.
    pub fn config_b(mut self, config: Config) -> Self {
        self.b = config;
        self
    }

    /// Changes both hosts' configuration with `f` (buffer sizes, budgets, ...).
    pub fn configure(mut self, f: impl Fn(&mut Config)) -> Self {
        f(&mut self.a);
        f(&mut self.b);
        self
    }

    /// The wire's configuration (MTU, queue size, faults).
    pub fn wire(mut self, wire: WireConfig) -> Self {
        self.wire = wire;
        self
    }

    /// Use the monotonic clock and a blocking waiter instead of simulated time (tasks on other
    /// threads may then use the backends).
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn real_time(mut self) -> Self {
        self.real_time = true;
        self
    }

    /// Builds the wire, both hosts, the scheduler and both backends.
    pub fn build(self) -> Result<WireNet, DriverError> {
        let wire = Wire::new(self.wire);
        let (clock, waiter): (Arc<dyn Clock>, WireWaiter) = if self.real_time {
            real_time(&wire)
        } else {
            let sim = SimClock::new();
            let waiter = WireWaiter::simulated(&wire, sim.clone(), Watch::Both);
            (sim, waiter)
        };
        let host_a = Host::new(wire.device(Side::A), self.a, clock.clone())?;
        let host_b = Host::new(wire.device(Side::B), self.b, clock.clone())?;
        let source = SmolSource::new(waiter)
            .with_host(host_a.clone())
            .with_host(host_b.clone());
        let scheduler = Scheduler::new(source, clock.clone());
        let handle = scheduler.handle().clone();
        Ok(WireNet {
            a: SmolBackend::new(host_a, handle.clone()),
            b: SmolBackend::new(host_b, handle),
            scheduler,
            wire,
            clock,
        })
    }
}

#[cfg(feature = "std")]
fn real_time(wire: &Wire) -> (Arc<dyn Clock>, WireWaiter) {
    (
        crate::clock::MonotonicClock::new(),
        WireWaiter::threaded(wire, Watch::Both),
    )
}

#[cfg(not(feature = "std"))]
fn real_time(wire: &Wire) -> (Arc<dyn Clock>, WireWaiter) {
    // Unreachable without `std`: `real_time()` does not exist there.
    let sim = SimClock::new();
    (sim.clone(), WireWaiter::simulated(wire, sim, Watch::Both))
}
