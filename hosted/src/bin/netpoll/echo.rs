//! `netpoll echo`: the echo server, on either backend.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use netpoll_core::sched::RunError;
use netpoll_core::{Clock, Handle, Instant, Scheduler};
use netpoll_drivers::smoltcp::phy::Device;
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{
    capture, Config, Host, MonotonicClock, PcapFile, SmolBackend, SmolSource, TapDevice, TapWaiter,
};
use netpoll_hosted::{signal, ErrorKind, Runtime};
use netpoll_stack::{SocketBackend, TcpListener, TcpStream, DEFAULT_BACKLOG};

use crate::cli::{Backend, EchoOptions};

/// Writes one of the server's summary lines to stderr (startup, shutdown, totals): printed
/// whatever the log filter, as the server's deliberate output. A closed stderr must not take
/// the server down (`eprintln!` panics).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Runs `a` and `b` together; returns when either finishes.
async fn race<A: Future<Output = ()>, B: Future<Output = ()>>(a: A, b: B) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Read buffers lent to connections one message at a time, so an idle connection holds no
/// buffer: it waits in [`TcpStream::readable`], takes a buffer, reads, echoes and gives the
/// buffer back. One free list per worker thread, no locks; a buffer may return to another
/// worker's list if its task moved.
struct LentBuf(Box<[u8]>);

/// Buffers kept per thread beyond those in use; more are freed.
const FREE_BUFS_PER_THREAD: usize = 64;

thread_local! {
    static FREE_BUFS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

impl LentBuf {
    fn take(size: usize) -> Self {
        let reused = FREE_BUFS.with(|free| {
            let mut free = free.borrow_mut();
            // Every connection of a server uses the same size: pop; a mismatch is freed.
            free.pop().filter(|b| b.len() == size)
        });
        LentBuf(reused.unwrap_or_else(|| vec![0; size].into_boxed_slice()))
    }
}

impl Drop for LentBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        // `try_with`: a task dropped during thread teardown just frees its buffer.
        let _ = FREE_BUFS.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < FREE_BUFS_PER_THREAD {
                free.push(buf);
            }
        });
    }
}

/// The options every connection needs.
#[derive(Debug, Clone, Copy)]
struct ConnOptions {
    buf_size: usize,
}

/// Set once, before the server accepts: connections read their options here rather than each
/// idle task carrying a copy (every byte of an idle task counts: BENCHMARKS.md, s4).
static CONN_OPTIONS: OnceLock<ConnOptions> = OnceLock::new();

/// Connections accepted, for the summary at exit.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
/// Connections that ended with a reset (or a broken pipe) from the peer: normal for a server,
/// so counted, and logged one by one only at debug level (`--verbose`).
static RESETS: AtomicU64 = AtomicU64::new(0);
/// The server is closing every connection: the errors that causes are its own doing.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn conn_options() -> ConnOptions {
    *CONN_OPTIONS
        .get()
        .expect("netpoll echo: connection options are set before the first accept")
}

/// Logs a connection's error, naming its peer if the socket still knows it (after a reset it
/// may not): a reset by the peer at debug level (it is normal for a server, and counted),
/// anything else as a warning. The address is looked up here rather than kept in every
/// connection's task.
fn report<B: SocketBackend>(conn: &TcpStream<B>, e: netpoll_stack::Error) {
    // Relaxed: counters and a flag that only silence logging.
    if SHUTTING_DOWN.load(Ordering::Relaxed) {
        return;
    }
    let level = if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
        RESETS.fetch_add(1, Ordering::Relaxed);
        log::Level::Debug
    } else {
        log::Level::Warn
    };
    if !log::log_enabled!(level) {
        return;
    }
    match conn.peer_addr() {
        Ok(peer) => log::log!(level, "connection from {peer}: {e}"),
        Err(_) => log::log!(level, "connection: {e}"),
    }
}

/// Echoes one connection until it ends. An idle connection's task holds only the
/// `readable` wait; a message is read into a lent buffer with `try_read` and sent back with
/// `try_write` (`echo_now`), so the common case needs no future at all. Only a reply the
/// socket cannot take at once waits, in a boxed future, so that its size does not count in
/// every idle task.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: an `async fn` keeps a
/// second copy of its arguments in the future (rust-lang/rust#62958).
#[allow(clippy::manual_async_fn)] // Deliberate, see above.
fn echo_conn<B: SocketBackend>(conn: TcpStream<B>) -> impl Future<Output = ()> + Send {
    async move {
        loop {
            let rest = match conn.readable().await.and_then(|()| echo_now(&conn)) {
                Ok(Echo::Done) => continue,
                Ok(Echo::End) => break,
                Ok(Echo::Rest(rest)) => rest,
                Err(e) => {
                    report(&conn, e);
                    break;
                }
            };
            if let Err(e) = rest.await {
                report(&conn, e);
                break;
            }
        }
        if log::log_enabled!(log::Level::Debug) {
            log_closed(&conn);
        }
        // Boxed: it runs once, at the end.
        let _ = Box::pin(conn.close()).await;
    }
}

/// Logs the end of a connection (debug level), outside `echo_conn` so that its task stays
/// small.
fn log_closed<B: SocketBackend>(conn: &TcpStream<B>) {
    match conn.peer_addr() {
        Ok(peer) => log::debug!("connection from {peer} closed"),
        // After a reset the socket may no longer know its peer.
        Err(_) => log::debug!("connection closed"),
    }
}

/// What `echo_now` did.
enum Echo<'a> {
    /// Echoed everything read (or nothing was there after all: the wake-up was a hint).
    Done,
    /// The peer closed its side.
    End,
    /// The socket took only part of the reply: the rest must wait for room.
    Rest(Pin<Box<dyn Future<Output = Result<(), netpoll_stack::Error>> + Send + 'a>>),
}

/// Reads what is there into a lent buffer and writes it back, without waiting. A plain
/// function: the buffer lives only in this call (or in the boxed rest).
fn echo_now<B: SocketBackend>(conn: &TcpStream<B>) -> Result<Echo<'_>, netpoll_stack::Error> {
    let mut buf = LentBuf::take(conn_options().buf_size);
    let n = match conn.try_read(&mut buf.0) {
        Ok(0) => return Ok(Echo::End),
        Ok(n) => n,
        // A hint, or another task reads this connection too.
        Err(e) if e.is_would_block() => return Ok(Echo::Done),
        Err(e) => return Err(e),
    };
    let sent = match conn.try_write(&buf.0[..n]) {
        Ok(sent) => sent,
        Err(e) if e.is_would_block() => 0,
        Err(e) => return Err(e),
    };
    if sent == n {
        return Ok(Echo::Done);
    }
    Ok(Echo::Rest(Box::pin(async move {
        conn.write_all(&buf.0[sent..n]).await
    })))
}

/// At most one log line per `interval` for a repeating event; the next line printed says how
/// many were left out.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// The event happened at `now`: `Some(n)` if a line may be logged (`n` left out since
    /// the last one), `None` if this one is left out.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// First and longest pause of the accept loop after a failed accept (Go's `net/http` uses
/// 5 ms doubling to 1 s). Out of descriptors, retrying at once only spins; a short cap still
/// resumes soon after descriptors are freed.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(500));

/// The connections a server has handed out, so that shutdown can close those still open
/// (smoltcp's sockets are not closed by the kernel when the process exits). Entries of
/// connections that ended are dropped whenever the list has doubled.
struct Registry<B: SocketBackend> {
    conns: Mutex<(Vec<TcpStream<B>>, usize)>,
}

/// Whether the connection was closed (by its task, or by shutdown).
fn is_closed<B: SocketBackend>(conn: &TcpStream<B>) -> bool {
    matches!(conn.peer_addr(), Err(e) if e.kind() == ErrorKind::Closed)
}

impl<B: SocketBackend> Registry<B> {
    fn new() -> Self {
        Registry {
            conns: Mutex::new((Vec::new(), 64)),
        }
    }

    fn add(&self, conn: TcpStream<B>) {
        let mut guard = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let (conns, prune_at) = &mut *guard;
        if conns.len() >= *prune_at {
            conns.retain(|c| !is_closed(c));
            *prune_at = (conns.len() * 2).max(64);
        }
        conns.push(conn);
    }

    /// The connections not closed yet, leaving the registry empty.
    fn take_open(&self) -> Vec<TcpStream<B>> {
        let mut conns = std::mem::take(&mut self.conns.lock().unwrap_or_else(|e| e.into_inner()).0);
        conns.retain(|c| !is_closed(c));
        conns
    }
}

async fn serve<B: SocketBackend>(listener: TcpListener<B>, registry: Option<&Registry<B>>) {
    let handle = listener.handle().clone();
    let mut backoff = Duration::ZERO;
    let mut limit = RateLimit::new(Duration::from_secs(1));
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                log::debug!("accepted a connection from {peer}");
                backoff = Duration::ZERO;
                // Relaxed: a statistic.
                ACCEPTED.fetch_add(1, Ordering::Relaxed);
                if let Some(registry) = registry {
                    registry.add(conn.clone());
                }
                handle.spawn(echo_conn(conn));
            }
            Err(e) if e.kind() == ErrorKind::Closed => return,
            Err(e) => {
                // Out of descriptors or buffers: back off and keep serving (as Go's net/http).
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
                if let Some(left_out) = limit.allow(handle.now()) {
                    let more = match left_out {
                        0 => String::new(),
                        n => format!(" ({n} more since the last report)"),
                    };
                    // An error, not a warning: the server cannot take new clients meanwhile.
                    log::error!("accept: {e}; retrying in {backoff:?}{more}");
                }
                handle.sleep(backoff).await;
            }
        }
    }
}

/// What the tap backend adds to the echo server: its host's socket count and link state.
struct TapExtras {
    /// smoltcp sockets alive (`Host::stats().sockets`).
    sockets: Box<dyn Fn() -> usize + Send + Sync>,
    link: TapWaiter,
    name: String,
}

/// How long shutdown lets clients answer our FIN before it resets the connections left, and
/// how long it then keeps smoltcp running for those frames to leave.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// Polls `done` every 10 ms until it holds or `limit` passed; returns whether it held.
async fn wait_until(handle: &Handle, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = handle.now() + limit;
    while !done() {
        if handle.now() >= deadline {
            return false;
        }
        handle.sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Ends every open connection of a smoltcp server and keeps the scheduler (so smoltcp) running
/// until their last frames have left: a FIN to each (clients read EOF), then, for those still
/// open after [`SHUTDOWN_GRACE`], a reset; bounded by [`SHUTDOWN_DRAIN`] more.
async fn close_all<B: SocketBackend>(handle: &Handle, registry: &Registry<B>, tap: &TapExtras) {
    let conns = registry.take_open();
    let n = conns.len();
    for c in &conns {
        let _ = c.shutdown_write();
    }
    // Clients that close on EOF end their connection's task.
    wait_until(handle, SHUTDOWN_GRACE, || conns.iter().all(is_closed)).await;
    let mut reset = 0;
    for c in &conns {
        if !is_closed(c) && c.abort().await.is_ok() {
            reset += 1;
        }
    }
    let drained = wait_until(handle, SHUTDOWN_DRAIN, || (tap.sockets)() == 0).await;
    say!(
        "netpoll echo: closed {n} open connection(s) ({reset} reset after {SHUTDOWN_GRACE:?}); \
         {}",
        if drained {
            "all smoltcp sockets are done".to_string()
        } else {
            format!("{} smoltcp socket(s) still finishing", (tap.sockets)())
        }
    );
}

/// Logs the TAP link going down and coming back (the device notices when a frame is refused,
/// or flows again).
async fn watch_link(handle: Handle, tap: &TapExtras) {
    let (mut up, mut downs) = (true, 0);
    loop {
        handle.sleep(Duration::from_millis(250)).await;
        let (now_up, now_downs) = (tap.link.link_up(), tap.link.link_downs());
        if now_downs != downs {
            log::warn!(
                "TAP {}: link down; frames are lost until it is back (TCP retransmits them)",
                tap.name
            );
        }
        if now_up && (!up || now_downs != downs) {
            // A warning too, so whoever saw the one above by default sees it end.
            log::warn!("TAP {}: link up, frames flow again", tap.name);
        }
        (up, downs) = (now_up, now_downs);
    }
}

/// Binds the first of `addrs` the backend can listen on; the error names every failure.
fn bind_first<B: SocketBackend>(
    backend: &B,
    addrs: &[SocketAddr],
    backlog: u32,
) -> Result<TcpListener<B>, String> {
    let mut failures = Vec::new();
    for &addr in addrs {
        match TcpListener::bind_with_backlog(backend, addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => {
                log::debug!("cannot listen on {addr}: {e}");
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    Err(format!("cannot listen on {}", failures.join("; ")))
}

/// Prints the bound address to stdout as the one machine-readable line of `netpoll echo`
/// (`listening IP:PORT`), flushed at once so a script reading it can connect right away.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader took its line and left) must not stop the server.
    let _ = writeln!(out, "listening {addr}").and_then(|()| out.flush());
}

/// Listens, serves until SIGINT/SIGTERM, then closes the listener (and, on smoltcp, every
/// connection).
async fn echo_server<B: SocketBackend>(
    backend: B,
    opts: &EchoOptions,
    engine: &str,
    tap: Option<TapExtras>,
) -> Result<(), String> {
    let backlog = opts.backlog.unwrap_or(DEFAULT_BACKLOG);
    let listener = bind_first(&backend, &opts.listen, backlog)?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = listener.handle().clone();
    // Only one server per process sets it; a second would keep the first's options.
    let _ = CONN_OPTIONS.set(ConnOptions { buf_size: opts.buf });
    say!("netpoll echo: listening on {addr} (backend {engine})");
    announce(addr);
    // The kernel closes its sockets when the process exits; smoltcp's need us.
    let registry = tap.as_ref().map(|_| Registry::new());
    let serving = serve(listener.clone(), registry.as_ref());
    match &tap {
        Some(t) => {
            race(
                race(serving, watch_link(handle.clone(), t)),
                signal::termination(),
            )
            .await
        }
        None => race(serving, signal::termination()).await,
    }
    say!("netpoll echo: shutting down");
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
    let _ = listener.close().await;
    if let (Some(registry), Some(tap)) = (&registry, &tap) {
        close_all(&handle, registry, tap).await;
    }
    say!(
        "netpoll echo: served {} connection(s), {} reset by the peer",
        ACCEPTED.load(Ordering::Relaxed),
        RESETS.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Runs `netpoll echo` until SIGINT or SIGTERM.
pub fn run(opts: EchoOptions) -> Result<(), String> {
    signal::install_termination_handler().map_err(|e| format!("signal setup: {e}"))?;
    if let Err(e) = netpoll_hosted::raise_fd_limit() {
        log::warn!("could not raise the open-file limit: {e}");
    }
    match opts.backend {
        Backend::Epoll => {
            let mut builder = Runtime::builder();
            if let Some(n) = opts.workers {
                builder = builder.workers(n);
            }
            let mut rt = builder.build().map_err(|e| format!("runtime: {e}"))?;
            let backend = rt.backend().clone();
            let engine = format!("epoll, {} workers", rt.workers());
            rt.try_block_on(echo_server(backend, &opts, &engine, None))
                .map_err(|e| format!("epoll failed: {e}"))?
        }
        Backend::Tap => run_tap(&opts),
    }
}

/// The tap backend: opens the TAP device (and the capture file), runs the server, and writes
/// out the capture however the server ended.
fn run_tap(opts: &EchoOptions) -> Result<(), String> {
    let (ip, prefix) = opts.addr;
    let mut config = Config::with_address(
        IpCidr::new(ip.into(), prefix),
        // A locally administered unicast MAC.
        EthernetAddress([0x02, 0x6e, 0x70, 0x00, 0x00, 0x01]),
    );
    config.gateway_v4 = opts.gateway;
    if let Some(n) = opts.rx_buf {
        config.rx_buffer = n;
    }
    if let Some(n) = opts.tx_buf {
        config.tx_buffer = n;
    }
    if let Some(n) = opts.backlog {
        config.max_backlog = config.max_backlog.max(n);
    }
    let pcap = match &opts.pcap {
        Some(path) => Some((
            path,
            PcapFile::create(path).map_err(|e| format!("--pcap {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let device =
        TapDevice::open_with_mtu(&opts.tap, config.mtu).map_err(|e| format!("tap backend: {e}"))?;
    say!(
        "netpoll echo: smoltcp on TAP {} as {ip}/{prefix}; give the kernel side an address in \
         that subnet and bring the link up",
        opts.tap
    );
    // The waiter sleeps on the TAP descriptor; a capture wrapped around the device keeps it.
    let (waiter, link) = (device.waiter(), device.waiter());
    let served = match &pcap {
        Some((_, file)) => serve_tap(capture(device, file.clone()), waiter, link, config, opts),
        None => serve_tap(device, waiter, link, config, opts),
    };
    if let Some((path, file)) = pcap {
        file.flush()
            .map_err(|e| format!("--pcap {}: {e}", path.display()))?;
        say!(
            "netpoll echo: wrote {} frame(s) to {}",
            file.frames(),
            path.display()
        );
    }
    served
}

/// Runs the echo server on smoltcp over `device` (the TAP device, or it wrapped in a
/// capture), waiting on the TAP device's `waiter`; `link` reports its link state.
fn serve_tap<D>(
    device: D,
    waiter: TapWaiter,
    link: TapWaiter,
    config: Config,
    opts: &EchoOptions,
) -> Result<(), String>
where
    D: Device + Send + 'static,
{
    let clock: Arc<dyn Clock> = MonotonicClock::new();
    let host = Host::new(device, config, clock.clone()).map_err(|e| format!("tap backend: {e}"))?;
    let source = SmolSource::new(waiter).with_host(host.clone());
    let mut scheduler = Scheduler::new(source, clock);
    let backend = SmolBackend::new(host.clone(), scheduler.handle().clone());
    let tap = TapExtras {
        sockets: Box::new(move || host.stats().sockets),
        link,
        name: opts.tap.clone(),
    };
    match scheduler.try_block_on(echo_server(backend, opts, "tap", Some(tap))) {
        Ok(r) => r,
        Err(RunError::Source(e)) => Err(format!("tap backend stopped: {e}")),
        Err(e) => Err(format!("tap backend stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_one_line_per_interval_and_counts_the_rest() {
        let mut limit = RateLimit::new(Duration::from_secs(1));
        let t = |ms: u64| Instant::from_nanos(ms * 1_000_000);
        assert_eq!(limit.allow(t(0)), Some(0));
        // 100 failures a second, as a 10 ms retry loop makes.
        let logged: Vec<_> = (1..300).filter_map(|i| limit.allow(t(i * 10))).collect();
        assert_eq!(
            logged,
            [99, 99],
            "one line a second, each counting the lines left out"
        );
        assert_eq!(limit.allow(t(5000)), Some(99));
        assert_eq!(limit.allow(t(5001)), None);
    }

    /// What an idle connection's task holds is this future (plus the task's own words): the
    /// budget behind the s4 figure in BENCHMARKS.md (under 300 bytes per idle connection).
    #[test]
    fn an_idle_connection_task_stays_small() {
        let mut rt = Runtime::builder().workers(1).build().expect("runtime");
        let backend = rt.backend().clone();
        rt.block_on(async move {
            let listener = TcpListener::bind(&backend, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let conn = TcpStream::connect(&backend, addr).await.unwrap();
            let size = std::mem::size_of_val(&echo_conn(conn));
            assert!(size <= 32, "the echo task's future is {size} bytes");
            listener.close().await.unwrap();
        });
    }
}
