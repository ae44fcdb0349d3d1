//! One scheduler for kernel sockets **and** smoltcp over a TAP device at once.
//!
//! [`MixedSource`] explains how the TAP wait and epoll are combined; [`MixedNet`] builds the
//! scheduler and both backends, with an example.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use netpoll_core::{Clock, Events, Notifier, ReadinessSource, Scheduler};
use netpoll_drivers::smoltcp::phy::Device;
use netpoll_drivers::{
    Config, DriverError, Host, SmolBackend, SmolSource, TapDevice, TapWaiter, Wait,
};

use crate::backend::KernelBackend;
use crate::runtime::MonotonicClock;
use crate::source::{EpollSource, PollStats, Poller};

/// Why building or polling a [`MixedSource`] failed.
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
#[derive(Debug)]
#[non_exhaustive]
pub enum MixedError {
    /// The smoltcp side: the TAP device, its waiter, or the host configuration.
    Driver(DriverError),
    /// The kernel side: epoll, its eventfd, duplicating the epoll descriptor.
    Os(io::Error),
}

impl fmt::Display for MixedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixedError::Driver(e) => write!(f, "smoltcp over TAP: {e}"),
            MixedError::Os(e) => write!(f, "epoll: {e}"),
        }
    }
}

impl std::error::Error for MixedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MixedError::Driver(e) => Some(e),
            MixedError::Os(e) => Some(e),
        }
    }
}

impl From<DriverError> for MixedError {
    fn from(e: DriverError) -> Self {
        MixedError::Driver(e)
    }
}

impl From<io::Error> for MixedError {
    fn from(e: io::Error) -> Self {
        MixedError::Os(e)
    }
}

/// The readiness source of a [`MixedNet`]: smoltcp over TAP (blocking on the TAP fd, its
/// eventfd and the epoll fd), then a non-blocking harvest of epoll.
///
/// A [`Runtime`](crate::Runtime) polls epoll; a `netpoll_drivers::TapNet` polls a TAP device.
/// A program that talks to both (a userspace-stack service that also calls a kernel-side
/// database, a test with the kernel as one end and smoltcp as the other) needs one scheduler
/// whose idle wait ends on either. This is that readiness source:
///
/// 1. it drives smoltcp as `netpoll_drivers::SmolSource` does, and if nothing is pending,
///    blocks in `poll(2)` on the TAP fd, the TAP waiter's eventfd (the scheduler's notifier)
///    **and the epoll descriptor**, which is readable while any kernel socket has an edge
///    queued (`netpoll_drivers::TapWaiter::also_watch`);
/// 2. then it harvests epoll without blocking (`epoll_wait` with timeout 0, at most 128 events
///    per poll; a fuller ready list keeps the epoll fd readable, so the next poll returns at
///    once).
///
/// Neither side starves the other: a busy smoltcp poll returns without blocking and epoll is
/// still harvested; a kernel edge ends the TAP wait. Each kernel socket's edge is delivered by
/// epoll exactly as under the [`Runtime`](crate::Runtime) (edge-triggered, generation-tagged
/// keys), so the kernel backend behaves the same on both.
///
/// The scheduler's notifier is the TAP waiter's eventfd; the epoll instance's own eventfd is
/// never signalled here (a level-triggered wake-up that only a *blocking* `epoll_wait` drains
/// would keep the epoll fd readable and turn the TAP wait into a busy loop).
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
///
/// The device is a TAP one by default; any smoltcp device whose waiter can also watch the
/// epoll descriptor works the same (`netpoll_drivers::XdpDevice`, see [`MixedNet::with_waiter`]).
pub struct MixedSource<D: Device = TapDevice, W: Wait = TapWaiter> {
    smol: SmolSource<D, W>,
    epoll: EpollSource,
}

impl<D: Device, W: Wait> fmt::Debug for MixedSource<D, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MixedSource")
            .field("smol", &self.smol)
            .field("epoll", &self.epoll)
            .finish()
    }
}

impl<D: Device, W: Wait> MixedSource<D, W> {
    /// The epoll half's syscall counters (its `epoll_wait`s here never block).
    pub fn epoll_stats(&self) -> &PollStats {
        self.epoll.stats()
    }
}

impl<D: Device, W: Wait> ReadinessSource for MixedSource<D, W> {
    type Error = MixedError;

    fn poll(&self, timeout: Option<Duration>, events: &mut dyn Events) -> Result<(), MixedError> {
        // Blocks (when idle and allowed to) until a frame, a notify, the timeout, or a kernel
        // edge queued in epoll; then drives smoltcp again.
        self.smol.poll(timeout, events)?;
        // Whatever ended the wait, collect the kernel edges without blocking.
        self.epoll.poll(Some(Duration::ZERO), events)?;
        Ok(())
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        self.smol.notifier()
    }
}

/// The scheduler type of a [`MixedNet`].
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
pub type MixedScheduler<D = TapDevice, W = TapWaiter> = Scheduler<MixedSource<D, W>>;

/// A scheduler that polls a smoltcp host on a TAP device and kernel sockets at once, with a
/// socket backend for each. Tasks may use both: a smoltcp listener and a kernel stream in the
/// same `select`, say.
///
/// ```no_run
/// use netpoll_drivers::Config;
/// use netpoll_hosted::{MixedNet, TcpStream};
/// use netpoll_stack::TcpListener;
///
/// // Inside a network namespace with TAP `tap0` up, the kernel side 10.0.0.1/24 and
/// // smoltcp 10.0.0.2/24 (see the README's TAP walkthrough).
/// let config = Config::with_address(
///     "10.0.0.2/24".parse().unwrap(),
///     netpoll_drivers::smoltcp::wire::EthernetAddress([0x02, 0, 0, 0, 0, 0x02]),
/// );
/// let mut net = MixedNet::open("tap0", config).unwrap();
/// let (smol, kernel) = (net.smol.clone(), net.kernel.clone());
/// let handle = net.scheduler.handle().clone();
/// net.scheduler.block_on(async move {
///     // A smoltcp server...
///     let listener = TcpListener::bind(&smol, "10.0.0.2:7".parse().unwrap()).unwrap();
///     let server = handle.spawn(async move {
///         let (conn, _) = listener.accept().await.unwrap();
///         let mut buf = [0u8; 5];
///         let n = conn.read(&mut buf).await.unwrap();
///         conn.write_all(&buf[..n]).await.unwrap();
///         conn.close().await.unwrap();
///     });
///     // ...and a kernel client, through the TAP device, on the same scheduler.
///     let conn = TcpStream::connect(&kernel, "10.0.0.2:7".parse().unwrap()).await.unwrap();
///     conn.write_all(b"hello").await.unwrap();
///     server.await;
/// });
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
pub struct MixedNet<D: Device = TapDevice, W: Wait = TapWaiter> {
    /// The scheduler; run the application with `scheduler.block_on`.
    pub scheduler: MixedScheduler<D, W>,
    /// smoltcp sockets on the TAP device (`netpoll_stack::{TcpListener, TcpStream}`).
    pub smol: SmolBackend<D>,
    /// Kernel sockets, polled by this scheduler (not by a [`Runtime`](crate::Runtime)).
    pub kernel: KernelBackend,
    /// The smoltcp host (statistics).
    pub host: Host<D>,
    /// The clock the scheduler and the host read: [`MonotonicClock`], so instants agree with
    /// [`crate::now`].
    pub clock: Arc<dyn Clock>,
}

impl<D: Device, W: Wait> fmt::Debug for MixedNet<D, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MixedNet")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl MixedNet {
    /// Opens (creating if needed) TAP interface `name` with `config.mtu`, and builds the smoltcp
    /// host, an epoll instance, the scheduler polling both, and both backends.
    ///
    /// Needs `CAP_NET_ADMIN` for the TAP device; bring the interface up for frames to flow.
    pub fn open(name: &str, config: Config) -> Result<MixedNet, MixedError> {
        let device = TapDevice::open_with_mtu(name, config.mtu)?;
        MixedNet::with_device(device, config)
    }

    /// Builds everything on an opened TAP device.
    pub fn with_device(device: TapDevice, config: Config) -> Result<MixedNet, MixedError> {
        let waiter = device.waiter();
        MixedNet::with_waiter(device, config, |epoll_fd| waiter.also_watch(epoll_fd))
    }
}

impl<D: Device, W: Wait> MixedNet<D, W> {
    /// Builds everything on any opened smoltcp device: `waiter` receives a duplicate of the
    /// epoll descriptor and returns the device's waiter watching it too (for TAP,
    /// `|fd| device.waiter().also_watch(fd)`).
    pub fn with_waiter(
        device: D,
        config: Config,
        waiter: impl FnOnce(OwnedFd) -> W,
    ) -> Result<MixedNet<D, W>, MixedError> {
        let poller = Poller::new()?;
        // The waiter owns a duplicate: the epoll instance lives while either is open.
        let epoll_fd = poller.epoll.as_fd().try_clone_to_owned()?;
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let waiter = waiter(epoll_fd);
        let host = Host::new(device, config, clock.clone())?;
        let source = MixedSource {
            smol: SmolSource::new(waiter).with_host(host.clone()),
            epoll: EpollSource::new(poller.clone()),
        };
        let scheduler = Scheduler::new(source, clock.clone());
        let handle = scheduler.handle().clone();
        Ok(MixedNet {
            smol: SmolBackend::new(host.clone(), handle.clone()),
            kernel: KernelBackend::new(poller, handle),
            scheduler,
            host,
            clock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::SocketAddr;

    use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
    use netpoll_stack::{TcpListener, TcpStream};

    const TAP: &str = "npmix0";

    /// Runs `body` in a namespace of its own (see `netpoll_drivers::netns`).
    fn in_netns(test: &str, body: impl FnOnce()) {
        netpoll_drivers::netns::in_netns(test, "netpoll-mix", body)
    }

    /// `ip ARGS` succeeded.
    fn ip(args: &[&str]) -> bool {
        netpoll_drivers::netns::ip(args).is_ok()
    }

    /// The runtime's clock (`crate::now`) and the userspace engine's read one epoch: an
    /// instant from one lies between two readings of the other.
    #[test]
    fn runtime_and_engine_clocks_agree() {
        let before = netpoll_drivers::MonotonicClock.now();
        let runtime = crate::now();
        let after = netpoll_drivers::MonotonicClock.now();
        assert!(
            before <= runtime && runtime <= after,
            "engine {before:?}, runtime {runtime:?}, engine {after:?}"
        );
    }

    #[test]
    fn invalid_tap_name_is_an_error() {
        let e = MixedNet::open("a-name-far-too-long-for-ifnamsiz", Config::default())
            .expect_err("too long");
        assert!(
            matches!(e, MixedError::Driver(DriverError::InvalidConfig(_))),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("smoltcp over TAP"), "{e}");
    }

    /// One scheduler, three paths: a kernel pair on loopback whose data arrives (from another
    /// thread) while the scheduler sleeps in the TAP wait (the epoll fd must end it), then a
    /// kernel client to a smoltcp server through the TAP device, and a smoltcp client to a
    /// kernel server.
    #[test]
    fn kernel_and_smoltcp_share_one_scheduler() {
        in_netns(
            "mixed::tests::kernel_and_smoltcp_share_one_scheduler",
            share_one_scheduler,
        );
    }

    fn share_one_scheduler() {
        let config = Config::with_address(
            IpCidr::new(Ipv4Address::new(10, 7, 0, 2).into(), 24),
            EthernetAddress([0x02, 0, 0, 0x07, 0, 0x02]),
        );
        let mut net = MixedNet::open(TAP, config).expect("open the mixed net");
        assert!(ip(&["link", "set", "lo", "up"]));
        let (smol, kernel) = (net.smol.clone(), net.kernel.clone());
        let handle = net.scheduler.handle().clone();

        // First, with the TAP link still down (no frame and no smoltcp timer can end a wait): a
        // kernel accept and read on loopback must wake on epoll edges alone, long before their
        // 5 s deadline, while the scheduler sleeps in the TAP wait.
        let (k, h) = (kernel.clone(), handle.clone());
        let elapsed = net.scheduler.block_on(async move {
            let listener = TcpListener::bind(&k, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                s.write_all(b"x").unwrap();
                let mut b = [0u8; 1];
                let _ = s.read(&mut b);
            });
            let t0 = h.now();
            let deadline = Some(t0 + Duration::from_secs(5));
            listener.set_deadline(deadline).unwrap();
            let (conn, _) = listener.accept().await.unwrap();
            conn.set_read_deadline(deadline).unwrap();
            let mut b = [0u8; 1];
            assert_eq!(conn.read(&mut b).await.unwrap(), 1);
            let elapsed = h.now() - t0;
            conn.close().await.unwrap();
            listener.close().await.unwrap();
            writer.join().unwrap();
            elapsed
        });
        assert!(
            elapsed < Duration::from_secs(2),
            "a kernel edge took {elapsed:?} to end the TAP wait"
        );

        assert!(ip(&["addr", "add", "10.7.0.1/24", "dev", TAP]));
        assert!(ip(&["link", "set", TAP, "up"]));
        net.scheduler.block_on(async move {
            // smoltcp server, kernel client, through the TAP.
            let smol_addr: SocketAddr = "10.7.0.2:7000".parse().unwrap();
            let listener = TcpListener::bind(&smol, smol_addr).unwrap();
            let server = handle.spawn(async move {
                let (conn, peer) = listener.accept().await.unwrap();
                assert_eq!(peer.ip().to_string(), "10.7.0.1");
                let mut buf = [0u8; 5];
                let mut got = 0;
                while got < 5 {
                    got += conn.read(&mut buf[got..]).await.unwrap();
                }
                conn.write_all(&buf).await.unwrap();
                conn.close().await.unwrap();
                listener.close().await.unwrap();
            });
            let conn = TcpStream::connect(&kernel, smol_addr).await.unwrap();
            conn.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            let mut got = 0;
            while got < 5 {
                got += conn.read(&mut buf[got..]).await.unwrap();
            }
            assert_eq!(&buf, b"hello");
            server.await;
            conn.close().await.unwrap();

            // smoltcp client, kernel server, through the TAP.
            let kernel_addr: SocketAddr = "10.7.0.1:7001".parse().unwrap();
            let listener = TcpListener::bind(&kernel, kernel_addr).unwrap();
            let (client, accepted) =
                futures::future::join(TcpStream::connect(&smol, kernel_addr), listener.accept())
                    .await;
            let (client, (accepted, _)) = (client.unwrap(), accepted.unwrap());
            client.write_all(b"world").await.unwrap();
            let mut buf = [0u8; 5];
            let mut got = 0;
            while got < 5 {
                got += accepted.read(&mut buf[got..]).await.unwrap();
            }
            assert_eq!(&buf, b"world");
            client.close().await.unwrap();
            accepted.close().await.unwrap();
            listener.close().await.unwrap();
        });
    }
}
