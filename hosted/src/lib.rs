//! netpoll-hosted: netpoll on Linux, over the kernel's TCP stack.
//!
//! This crate is the OS half of the hosted engine. It provides:
//!
//! * [`EpollSource`]: the `ReadinessSource` (Go: `runtime/netpoll_epoll.go`): one epoll
//!   instance, every socket registered once with `EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET` under its
//!   pollDesc key, an eventfd notifier (level-triggered, drained only by blocking polls),
//!   `EINTR` handled, timeouts rounded up to whole milliseconds;
//! * [`KernelBackend`]: the `SocketBackend`: non-blocking, close-on-exec sockets, `accept4`,
//!   `TCP_NODELAY` on by default, `SO_REUSEADDR` on listeners, IPv4 and IPv6, `MSG_NOSIGNAL`;
//! * [`Runtime`]: what users start (`Runtime::new()?.block_on(async { ... })`) and the free
//!   functions [`spawn`], [`backend`], [`now`], [`sleep`] that work inside it;
//! * [`MixedNet`] (feature `tap`): one scheduler for kernel sockets and smoltcp over a TAP
//!   device at once ([`MixedSource`] blocks on the TAP device and the epoll descriptor
//!   together).
//!
//! # Features
//!
//! * `tap`: the userspace engine (`netpoll-drivers`, smoltcp) over a TAP device: [`MixedNet`]
//!   and `netpoll echo --backend tap`. Without it this crate pulls in neither smoltcp nor
//!   `netpoll-drivers`.
//! * `cli` (default): the `netpoll` and `netpoll-bench` binaries; implies `tap`. A library
//!   user who wants kernel sockets only depends on it with `default-features = false`.
//!
//! The state machine, scheduler and Go's I/O loops are not here: they are `netpoll-core` and
//! `netpoll-stack`, shared with the smoltcp engine. Unsafe code lives only under `sys/`.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the `tap` items, which a build without `tap` does not have.
#![cfg_attr(not(feature = "tap"), allow(rustdoc::broken_intra_doc_links))]

mod backend;
#[cfg(feature = "tap")]
mod mixed;
pub mod signal;
mod source;
mod sys;

mod resolve;
mod runtime;
mod tcp_ext;
mod udp;

pub use backend::{error_kind, KernelBackend, KernelSocket};
#[cfg(feature = "tap")]
#[cfg_attr(docsrs, doc(cfg(feature = "tap")))]
pub use mixed::{MixedError, MixedNet, MixedScheduler, MixedSource};
pub use netpoll_core::{yield_now, Elapsed, Handle, Instant, JoinHandle};
pub use netpoll_stack::{Error, ErrorKind, Op};
pub use resolve::{connect, connect_deadline, lookup_host};
pub use runtime::{
    backend, handle, now, sleep, spawn, timeout, timeout_at, Builder, MonotonicClock, Runtime,
};
pub use source::{EpollSource, EventFdNotifier, PollStats};
pub use tcp_ext::{IntoStdError, TcpListenerExt, TcpStreamExt};

/// A TCP listener on kernel sockets.
pub type TcpListener = netpoll_stack::TcpListener<KernelBackend>;
/// A TCP connection on kernel sockets.
pub type TcpStream = netpoll_stack::TcpStream<KernelBackend>;
/// A UDP socket on kernel sockets (`recvfrom` with `MSG_TRUNC`, so a datagram longer than
/// the buffer is reported, not cut silently).
///
/// ```no_run
/// use netpoll_hosted::{Runtime, UdpSocket};
///
/// Runtime::new().unwrap().block_on(async {
///     let socket = UdpSocket::bind(&netpoll_hosted::backend(), "127.0.0.1:0".parse().unwrap())?;
///     let mut buf = [0u8; 1500];
///     let (n, from) = socket.read_from(&mut buf).await?;
///     socket.write_to(&buf[..n], from).await?;
///     Ok::<_, netpoll_hosted::Error>(())
/// }).unwrap();
/// ```
pub type UdpSocket = netpoll_stack::UdpSocket<KernelBackend>;

/// Raises this process's soft open-file limit to the hard limit (servers with thousands of
/// connections need more than the usual 1,024). Returns the new limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    sys::socket::raise_nofile_limit()
}
