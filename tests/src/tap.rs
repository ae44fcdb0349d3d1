//! The TAP instance: the server is smoltcp on a real TAP device, the client is the **kernel's**
//! TCP stack on the TAP's other side, both polled by one scheduler
//! ([`netpoll_hosted::MixedNet`]: the TAP wait also watches the epoll descriptor).
//!
//! Every case runs in a network namespace of its own: the harness re-runs the test binary
//! inside a fresh namespace (`ip netns exec NS <exe> <test> --exact`), where it opens TAP
//! `nptap0`, gives the kernel side 10.7.0.1/24, puts smoltcp on 10.7.0.2/24, runs the case,
//! and deletes the namespace afterwards. Namespace names carry the process id and a counter, so
//! cases run in parallel. No traffic leaves the namespace.
//!
//! Without the privileges this needs (root, iproute2, `/dev/net/tun`) a case skips with a
//! message, unless `CI=true`, where that is a failure.
//!
//! [`TapHarness`] is expanded by `tests/tests/tap.rs`:
//! `conformance_suite!(netpoll_conformance::tap::TapHarness)`.

use core::future::Future;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netpoll_core::{Handle, Key};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, SmolBackend, SmolSocket, TapDevice};
use netpoll_hosted::{KernelBackend, KernelSocket, MixedNet};
use netpoll_stack::backend::Shutdown;
use netpoll_stack::{ErrorKind, SocketBackend, TryError};

use crate::{Env, Harness};

/// Set (to the namespace's name) in the re-run test binary: "you are inside, run the case".
const INSIDE: &str = "NETPOLL_CONFORMANCE_NETNS";
/// The TAP interface, created anew in each namespace.
const TAP: &str = "nptap0";
/// smoltcp's address: the server side.
pub const SMOL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
/// The kernel's address on the TAP: the client side.
pub const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
/// How long the outer test waits for the re-run binary before killing it (the case's own
/// watchdog, [`crate::WATCHDOG`], fires well before).
const OUTER_LIMIT: Duration = Duration::from_secs(90);

/// Runs a case in a fresh network namespace: server on smoltcp over TAP, client on the kernel
/// TCP stack, one scheduler ([`MixedNet`]).
#[derive(Debug)]
pub struct TapHarness;

impl Harness for TapHarness {
    type Backend = TapBackend;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<TapBackend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        if std::env::var_os(INSIDE).is_some() {
            run_inside(body);
        } else {
            run_outside();
        }
    }
}

/// Inside the namespace: build the TAP, addresses and both backends, run the case.
fn run_inside<F, Fut>(body: F)
where
    F: FnOnce(Env<TapBackend>) -> Fut,
    Fut: Future<Output = ()>,
{
    let config = Config::with_address(
        IpCidr::new(SMOL_ADDR.into(), 24),
        EthernetAddress([0x02, 0, 0, 0x07, 0, 0x02]),
    );
    // One stream hands the network at most its send buffer plus the peer's receive buffer.
    // Either end may be the kernel, so the sum of both stacks' limits is a bound both ways.
    let max_buffered = crate::hosted::kernel_max_buffered() + config.tx_buffer + config.rx_buffer;
    let mut net = MixedNet::open(TAP, config).expect("open TAP device and the mixed scheduler");
    ip(&["link", "set", "lo", "up"]).expect("bring lo up");
    // Keep the link quiet: no IPv6 router solicitations or MLD reports for smoltcp to ignore.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    ip(&["addr", "add", &format!("{KERNEL_ADDR}/24"), "dev", TAP]).expect("address the TAP");
    ip(&["link", "set", TAP, "up"]).expect("bring the TAP up");
    let env = Env::new(
        TapBackend::Smol(net.smol.clone()),
        TapBackend::Kernel(net.kernel.clone()),
        IpAddr::V4(SMOL_ADDR),
        max_buffered,
    );
    net.scheduler.block_on(body(env));
}

/// Outside: re-run this very test inside a fresh namespace, then delete the namespace.
fn run_outside() {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.to_owned(),
        // libtest names each test's thread after the test; that is how we re-run just it.
        _ => panic!("TapHarness runs only inside a #[test] (it re-runs the test by name)"),
    };
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip(&test, "no /dev/net/tun");
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "npconf-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(e) = ip(&["netns", "add", &ns]) {
        return skip(
            &test,
            &format!("cannot create a network namespace (needs root and iproute2): {e}"),
        );
    }
    let netns = Netns(ns);
    let result = run_in(&netns.0, &test);
    drop(netns);
    let (ok, stdout, stderr) = result;
    // Shown when the test fails (libtest captures this thread's output).
    eprint!("--- inside the namespace ---\n{stdout}{stderr}");
    assert!(ok, "{test} failed inside its network namespace");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test} did not run inside its namespace (test name not found?)"
    );
}

/// Runs `<exe> <test> --exact` in namespace `ns`, at most [`OUTER_LIMIT`]. Returns (passed,
/// stdout, stderr).
fn run_in(ns: &str, test: &str) -> (bool, String, String) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, ns)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test inside its namespace");
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for the inner test") {
            Some(status) => break Some(status),
            None if start.elapsed() > OUTER_LIMIT => {
                // Our own child, by its handle (pid).
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\nkilled after {OUTER_LIMIT:?}\n"));
    }
    (status.is_some_and(|s| s.success()), stdout, stderr)
}

/// Deletes the namespace when dropped, whatever happened.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.0]) {
            eprintln!("could not delete network namespace {}: {e}", self.0);
        }
    }
}

/// Runs `ip ARGS`; the error says what failed.
fn ip(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("ip {}: {e}", args.join(" "))),
    }
}

/// Outside CI a case without the privileges it needs skips with a message; in CI (`CI=true`,
/// which runs as root) that is a failure, never a silent skip.
fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; CI must run the TAP conformance suite");
    }
    eprintln!("SKIP {test}: {why}");
}

// ===== The backend: either stack =====

/// The backend of the TAP instance: smoltcp (the server side) or the kernel (the client
/// side). Both are polled by the same [`MixedNet`] scheduler, so one [`Env`] can hold them.
#[derive(Debug, Clone)]
pub enum TapBackend {
    /// smoltcp on the TAP device.
    Smol(SmolBackend<TapDevice>),
    /// Kernel sockets, polled through the mixed source's epoll half.
    Kernel(KernelBackend),
}

/// A socket of a [`TapBackend`]; always of the variant of the backend that made it.
#[derive(Debug)]
pub enum TapSocket {
    /// A smoltcp socket.
    Smol(SmolSocket),
    /// A kernel socket.
    Kernel(KernelSocket),
}

/// Runs `$e` with the backend and socket of the same stack bound to `$b` and `$s`.
macro_rules! dispatch {
    ($self:expr, $socket:expr, |$b:ident, $s:ident| $e:expr) => {
        match ($self, $socket) {
            (TapBackend::Smol($b), TapSocket::Smol($s)) => $e,
            (TapBackend::Kernel($b), TapSocket::Kernel($s)) => $e,
            _ => mismatch(),
        }
    };
}

/// A socket handed to the other stack's backend: the stack never does that (each socket goes
/// back to the backend that made it), so this is a harness bug.
#[track_caller]
fn mismatch() -> ! {
    panic!("TapBackend: a socket was used with the other stack's backend")
}

impl SocketBackend for TapBackend {
    type Socket = TapSocket;

    fn handle(&self) -> &Handle {
        match self {
            TapBackend::Smol(b) => b.handle(),
            TapBackend::Kernel(b) => b.handle(),
        }
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<TapSocket, ErrorKind> {
        match self {
            TapBackend::Smol(b) => b.listen(addr, backlog).map(TapSocket::Smol),
            TapBackend::Kernel(b) => b.listen(addr, backlog).map(TapSocket::Kernel),
        }
    }

    fn stream(&self, remote: SocketAddr) -> Result<TapSocket, ErrorKind> {
        match self {
            TapBackend::Smol(b) => b.stream(remote).map(TapSocket::Smol),
            TapBackend::Kernel(b) => b.stream(remote).map(TapSocket::Kernel),
        }
    }

    fn register(&self, socket: &TapSocket, key: Key) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.register(s, key))
    }

    fn deregister(&self, socket: &TapSocket) {
        dispatch!(self, socket, |b, s| b.deregister(s))
    }

    fn try_accept(&self, listener: &TapSocket) -> Result<(TapSocket, SocketAddr), TryError> {
        match (self, listener) {
            (TapBackend::Smol(b), TapSocket::Smol(l)) => {
                b.try_accept(l).map(|(s, peer)| (TapSocket::Smol(s), peer))
            }
            (TapBackend::Kernel(b), TapSocket::Kernel(l)) => b
                .try_accept(l)
                .map(|(s, peer)| (TapSocket::Kernel(s), peer)),
            _ => mismatch(),
        }
    }

    fn start_connect(&self, socket: &TapSocket, addr: SocketAddr) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.start_connect(s, addr))
    }

    fn finish_connect(&self, socket: &TapSocket) -> Result<(), TryError> {
        dispatch!(self, socket, |b, s| b.finish_connect(s))
    }

    fn try_read(&self, socket: &TapSocket, buf: &mut [u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_read(s, buf))
    }

    fn try_read_drained(
        &self,
        socket: &TapSocket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        dispatch!(self, socket, |b, s| b.try_read_drained(s, buf))
    }

    fn try_write(&self, socket: &TapSocket, buf: &[u8]) -> Result<usize, TryError> {
        dispatch!(self, socket, |b, s| b.try_write(s, buf))
    }

    fn shutdown(&self, socket: &TapSocket, how: Shutdown) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.shutdown(s, how))
    }

    fn local_addr(&self, socket: &TapSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.local_addr(s))
    }

    fn peer_addr(&self, socket: &TapSocket) -> Result<SocketAddr, ErrorKind> {
        dispatch!(self, socket, |b, s| b.peer_addr(s))
    }

    fn set_nodelay(&self, socket: &TapSocket, nodelay: bool) -> Result<(), ErrorKind> {
        dispatch!(self, socket, |b, s| b.set_nodelay(s, nodelay))
    }

    fn nodelay(&self, socket: &TapSocket) -> Result<bool, ErrorKind> {
        dispatch!(self, socket, |b, s| b.nodelay(s))
    }

    fn close(&self, socket: &TapSocket, abort: bool) {
        dispatch!(self, socket, |b, s| b.close(s, abort))
    }
}
