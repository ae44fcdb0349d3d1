//! netpoll-drivers: Go's network poller semantics on smoltcp, a userspace TCP/IP stack.
//!
//! This crate is the "no kernel TCP stack" engine of netpoll. It implements the two traits the
//! rest of netpoll is written against:
//!
//! * [`SmolSource`] is a `netpoll_core::ReadinessSource`: the scheduler's idle loop calls its
//!   `poll`, which *drives* smoltcp (bounded ingress, egress, smoltcp's own timers folded into
//!   the timeout) and reports generation-tagged readiness edges, found from smoltcp's socket
//!   wakers rather than by rescanning every socket (see below).
//! * [`SmolBackend`] is a `netpoll_core::SocketBackend`: the non-blocking socket operations
//!   that `netpoll_stack::{TcpListener, TcpStream}` loop over, so deadlines, close-while-blocked
//!   and the error shapes are exactly those of the kernel backend. `listen(backlog)` is a real
//!   bounded accept queue (a pool of smoltcp sockets; a SYN that finds it full evicts a
//!   half-open connection or is dropped, never reset).
//!
//! Both work over any `smoltcp::phy::Device`. What differs between devices is only how the
//! poller *waits* for ingress, the small [`Wait`] trait. Three devices ship here:
//!
//! * [`Wire`]: two devices joined by in-memory queues, with seeded loss and corruption, in
//!   simulated time ([`SimClock`]) or real time. [`WireNet`] builds two hosts on one scheduler.
//! * [`SimDevice`]: a port on a [`SimSwitch`]. [`SimNet`] builds N hosts on one switch with
//!   seeded per-link impairments, partitions and a trace hash, for deterministic tests.
//! * `TapDevice` (feature `tap`, Linux; see its docs): a TAP interface opened through `/dev/net/tun`,
//!   non-blocking, whose frames that cannot be written at once are queued and retried, and whose
//!   errors surface from the source's `poll` instead of panicking. `TapNet` bundles it.
//!
//! CAUTION: a userspace stack transmits only while it is driven. `close` returns once the socket
//! is handed over (as the kernel's does), but its unsent data and FIN leave only while some
//! scheduler keeps polling the host's [`SmolSource`]; a program that stops its scheduler right
//! after closing can cut the tail of a stream off. Closed sockets finish their handshake on
//! their own (aborted after [`Config::linger`] without progress).
//!
//! What it does not do: UDP, IP fragmentation, TCP Fast Open, `SO_REUSEPORT`; connecting to one
//! of the host's own addresses (smoltcp has no loopback path); closing the read half in TCP
//! terms (`shutdown(Read)` only ends local reads).
//!
//! # How edges are found without rescanning every socket
//!
//! smoltcp has no per-socket change report: `Interface::poll` only says "something changed".
//! Rescanning all sockets after every frame would make each frame cost O(sockets) twice over.
//! Instead, every smoltcp socket we create carries one `Waker` (smoltcp's `async` feature) in
//! both its receive and send registration. smoltcp wakes them on exactly the changes that can
//! turn a `WouldBlock` into progress: new in-order data, an ACK that frees send space, and every
//! state change (established, FIN, RST, timeout, reset). The waker pushes the socket's index
//! onto a dirty list; after each frame and after egress the host processes only the dirty
//! sockets: re-registers the waker (smoltcp's registration is one-shot), updates the sticky
//! flags (`fin`, `reset`, `refused`), and reports the edges a waiter armed for.
//!
//! Arming (Go's one-shot `netpollarm` on systems without edge triggering): a direction is armed when an
//! operation on it returned `WouldBlock`, and disarmed when its edge is reported. Every
//! operation tries before it waits, so an unarmed direction needs no report, and a socket
//! that stays readable while nobody waits produces no stream of events.
//!
//! # Matching frames to sockets in O(1)
//!
//! smoltcp's `Interface` walks every socket of the set it is given: for each incoming segment
//! (its TCP demux), for each egress pass, and for `poll_delay`. So every smoltcp socket here
//! lives in a socket set of its own, and the host does the rest itself (see
//! `docs/userspace-engine.md`):
//!
//! * **ingress**: each frame is parsed far enough to find its 4-tuple and looked up in a map;
//!   smoltcp then sees the frame together with that one socket. A SYN reaches a listening
//!   socket only for a 4-tuple that has no connection, so a late duplicate SYN draws its own
//!   connection's challenge ACK (RFC 9293) instead of a second handshake.
//! * **egress and timers**: each socket is filed in a timer queue under the instant smoltcp
//!   next wants it (data to send, retransmission, delayed ACK, TIME-WAIT); a pass polls only
//!   the due sockets.
//!
//! A frame thus costs O(log n) map and queue operations whatever the number of connections.
//!
//! # The listen backlog
//!
//! A listener is a pool of `backlog` smoltcp sockets listening on one port. A SYN takes a
//! `LISTEN` socket of the pool; `accept` takes an established one and puts a fresh listening
//! socket in its place. Half-open connections are bounded by the pool and expire
//! ([`Config::half_open_timeout`]); when no pool socket is free, a new SYN evicts a half-open
//! one whose SYN-ACK cannot even leave (its source never answers ARP: spoofed), else the oldest
//! one once it is older than twice the handshake time seen so far and than its first SYN-ACK
//! retransmission (1 s), else it is dropped (never
//! answered with an RST, as smoltcp alone would) and the client retransmits. See
//! [`HostStats::syns_dropped`] and [`HostStats::half_open_evicted`].
//!
//! # Building a scheduler and backend by hand
//!
//! ```
//! use netpoll_core::Scheduler;
//! use netpoll_drivers::{Config, Host, SimClock, SmolBackend, SmolSource, Side, Watch, Wire,
//!     WireConfig, WireWaiter};
//!
//! let clock = SimClock::new();
//! let wire = Wire::new(WireConfig::default());
//! let host = Host::new(wire.device(Side::A), Config::default(), clock.clone()).unwrap();
//! let source = SmolSource::new(WireWaiter::simulated(&wire, clock.clone(), Watch::Side(Side::A)))
//!     .with_host(host.clone());
//! let scheduler = Scheduler::new(source, clock);
//! let backend = SmolBackend::new(host, scheduler.handle().clone());
//! # let _ = backend;
//! ```
//!
//! With TAP (feature `tap`), the same shape: `TapDevice::open("tap0")`, its `waiter()`, a
//! `MonotonicClock`; or simply `TapNet::open("tap0", config)`.
//!
//! # Features
//!
//! * none (the default): `no_std` + `alloc`, builds for bare-metal targets; the in-memory
//!   wire and the simulated switch in simulated time.
//! * `std`: real time: `MonotonicClock`, threaded wire waiters (`WireNetBuilder::real_time`);
//!   pcap capture of a device's frames (`capture`, `PcapFile`).
//! * `tap` (Linux; implies `std`): `TapDevice`, `TapNet` and the `netns` test helpers.
//! * `xdp` (Linux; implies `std`): `XdpDevice`, an AF_XDP socket on an interface's queue 0
//!   (kernel bypass for that queue's frames), and `XdpNet` (see the `xdp` module).
//!
//! # Logging
//!
//! The engine reports through the [`log`](https://docs.rs/log) facade; without a logger
//! installed each event costs one check of a static level. Targets are this crate's module
//! paths (`netpoll_drivers::host::sockets`, ...), so `RUST_LOG=netpoll_drivers=debug` selects
//! them all under `env_logger`.
//!
//! * `debug`: a connection's life with its 4-tuple: listen, connect, connected, accept,
//!   closed by the peer (FIN), reset, refused, close, close with reset; a listener's close.
//! * `info`: a TAP device opened, its link going down (the kernel refuses frames) and up again;
//!   a simulated link partitioned or healed.
//! * `warn`: a listener's accept pool full, so half-open connections are evicted or SYNs
//!   dropped (at most once a second per listener, with counts); a device error (a failed TAP
//!   read or write, the interface gone).
//! * `trace`: per-frame drops: a SYN dropped, a half-open connection evicted, a queued
//!   connection reset before `accept`. Nothing is logged per frame at `debug` or above.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod backend;
mod clock;
mod config;
mod error;
mod frame;
mod host;
mod net;
#[cfg(feature = "tap")]
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
pub mod netns;
#[cfg(feature = "std")]
mod pcap;
pub mod sim;
mod source;
#[cfg(any(feature = "tap", feature = "xdp"))]
mod sys;
#[cfg(feature = "tap")]
mod tap;
#[cfg(feature = "virtio")]
pub mod virtio;
mod wait;
mod wire;
#[cfg(feature = "xdp")]
#[cfg_attr(docsrs, doc(cfg(feature = "xdp")))]
pub mod xdp;

pub use backend::{SmolBackend, SmolSocket};
#[cfg(feature = "std")]
pub use clock::MonotonicClock;
pub use clock::SimClock;
pub use config::Config;
pub use error::DriverError;
pub use host::{Host, HostStats, ResolveError};
pub use net::{WireNet, WireNetBuilder, WireScheduler, WIRE_ADDR_A, WIRE_ADDR_B};
#[cfg(feature = "std")]
pub use pcap::{capture, Captured, PcapFile};
pub use sim::{
    sim_ip, Impairments, SimDevice, SimNet, SimNetBuilder, SimScheduler, SimStats, SimSwitch,
    SimWaiter, SIM_MAX_HOSTS,
};
pub use source::SmolSource;
#[cfg(feature = "tap")]
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
pub use tap::{TapDevice, TapNet, TapScheduler, TapWaiter};
pub use wait::Wait;
pub use wire::{Faults, Side, Watch, Wire, WireConfig, WireDevice, WireStats, WireWaiter};
#[cfg(feature = "xdp")]
#[cfg_attr(docsrs, doc(cfg(feature = "xdp")))]
pub use xdp::{XdpDevice, XdpMode, XdpNet, XdpScheduler, XdpStats, XdpWaiter};

/// The smoltcp version this crate is built on, re-exported for its configuration types
/// (`IpCidr`, `EthernetAddress`, `Device`).
pub use smoltcp;
