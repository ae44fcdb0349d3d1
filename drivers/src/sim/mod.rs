//! A deterministic simulated network: N smoltcp hosts on one in-memory switch, one scheduler,
//! one thread, simulated time, seeded impairments per link direction.
//!
//! The idea is turmoil's, with a real TCP stack underneath: your server and client run on the
//! normal `netpoll_stack::{TcpListener, TcpStream}` API over [`SmolBackend`]s, while the
//! [`SimSwitch`] loses, delays, reorders, duplicates and corrupts their frames, partitions
//! links or holds them. Nothing reads a real clock: when every task is parked, the
//! [`SimWaiter`] advances the [`SimClock`] straight to the next timer or frame delivery, so a
//! 30 s partition costs microseconds and TCP's 1 s minimum retransmission timeout costs
//! nothing.
//!
//! **Determinism**: every random choice comes from the seed given to the builder (the links'
//! fault generators and each host's TCP initial sequence numbers), the scheduler runs tasks in
//! a fixed order on one thread, and the switch delivers frames in (time, send order). The same
//! seed and the same program give the same run, frame for frame; [`SimSwitch::trace_hash`]
//! proves it. See `docs/simulation.md` for the model and how to replay a failing seed.
//!
//! Host `i` (from 0) has the address `10.0.0.(i+1)/24` and the MAC `02:00:0a:00:00:(i+1)`.
//!
//! ```
//! use core::time::Duration;
//! use netpoll_drivers::{Impairments, SimDevice, SimNet, SmolBackend};
//! use netpoll_stack::{TcpListener, TcpStream};
//!
//! async fn read_n(conn: &TcpStream<SmolBackend<SimDevice>>, n: usize) -> Vec<u8> {
//!     let mut buf = vec![0u8; n];
//!     let mut got = 0;
//!     while got < n {
//!         got += conn.read(&mut buf[got..]).await.unwrap();
//!     }
//!     buf
//! }
//!
//! let lossy = Impairments {
//!     loss_ppm: 50_000, // 5 %
//!     delay: Duration::from_millis(2),
//!     jitter: Duration::from_millis(1),
//!     ..Impairments::NONE
//! };
//! let mut net = SimNet::builder(2).seed(7).impairments(lossy).build().unwrap();
//! let (server, client) = (net.host(0).clone(), net.host(1).clone());
//! let addr = net.addr(0, 80);
//! let switch = net.switch.clone();
//! let handle = net.handle().clone();
//! net.block_on(async move {
//!     let listener = TcpListener::bind(&server, addr).unwrap();
//!     handle.spawn(async move {
//!         let (conn, _) = listener.accept().await.unwrap();
//!         let mut buf = [0u8; 64];
//!         while let Ok(n @ 1..) = conn.read(&mut buf).await {
//!             conn.write_all(&buf[..n]).await.unwrap();
//!         }
//!     });
//!     let conn = TcpStream::connect(&client, addr).await.unwrap();
//!     conn.write_all(b"hello").await.unwrap();
//!     assert_eq!(read_n(&conn, 5).await, b"hello");
//!     switch.partition(0, 1);
//!     conn.write_all(b"ping").await.unwrap(); // buffered: nothing crosses
//!     handle.sleep(Duration::from_secs(30)).await; // simulated time: instant
//!     switch.repair(0, 1); // TCP's next retransmission gets through
//!     assert_eq!(read_n(&conn, 4).await, b"ping");
//! });
//! assert!(net.switch.stats().partitioned > 0);
//! println!("seed {} trace {:016x}", net.seed(), net.switch.trace_hash());
//! ```

mod device;
mod switch;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::net::{Ipv4Addr, SocketAddr};

use netpoll_core::sched::RunError;
use netpoll_core::{Handle, Instant, Scheduler};
use smoltcp::wire::{EthernetAddress, IpCidr};

pub use device::{SimDevice, SimWaiter};
pub use switch::{Impairments, SimStats, SimSwitch};

use crate::backend::SmolBackend;
use crate::clock::SimClock;
use crate::config::Config;
use crate::error::DriverError;
use crate::host::Host;
use crate::source::SmolSource;

/// The scheduler type of a [`SimNet`].
pub type SimScheduler = Scheduler<SmolSource<SimDevice, SimWaiter>>;

/// The most hosts a [`SimNet`] can have: one /24.
pub const SIM_MAX_HOSTS: usize = 254;

/// Host `i`'s address in a [`SimNet`]: `10.0.0.(i+1)`.
///
/// # Panics
///
/// If `i >= SIM_MAX_HOSTS`.
pub fn sim_ip(i: usize) -> Ipv4Addr {
    assert!(
        i < SIM_MAX_HOSTS,
        "host {i}: a SimNet has at most 254 hosts"
    );
    Ipv4Addr::new(10, 0, 0, (i + 1) as u8)
}

/// N smoltcp hosts on one [`SimSwitch`], driven by one scheduler in simulated time. See the
/// [module documentation](self) for the model and an example.
pub struct SimNet {
    /// The scheduler driving every host.
    pub scheduler: SimScheduler,
    /// The switch: impairments, partitions, holds, counters, the trace hash.
    pub switch: SimSwitch,
    /// The clock the scheduler, the hosts and the switch read.
    pub clock: Arc<SimClock>,
    backends: Vec<SmolBackend<SimDevice>>,
    seed: u64,
}

impl core::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimNet")
            .field("hosts", &self.backends.len())
            .field("seed", &self.seed)
            .field("now", &self.now())
            .field("switch", &self.switch)
            .finish_non_exhaustive()
    }
}

impl SimNet {
    /// `hosts` hosts on perfect links, seeded with `seed`.
    ///
    /// # Panics
    ///
    /// If `hosts` is 0 or more than [`SIM_MAX_HOSTS`].
    pub fn new(hosts: usize, seed: u64) -> SimNet {
        match SimNet::builder(hosts).seed(seed).build() {
            Ok(net) => net,
            Err(e) => panic!("SimNet::new({hosts}, {seed}): {e}"),
        }
    }

    /// A builder for `hosts` hosts (impairments, per-host configuration, seed).
    pub fn builder(hosts: usize) -> SimNetBuilder {
        SimNetBuilder::new(hosts)
    }

    /// Host `i`'s backend: bind and connect on it with `TcpListener` / `TcpStream`.
    ///
    /// # Panics
    ///
    /// If there is no host `i`.
    pub fn host(&self, i: usize) -> &SmolBackend<SimDevice> {
        &self.backends[i]
    }

    /// Every host's backend, in host order.
    pub fn hosts(&self) -> &[SmolBackend<SimDevice>] {
        &self.backends
    }

    /// Host `i`'s IPv4 address (`10.0.0.(i+1)` unless reconfigured).
    ///
    /// # Panics
    ///
    /// If there is no host `i`, or it has no IPv4 address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.backends[i]
            .host()
            .addresses()
            .iter()
            .find_map(|c| match c.address() {
                smoltcp::wire::IpAddress::Ipv4(a) => Some(a),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .unwrap_or_else(|| panic!("host {i} has no IPv4 address"))
    }

    /// `port` on host `i`'s address.
    pub fn addr(&self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(i).into(), port)
    }

    /// The scheduler's handle (spawn tasks, sleep, read the clock).
    pub fn handle(&self) -> &Handle {
        self.scheduler.handle()
    }

    /// The seed this network was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulated time now.
    pub fn now(&self) -> Instant {
        self.switch.now()
    }

    /// Runs `future` to completion on the scheduler, with every host driven meanwhile.
    ///
    /// # Panics
    ///
    /// If the run fails: a deadlock (every task parked, no timer, no frame in flight) or a
    /// panicking task. Use [`SimNet::try_block_on`] to see the error instead.
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        self.scheduler.block_on(future)
    }

    /// Runs `future` to completion, or returns why the scheduler stopped (a
    /// [`DriverError::Deadlock`], a panicked task).
    pub fn try_block_on<F: Future>(
        &mut self,
        future: F,
    ) -> Result<F::Output, RunError<DriverError>> {
        self.scheduler.try_block_on(future)
    }
}

/// Builds a [`SimNet`].
#[derive(Debug, Clone)]
pub struct SimNetBuilder {
    configs: Vec<Config>,
    seed: u64,
    default: Impairments,
    links: Vec<(usize, usize, Impairments)>,
    max_in_flight: usize,
}

impl SimNetBuilder {
    fn new(hosts: usize) -> SimNetBuilder {
        let configs = (0..hosts.min(SIM_MAX_HOSTS))
            .map(|i| {
                let n = (i + 1) as u8;
                Config::with_address(
                    IpCidr::new(sim_ip(i).into(), 24),
                    EthernetAddress([0x02, 0, 0x0a, 0, 0, n]),
                )
            })
            .collect();
        SimNetBuilder {
            configs: if hosts > SIM_MAX_HOSTS {
                // Rejected by `build`.
                Vec::new()
            } else {
                configs
            },
            seed: 0,
            default: Impairments::NONE,
            links: Vec::new(),
            max_in_flight: 1 << 16,
        }
    }

    /// The seed of every random choice (link faults, TCP initial sequence numbers). Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The impairments of every link direction not set by [`SimNetBuilder::link`].
    pub fn impairments(mut self, imp: Impairments) -> Self {
        self.default = imp;
        self
    }

    /// The impairments of the link `from → to` (one direction).
    pub fn link(mut self, from: usize, to: usize, imp: Impairments) -> Self {
        self.links.push((from, to, imp));
        self
    }

    /// Changes host configurations with `f(host number, config)` (buffer sizes, linger, MTU,
    /// addresses, ...). The seed still overrides `random_seed`.
    pub fn configure(mut self, f: impl Fn(usize, &mut Config)) -> Self {
        for (i, c) in self.configs.iter_mut().enumerate() {
            f(i, c);
        }
        self
    }

    /// Most frames in flight towards one host before more are dropped (a NIC ring's size;
    /// default 65536, so in practice TCP's windows bound it).
    pub fn max_in_flight(mut self, frames: usize) -> Self {
        self.max_in_flight = frames;
        self
    }

    /// Builds the switch, the hosts, the scheduler and the backends.
    ///
    /// Fails with [`DriverError::InvalidConfig`] for 0 or more than [`SIM_MAX_HOSTS`] hosts, a
    /// link to a host that does not exist or to itself, or a host configuration smoltcp
    /// rejects.
    pub fn build(self) -> Result<SimNet, DriverError> {
        if self.configs.is_empty() {
            return Err(DriverError::InvalidConfig(
                "a SimNet has between 1 and 254 hosts",
            ));
        }
        let n = self.configs.len();
        if self
            .links
            .iter()
            .any(|&(from, to, _)| from >= n || to >= n || from == to)
        {
            return Err(DriverError::InvalidConfig(
                "link between hosts that do not exist, or from a host to itself",
            ));
        }
        let clock = SimClock::new();
        let macs = self.configs.iter().map(|c| c.mac.0).collect();
        let switch = SimSwitch::new(
            clock.clone(),
            macs,
            self.seed,
            self.default,
            self.max_in_flight,
        );
        for &(from, to, imp) in &self.links {
            switch.set_impairments(from, to, imp);
        }
        let mut source = SmolSource::new(SimWaiter::new(&switch));
        let mut hosts = Vec::with_capacity(n);
        for (i, mut config) in self.configs.into_iter().enumerate() {
            // Per-host initial sequence numbers, from the one seed.
            config.random_seed = switch::splitmix(self.seed ^ switch::splitmix(i as u64));
            let device = SimDevice::new(&switch, i, config.mtu);
            let host = Host::new(device, config, clock.clone())?;
            source.add_host(host.clone());
            hosts.push(host);
        }
        let scheduler = Scheduler::new(source, clock.clone());
        let handle = scheduler.handle().clone();
        let backends = hosts
            .into_iter()
            .map(|h| SmolBackend::new(h, handle.clone()))
            .collect();
        Ok(SimNet {
            scheduler,
            switch,
            clock,
            backends,
            seed: self.seed,
        })
    }
}
