//! Host configuration: addresses, MAC, MTU, buffer sizes, backlog limit, budgets.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use smoltcp::socket::tcp::CongestionControl;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address, Ipv6Address};

use crate::error::DriverError;

/// The largest socket buffer [`Config::validate`] accepts.
const MAX_BUFFER: usize = 1 << 30;

/// How one smoltcp host (an `Interface` plus its sockets) is set up.
///
/// Every field has a working default ([`Config::default`]): `10.0.0.1/24`, MAC
/// `02:00:00:00:00:01`, MTU 1500, 8 KiB receive and 4 KiB send buffers per socket (about
/// 14 KiB per idle connection in all), a backlog limit of 128.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Ethernet address (ignored on an IP-medium device). Must be unicast.
    pub mac: EthernetAddress,
    /// The interface addresses with their prefix lengths (at most two: smoltcp's default
    /// `iface-max-addr-count`).
    pub addresses: Vec<IpCidr>,
    /// Default IPv4 route.
    pub gateway_v4: Option<Ipv4Address>,
    /// Default IPv6 route.
    pub gateway_v6: Option<Ipv6Address>,
    /// IP MTU of the devices the convenience constructors build ([`crate::Wire`],
    /// [`crate::WireNet`], the TAP device). A [`crate::Host`] itself uses whatever its device
    /// reports.
    pub mtu: usize,
    /// Receive buffer per TCP socket, in bytes (the largest window we advertise). smoltcp
    /// allocates both buffers when the socket is created and cannot grow them, so they are
    /// what an idle connection costs; raise them for bulk transfers over long paths (the
    /// window bounds throughput to `rx_buffer / RTT`). See BENCHMARKS.md for the trade-off.
    pub rx_buffer: usize,
    /// Send buffer per TCP socket, in bytes.
    pub tx_buffer: usize,
    /// Upper bound for a listener's backlog (Linux: `somaxconn`). A listener with backlog `n`
    /// keeps `n` smoltcp sockets, each with both buffers allocated, so this also bounds memory.
    pub max_backlog: u32,
    /// How long a half-open connection (SYN-RECEIVED) may wait for its peer's next segment
    /// before it is dropped and its pool socket listens again: smoltcp resends the SYN-ACK at
    /// 1, 3, 7 and 15 s, so the default of 30 s allows four retries (Linux: `tcp_synack_retries`,
    /// five retries, about 63 s).
    /// Independently, a SYN that finds no free pool socket may evict a half-open one (see the
    /// crate docs, "The listen backlog").
    pub half_open_timeout: Duration,
    /// Congestion control of each socket (smoltcp's `None`, `Reno` or `Cubic`).
    pub congestion_control: CongestionControl,
    /// Send TCP timestamps (RFC 7323) when the peer offers them.
    pub timestamps: bool,
    /// With data in flight and no ACK progress for this long, replay the peer's last ACK as
    /// duplicates so that smoltcp fast-retransmits at once instead of waiting for its 1 s
    /// minimum timeout (doubling while nothing improves; see `docs/userspace-engine.md`).
    /// `None` leaves loss recovery to smoltcp alone. Default 200 ms, Linux's minimum RTO.
    pub early_retransmit: Option<Duration>,
    /// Most frames taken from the device per host per poll (never an unbounded drain).
    pub ingress_budget: usize,
    /// Most segments each due socket sends per poll (smoltcp `poll_egress` rounds).
    pub egress_budget: usize,
    /// Local ports picked for connects and for listening on port 0, inclusive.
    pub ephemeral_ports: (u16, u16),
    /// How long a closed socket may keep retransmitting its FIN or unsent data before it is
    /// aborted (the socket's smoltcp timeout once it is orphaned).
    pub linger: Duration,
    /// Delayed-ACK time of each socket (smoltcp default: 10 ms; `None` acks at once).
    pub ack_delay: Option<Duration>,
    /// Datagrams a UDP socket can hold received and not yet read; more are dropped, as a
    /// full kernel receive buffer drops them.
    pub udp_rx_datagrams: usize,
    /// Payload bytes a UDP socket can hold received and not yet read.
    pub udp_rx_buffer: usize,
    /// Datagrams a UDP socket can hold queued to send.
    pub udp_tx_datagrams: usize,
    /// Payload bytes a UDP socket can hold queued to send: also the largest datagram it can
    /// send (larger is `MessageTooLong`), besides the MTU (no IP fragmentation).
    pub udp_tx_buffer: usize,
    /// DNS servers [`SmolBackend::resolve`](crate::SmolBackend::resolve) asks, in order (at
    /// most smoltcp's `DNS_MAX_SERVER_COUNT`, 4; more are ignored). Empty by default: name
    /// resolution is off and fails with [`ResolveError::NoDnsServer`](crate::ResolveError).
    pub dns_servers: Vec<IpAddress>,
    /// Seed for smoltcp's initial sequence numbers. Fixed by default so that runs are
    /// reproducible; give each boot its own for real networks.
    pub random_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            addresses: vec![IpCidr::new(Ipv4Address::new(10, 0, 0, 1).into(), 24)],
            gateway_v4: None,
            gateway_v6: None,
            mtu: 1500,
            rx_buffer: 8 * 1024,
            tx_buffer: 4 * 1024,
            max_backlog: 128,
            half_open_timeout: Duration::from_secs(30),
            congestion_control: CongestionControl::None,
            timestamps: false,
            early_retransmit: Some(Duration::from_millis(200)),
            ingress_budget: 64,
            egress_budget: 64,
            ephemeral_ports: (49152, 65535),
            linger: Duration::from_secs(30),
            ack_delay: Some(Duration::from_millis(10)),
            udp_rx_datagrams: 16,
            udp_rx_buffer: 16 * 1024,
            udp_tx_datagrams: 16,
            udp_tx_buffer: 16 * 1024,
            dns_servers: Vec::new(),
            random_seed: 0x6e65_7470_6f6c_6c00,
        }
    }
}

impl Config {
    /// Checks what `Host::new` would otherwise trip over.
    pub fn validate(&self) -> Result<(), DriverError> {
        if self.rx_buffer == 0 || self.tx_buffer == 0 {
            return Err(DriverError::InvalidConfig(
                "socket buffers must not be empty",
            ));
        }
        if self.rx_buffer > MAX_BUFFER || self.tx_buffer > MAX_BUFFER {
            // smoltcp's window scale tops out at 2^14 * 64 KiB; past 1 GiB a buffer is a typo.
            return Err(DriverError::InvalidConfig(
                "socket buffers larger than 1 GiB",
            ));
        }
        if self.udp_rx_datagrams == 0
            || self.udp_tx_datagrams == 0
            || self.udp_rx_buffer == 0
            || self.udp_tx_buffer == 0
        {
            return Err(DriverError::InvalidConfig("UDP buffers must not be empty"));
        }
        if self.udp_rx_buffer > MAX_BUFFER || self.udp_tx_buffer > MAX_BUFFER {
            return Err(DriverError::InvalidConfig("UDP buffers larger than 1 GiB"));
        }
        if self.max_backlog == 0 {
            return Err(DriverError::InvalidConfig("max_backlog must be at least 1"));
        }
        if self.half_open_timeout.is_zero() {
            return Err(DriverError::InvalidConfig(
                "half_open_timeout must not be zero",
            ));
        }
        Ok(())
    }

    /// The memory preset for small devices (a microcontroller with a heap of about 192 KiB):
    /// 4 KiB receive and 2 KiB send buffers per socket, a backlog limit of 4, and the defaults
    /// otherwise (address `10.0.0.1/24`: set `addresses` and `mac` per device).
    ///
    /// A listener holds `backlog` sockets with both buffers allocated, and each accepted
    /// connection is replaced in the pool by a fresh one, so a listener and `n` connections
    /// hold `backlog + n` server sockets of 6 KiB. `drivers/tests/small_config.rs` measures a
    /// listener and four echo connections, client and server hosts in one process, against a
    /// 192 KiB cap (about 100 KiB on x86_64; `Config::default()` needs 1.8 MiB for the same
    /// run, mostly its 128-socket backlog). The 4 KiB window bounds throughput to about
    /// `4 KiB / RTT`. smoltcp's neighbor cache and route table are fixed-size arrays chosen
    /// by its cargo features (`iface-neighbor-cache-count-*`, `iface-max-route-count-*`), not
    /// here.
    pub fn small() -> Self {
        Config {
            rx_buffer: 4 * 1024,
            tx_buffer: 2 * 1024,
            max_backlog: 4,
            ..Config::default()
        }
    }

    /// The default configuration with one address and MAC: a convenience for tests and
    /// examples.
    pub fn with_address(cidr: IpCidr, mac: EthernetAddress) -> Self {
        Config {
            mac,
            addresses: vec![cidr],
            ..Config::default()
        }
    }
}
