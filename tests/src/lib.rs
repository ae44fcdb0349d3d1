//! netpoll-conformance: the semantic contract every backend must meet, written once.
//!
//! Each behaviour of the conformance checklist in `docs/semantics.md` (sections A–E, and R) is one
//! generic async function in [`suite`], named after its checklist number (`a01_…`, `b11_…`,
//! `c17_…`, `d26_…`, `e42_…`). A backend is plugged in through a [`Harness`], and
//! [`conformance_suite!`] expands to one `#[test]` per case, so every backend runs the same
//! bodies under **identical test names**: a failure reads
//! `hosted::d29_read_deadline_fires_on_time` or `smoltcp::d29_read_deadline_fires_on_time`.
//!
//! # Adding a backend
//!
//! Implement [`Harness`] (build a fresh scheduler and network per call, hand the body an
//! [`Env`], block on it), then expand the suite in an integration test:
//!
//! See `tests/src/smoltcp.rs` ([`smoltcp::WireHarness`]) for a complete instance: two
//! smoltcp hosts on an in-memory wire, one scheduler; `tests/tests/smoltcp.rs` expands the
//! suite over it with one line, `conformance_suite!(netpoll_conformance::smoltcp::WireHarness)`.
//!
//! The [`Env`] carries a server-side backend, a client-side backend (the same value on the
//! kernel; two hosts with different IPs on a smoltcp wire, both polled by **one** scheduler),
//! the server's IP, the scheduler's [`Handle`], and `max_buffered`: an upper bound on what one
//! stream can hand to the network while its peer reads nothing (send buffer + peer's receive
//! window + in flight). Cases that need a writer to stay blocked write
//! [`Env::overflow_len`] bytes.
//!
//! [`run_case`] (what the macro calls) wraps both backends in [`Checked`], which checks the
//! socket lifecycle the stack promises every backend, and runs the body under a [`WATCHDOG`].
//!
//! # Rules the cases follow
//!
//! * Time is read only through [`Handle::now`] and [`Handle::sleep`], so a harness may run on
//!   a simulated clock. Timing bounds are generous (the machine is shared and noisy): an op
//!   with a 100 ms deadline must time out after ≥ 90 ms and well before 1 s.
//! * Assertions tolerate spurious readiness but never lost readiness: every wait that should
//!   end has a bound ([`Env::within`]), and "still blocked" is checked after a real delay.
//! * Every loop is bounded. Every test runs under a watchdog ([`WATCHDOG`]). Any case may be
//!   run on a simulated clock: waits are scheduler sleeps, never thread sleeps.
//! * Where a backend legitimately differs, the case says so in a `CAUTION:` comment; no
//!   assertion is weakened silently.
//! * Traffic goes only to the harness's own addresses (127.0.0.1 on the kernel).

use core::fmt;
use core::future::Future;
use core::net::{IpAddr, SocketAddr};
use core::pin::pin;
use core::time::Duration;

use futures::future::{select, Either};
use netpoll_core::{Handle, Instant, JoinHandle};
use netpoll_stack::{Error, SocketBackend, TcpListener, TcpStream};

pub mod checked;
pub mod hosted;
pub mod ipv6;
pub mod mixed;
pub mod sim;
pub mod smoltcp;
pub mod suite;
pub mod tap;
pub mod xdp;

pub use checked::{Checked, Ledger};

/// How long one case may run before the watchdog fails it as a hang. Every case is designed to
/// finish in well under 5 s.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// The bound used by [`Env::prompt`]: an operation that must not block has to finish within
/// this. Nothing in the cases that use it would ever complete a blocked op, so a hang shows up
/// as a miss, while scheduling noise stays far below it.
pub const PROMPT: Duration = Duration::from_secs(1);

/// A backend under test: how to build a fresh network plus scheduler and run one case on it.
///
/// Implementations build **everything anew per call** (a scheduler, its readiness source, the
/// backends), so cases are independent and may run on parallel test threads.
pub trait Harness {
    /// The socket backend the stack runs over.
    type Backend: SocketBackend;

    /// Builds the network, then runs `body(env)` to completion on the scheduler (blocking the
    /// calling thread). A panic in the body or in a spawned task fails the test.
    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<Self::Backend>) -> Fut,
        Fut: Future<Output = ()>;

    /// Runs one case: what [`conformance_suite!`] calls. The default is one [`run_case`]; a
    /// harness may run the case several times (under several seeds, say).
    fn run_case<F, Fut>(name: &'static str, body: F)
    where
        Self: Sized,
        F: Fn(Env<Checked<Self::Backend>>) -> Fut + Copy,
        Fut: Future<Output = ()>,
    {
        run_case::<Self, F, Fut>(name, body);
    }
}

/// Runs one case on harness `H`, under the [`WATCHDOG`]. This is what [`conformance_suite!`]
/// expands to; call it directly to run a single case by hand.
///
/// The harness's backends are wrapped in [`Checked`], so the case also checks the socket
/// lifecycle (register, deregister before close, close exactly once, no use after close).
pub fn run_case<H, F, Fut>(name: &'static str, body: F)
where
    H: Harness,
    F: FnOnce(Env<Checked<H::Backend>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ledger = Ledger::new();
    let case_ledger = ledger.clone();
    H::run(move |env: Env<H::Backend>| {
        let env = Env::new(
            Checked::new(env.server, case_ledger.clone()),
            Checked::new(env.client, case_ledger),
            env.server_ip,
            env.max_buffered,
        );
        let watchdog = env.clone();
        async move {
            if watchdog.timeout(WATCHDOG, body(env)).await.is_none() {
                panic!("{name}: watchdog: the case did not finish within {WATCHDOG:?} (a hang)");
            }
        }
    });
    let violations = ledger.violations();
    assert!(
        violations.is_empty(),
        "{name}: socket lifecycle violations:\n  {}",
        violations.join("\n  ")
    );
}

/// What a case gets: two network endpoints and the scheduler that polls both.
///
/// On the kernel both backends are the same and `server_ip` is 127.0.0.1. On a smoltcp wire
/// `server` and `client` are two hosts with different IPs sharing one scheduler.
/// On TAP ([`tap::TapHarness`]) `server` is smoltcp on the TAP device and `client` the kernel
/// on its other side, one scheduler polling both.
pub struct Env<B: SocketBackend> {
    /// The backend servers listen on (and accepted streams live on).
    pub server: B,
    /// The backend clients connect from.
    pub client: B,
    /// The address servers bind to; clients connect to it.
    pub server_ip: IpAddr,
    /// The scheduler polling both backends.
    pub handle: Handle,
    /// An upper bound on the bytes one stream can hand to the network while its peer reads
    /// nothing: its send buffer, the peer's receive buffer and anything in flight (see
    /// [`Env::overflow_len`]).
    pub max_buffered: usize,
}

impl<B: SocketBackend> Clone for Env<B> {
    fn clone(&self) -> Self {
        Env {
            server: self.server.clone(),
            client: self.client.clone(),
            server_ip: self.server_ip,
            handle: self.handle.clone(),
            max_buffered: self.max_buffered,
        }
    }
}

impl<B: SocketBackend> fmt::Debug for Env<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("server_ip", &self.server_ip)
            .field("handle", &self.handle)
            .field("max_buffered", &self.max_buffered)
            .finish_non_exhaustive()
    }
}

impl<B: SocketBackend> Env<B> {
    /// An environment over `server` and `client`, polled by `server`'s scheduler (which must
    /// also poll `client`). `max_buffered`: see [`Env::max_buffered`].
    pub fn new(server: B, client: B, server_ip: IpAddr, max_buffered: usize) -> Self {
        let handle = server.handle().clone();
        Env {
            server,
            client,
            server_ip,
            handle,
            max_buffered,
        }
    }

    // ===== Sockets =====

    /// Listens on an ephemeral port of the server host.
    #[track_caller]
    pub fn listen(&self) -> TcpListener<B> {
        TcpListener::bind(&self.server, SocketAddr::new(self.server_ip, 0))
            .unwrap_or_else(|e| panic!("listen on {}:0: {e}", self.server_ip))
    }

    /// Listens on an ephemeral port with an accept queue of `backlog`.
    #[track_caller]
    pub fn listen_with_backlog(&self, backlog: u32) -> TcpListener<B> {
        TcpListener::bind_with_backlog(&self.server, SocketAddr::new(self.server_ip, 0), backlog)
            .unwrap_or_else(|e| panic!("listen on {}:0 (backlog {backlog}): {e}", self.server_ip))
    }

    /// Listens on exactly `addr` (of the server host).
    pub fn listen_at(&self, addr: SocketAddr) -> Result<TcpListener<B>, Error> {
        TcpListener::bind(&self.server, addr)
    }

    /// The address a listener can be reached at.
    #[track_caller]
    pub fn addr_of(&self, listener: &TcpListener<B>) -> SocketAddr {
        listener.local_addr().expect("listener local_addr")
    }

    /// Connects from the client host to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> TcpStream<B> {
        match self
            .within(
                "connect",
                PROMPT * 5,
                TcpStream::connect(&self.client, addr),
            )
            .await
        {
            Ok(s) => s,
            Err(e) => panic!("connect to {addr}: {e}"),
        }
    }

    /// Connects to `listener` and accepts the connection, concurrently (a userspace stack may
    /// need the accept to make progress). Returns `(client, server)`.
    pub async fn pair_on(&self, listener: &TcpListener<B>) -> (TcpStream<B>, TcpStream<B>) {
        let addr = self.addr_of(listener);
        let (client, accepted) = self
            .within(
                "connect + accept",
                PROMPT * 5,
                futures::future::join(TcpStream::connect(&self.client, addr), listener.accept()),
            )
            .await;
        let client = client.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let (server, _peer) = accepted.unwrap_or_else(|e| panic!("accept on {addr}: {e}"));
        (client, server)
    }

    /// A fresh connected pair on a throw-away listener. Returns `(client, server)`.
    pub async fn pair(&self) -> (TcpStream<B>, TcpStream<B>) {
        let listener = self.listen();
        let pair = self.pair_on(&listener).await;
        listener.close().await.expect("close the pair's listener");
        pair
    }

    // ===== Time =====

    /// The scheduler clock's current time.
    pub fn now(&self) -> Instant {
        self.handle.now()
    }

    /// Completes after `d` (scheduler time).
    pub async fn sleep(&self, d: Duration) {
        self.handle.sleep(d).await;
    }

    /// A deadline `d` from now.
    pub fn after(&self, d: Duration) -> Instant {
        self.now() + d
    }

    /// A deadline well in the past (Go's tables use −5 s), or the clock's epoch if the clock
    /// started less than 5 s ago; either is before now.
    pub fn past(&self) -> Instant {
        let now = self.now().as_nanos();
        Instant::from_nanos(now.saturating_sub(5_000_000_000))
    }

    /// Time elapsed since `t0`.
    pub fn since(&self, t0: Instant) -> Duration {
        self.now() - t0
    }

    // ===== Tasks =====

    /// Spawns a task on the scheduler.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `fut` for at most `d`; `None` if it did not finish (it is then dropped).
    pub async fn timeout<T>(&self, d: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let fut = pin!(fut);
        let sleep = pin!(self.handle.sleep(d));
        match select(fut, sleep).await {
            Either::Left((v, _)) => Some(v),
            Either::Right(_) => None,
        }
    }

    /// Runs `fut`, failing the test if it takes longer than `d` (a lost wake-up or a hang).
    pub async fn within<T>(&self, what: &str, d: Duration, fut: impl Future<Output = T>) -> T {
        match self.timeout(d, fut).await {
            Some(v) => v,
            None => panic!("{what}: did not complete within {d:?} (lost wake-up or hang?)"),
        }
    }

    /// Runs an operation that must not block: it has to finish within [`PROMPT`].
    pub async fn prompt<T>(&self, what: &str, fut: impl Future<Output = T>) -> T {
        self.within(what, PROMPT, fut).await
    }

    /// Waits `d`, then asserts the task is still running (blocked).
    pub async fn assert_blocked<T>(&self, what: &str, task: &JoinHandle<T>, d: Duration) {
        self.sleep(d).await;
        assert!(
            !task.is_finished(),
            "{what}: finished within {d:?}, but it must still be blocked"
        );
    }

    /// Asserts no task is parked on a pollDesc (Go: `netpollWaiters == 0` after all I/O
    /// completed, checklist #55 of `docs/semantics.md`).
    pub async fn assert_no_waiters(&self) {
        // A waker decrements the count just *after* waking its task (golang/go#61454: never before
        // the task is runnable), so with several workers the task can finish first: allow that
        // short window, never a count that stays up.
        for _ in 0..100 {
            if self.handle.waiters() == 0 {
                return;
            }
            self.sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            self.handle.waiters(),
            0,
            "tasks still parked on pollDescs after all I/O completed"
        );
    }

    // ===== Bulk I/O helpers =====

    /// A write length no stream can absorb while its peer reads nothing:
    /// [`Env::max_buffered`] plus 64 KiB. A `write_all` of this many bytes is guaranteed to
    /// block part-way until the peer reads (or a deadline, close or reset ends it).
    ///
    /// Cases use this instead of "write until it stalls": on Linux a write can succeed after a
    /// stall without any readiness edge (`EPOLLOUT` needs a third of the send buffer free), so
    /// "the buffer is full" is not a stable state.
    pub fn overflow_len(&self) -> usize {
        self.max_buffered + 64 * 1024
    }
}

/// Byte-stream helpers for the cases.
pub mod io {
    use netpoll_stack::{Error, SocketBackend, TcpStream};

    /// A deterministic, non-repeating-looking byte pattern (so a shifted or reordered stream
    /// does not compare equal).
    pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
            .collect()
    }

    /// Reads exactly `n` bytes; fails the test on EOF or an error.
    pub async fn read_exact<B: SocketBackend>(s: &TcpStream<B>, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match s.read(&mut out[got..]).await {
                Ok(0) => panic!("read_exact: EOF after {got} of {n} bytes"),
                Ok(k) => got += k,
                Err(e) => panic!("read_exact: {e} after {got} of {n} bytes"),
            }
        }
        out
    }

    /// Reads until EOF (`Ok(0)`) or an error, at most `max` bytes (more fails the test).
    /// Returns the bytes and the error that ended the stream, if any.
    pub async fn read_to_end<B: SocketBackend>(
        s: &TcpStream<B>,
        max: usize,
    ) -> (Vec<u8>, Option<Error>) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return (out, None),
                Ok(k) => {
                    out.extend_from_slice(&buf[..k]);
                    assert!(out.len() <= max, "read_to_end: more than {max} bytes");
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// Reads and discards exactly `n` bytes.
    pub async fn discard<B: SocketBackend>(s: &TcpStream<B>, n: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < n {
            let want = (n - got).min(buf.len());
            match s.read(&mut buf[..want]).await {
                Ok(0) => panic!("discard: EOF after {got} of {n} bytes"),
                Ok(k) => got += k,
                Err(e) => panic!("discard: {e} after {got} of {n} bytes"),
            }
        }
    }
}

/// How a case makes the *peer* end a connection (`docs/semantics.md#shutdown-versus-close`: three
/// distinct outcomes).
pub mod peer {
    use netpoll_stack::{SocketBackend, TcpStream};

    /// Abortive close: RST (Go: `SetLinger(0)` + `Close`). The other side's reads fail with
    /// `ConnectionReset`.
    pub async fn reset<B: SocketBackend>(s: &TcpStream<B>) {
        s.abort().await.expect("abort (RST) the peer");
    }

    /// Graceful close: FIN, then release. The other side reads EOF after the data.
    pub async fn close<B: SocketBackend>(s: &TcpStream<B>) {
        s.close().await.expect("close (FIN) the peer");
    }

    /// Half close: FIN, but the peer can still read. Go: `CloseWrite`.
    pub fn shutdown_write<B: SocketBackend>(s: &TcpStream<B>) {
        s.shutdown_write().expect("shutdown_write (FIN) the peer");
    }
}

/// Asserts that `e` is a timeout error of `op`, with Go's whole shape (checklist #28 of
/// `docs/semantics.md`).
#[track_caller]
pub fn assert_timeout(e: &Error, op: netpoll_stack::Op) {
    assert_eq!(e.op(), op, "timeout from the wrong op: {e}");
    assert!(e.is_timeout(), "expected a timeout from {op:?}, got {e}");
    assert!(e.is_temporary(), "a timeout is Temporary() in Go: {e}");
    assert!(!e.is_closed(), "a timeout is not a closed error: {e}");
    let msg = e.to_string();
    assert!(msg.contains("i/o timeout"), "timeout message {msg:?}");
    assert!(
        msg.starts_with(op.as_str()),
        "message {msg:?} should start with the op {:?}",
        op.as_str()
    );
}

/// Asserts that `e` is the closed error of `op` (Go: `OpError` wrapping `net.ErrClosed`).
#[track_caller]
pub fn assert_closed(e: &Error, op: netpoll_stack::Op) {
    assert_eq!(e.op(), op, "closed error from the wrong op: {e}");
    assert!(
        e.is_closed(),
        "expected a closed error from {op:?}, got {e}"
    );
    assert!(!e.is_timeout(), "a closed error is not a timeout: {e}");
    assert!(!e.is_temporary(), "a closed error is not temporary: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains("use of closed network connection"),
        "closed message {msg:?}"
    );
    assert!(
        msg.starts_with(op.as_str()),
        "message {msg:?} should start with the op {:?}",
        op.as_str()
    );
}

/// Expands to one `#[test] fn <case>()` per conformance case, running it on `$harness`.
///
/// Used as `netpoll_conformance::conformance_suite!(netpoll_conformance::hosted::HostedHarness);`
/// in an integration test (see `tests/tests/hosted.rs`).
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        $crate::conformance_suite!(@cases $harness;
            read::a01_read_returns_available_data,
            read::a02_read_returns_data_then_eof_after_peer_close,
            read::a03_blocked_read_wakes_with_eof_on_peer_close,
            read::a04_zero_length_read_returns_at_once,
            read::a05_zero_length_read_on_closed_conn_fails,
            read::a06_read_after_shutdown_read_returns_eof,
            read::a07_read_after_peer_reset_is_not_eof,
            read::a08_ping_pong_and_bulk_transfer_lose_no_wakeups,
            read::a10_concurrent_reads_are_serialised,
            write::b11_write_all_loops_over_partial_writes,
            write::b12_blocked_write_resumes_when_peer_reads,
            write::b13_write_after_shutdown_write_fails_and_peer_reads_eof,
            write::b14_write_to_reset_peer_fails_and_never_hangs,
            write::b15_zero_length_write_reports_errors,
            write::b16_write_timeout_reports_partial_count_and_conn_stays_usable,
            accept::c17_accept_blocks_until_connection,
            accept::c18_close_unblocks_accept,
            accept::c19_accept_after_close_fails,
            accept::c20_accept_past_deadline_times_out_even_if_queued,
            accept::c21_accept_deadline_returns_conns_then_times_out,
            accept::c22_accept_past_then_zero_deadline_blocks,
            accept::c23_accept_zero_then_short_deadline_times_out,
            accept::c24_accept_skips_aborted_connection,
            accept::c25_listen_close_listen_same_address,
            accept::c60_connect_to_closed_port_is_refused,
            deadline::d26_read_past_deadline_times_out_with_data_ready,
            deadline::d27_write_past_deadline_times_out,
            deadline::d28_timeout_error_shape,
            deadline::d29_read_deadline_fires_on_time,
            deadline::d30_read_timeout_is_sticky,
            deadline::d31_past_deadline_unblocks_blocked_ops,
            deadline::d32_extended_deadline_takes_effect,
            deadline::d33_cleared_deadline_leaves_op_blocked,
            deadline::d34_read_and_write_deadlines_are_independent,
            deadline::d35_set_deadline_times_out_read_and_write,
            deadline::d36_deadline_now_is_expired_and_none_is_no_deadline,
            deadline::d37_huge_deadline_never_expires,
            deadline::d38_various_deadlines_always_terminate,
            deadline::d39_stale_deadline_timer_has_no_effect,
            deadline::d40_concurrent_deadline_stress,
            deadline::d41_buffers_untouched_after_return,
            close::e42_close_unblocks_blocked_read,
            close::e43_close_unblocks_blocked_write,
            close::e44_close_wakes_queued_readers,
            close::e45_closed_wins_over_expired_deadline,
            close::e46_ops_after_close_fail,
            close::e47_second_close_error_shape,
            close::e48_close_waits_for_inflight_ops,
            readable::r61_readable_waits_for_data_then_read_gets_it,
            readable::r62_readable_sees_data_queued_before_it,
            readable::r63_readable_returns_at_eof,
            readable::r64_close_unblocks_readable,
            readable::r65_readable_obeys_the_read_deadline,
            readable::r66_readable_queues_behind_a_read,
            readable::r67_try_read_and_try_write_never_wait,
            readable::r68_try_ops_report_full_buffers_errors_and_contention,
            readable::r69_read_after_a_reset_returns_at_once,
            readable::r70_buffered_data_then_reset_never_hangs,
            readable::r71_try_read_alone_gets_buffered_data,
            readable::r72_lock_contention_with_close_ends_every_reader,
        );
    };
    (@cases $harness:ty; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                <$harness as $crate::Harness>::run_case(
                    stringify!($case),
                    $crate::suite::$module::$case,
                );
            }
        )*
    };
}

/// The case names a suite macro in `src` lists after `(@cases $harness;`, for the tests that
/// check the list against the cases defined.
#[cfg(test)]
pub(crate) fn macro_cases(src: &str) -> Vec<String> {
    let start = src.find("(@cases $harness;").unwrap();
    let end = start + src[start..].find(");").unwrap();
    src[start..end]
        .lines()
        .skip(1)
        .map(|l| l.trim().trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn` case in `suite/` is listed in `conformance_suite!` (and nothing
    /// else is), so no case silently stops running.
    #[test]
    fn the_macro_lists_every_case() {
        let suite = [
            ("read", include_str!("suite/read.rs")),
            ("write", include_str!("suite/write.rs")),
            ("accept", include_str!("suite/accept.rs")),
            ("deadline", include_str!("suite/deadline.rs")),
            ("close", include_str!("suite/close.rs")),
            ("readable", include_str!("suite/readable.rs")),
        ];
        let mut defined: Vec<String> = suite
            .iter()
            .flat_map(|(module, src)| {
                src.lines()
                    .filter_map(|l| l.strip_prefix("pub async fn "))
                    .map(move |l| format!("{module}::{}", &l[..l.find('<').unwrap()]))
            })
            .collect();
        let mut listed = crate::macro_cases(include_str!("lib.rs"));
        defined.sort();
        listed.sort();
        assert_eq!(defined, listed);
        assert_eq!(listed.len(), 60);
    }
}
