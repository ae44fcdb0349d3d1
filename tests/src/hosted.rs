//! The hosted instances: kernel sockets polled by epoll (`netpoll-hosted`), both ends on
//! 127.0.0.1 under one [`Runtime`] per case: with two workers ([`HostedHarness`], the
//! multi-worker scheduler) and with one ([`HostedSingleHarness`]).

use core::future::Future;
use core::net::{IpAddr, Ipv4Addr};

use netpoll_hosted::{KernelBackend, Runtime};

use crate::{Env, Harness};

/// Runs a case on a fresh two-worker `netpoll_hosted::Runtime` (tasks run on two threads,
/// one polls epoll while the other parks or steals); server and client are the same kernel
/// backend, and every address is 127.0.0.1.
#[derive(Debug)]
pub struct HostedHarness;

impl Harness for HostedHarness {
    type Backend = KernelBackend;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<KernelBackend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        run_hosted(2, body);
    }
}

/// As [`HostedHarness`] on a single-worker runtime (one thread, the seed's design).
#[derive(Debug)]
pub struct HostedSingleHarness;

impl Harness for HostedSingleHarness {
    type Backend = KernelBackend;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<KernelBackend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        run_hosted(1, body);
    }
}

fn run_hosted<F, Fut>(workers: usize, body: F)
where
    F: FnOnce(Env<KernelBackend>) -> Fut,
    Fut: Future<Output = ()>,
{
    {
        let mut rt = Runtime::builder()
            .workers(workers)
            .build()
            .expect("create the hosted runtime (epoll, eventfd)");
        let backend = rt.backend().clone();
        let env = Env::new(
            backend.clone(),
            backend,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            kernel_max_buffered(),
        );
        rt.block_on(body(env));
    }
}

/// What a loopback stream can absorb with the peer not reading: at most the send buffer's
/// autotuning limit (`tcp_wmem` max) plus the receive buffer's (`tcp_rmem` max); the backend
/// sets neither `SO_SNDBUF` nor `SO_RCVBUF`.
pub(crate) fn kernel_max_buffered() -> usize {
    fn max_of(path: &str) -> Option<usize> {
        let s = std::fs::read_to_string(path).ok()?;
        s.split_whitespace().nth(2)?.parse().ok()
    }
    match (
        max_of("/proc/sys/net/ipv4/tcp_wmem"),
        max_of("/proc/sys/net/ipv4/tcp_rmem"),
    ) {
        (Some(w), Some(r)) => w + r,
        _ => 64 << 20,
    }
}
