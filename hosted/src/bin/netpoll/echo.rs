//! The `netpoll` command: an echo server on netpoll (Go's netpoller semantics in Rust).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use std::net::Ipv4Addr;

use netpoll_core::sched::RunError;
use netpoll_core::{Handle, Instant};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, TapNet, TapWaiter};
use netpoll_hosted::{signal, ErrorKind, Runtime};
use netpoll_stack::{SocketBackend, TcpListener, TcpStream, DEFAULT_BACKLOG};

/// Logs a line to stderr; a closed stderr must not take the server down (eprintln panics).
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const USAGE: &str = "\
netpoll: Go's network poller semantics, rebuilt in Rust.

USAGE:
    netpoll echo [OPTIONS]
    netpoll --help | --version

COMMANDS:
    echo    Run a TCP echo server: accept in a loop, one task per connection that reads into
            a 128-byte buffer and writes back what it read, closing on end of stream.

ECHO OPTIONS:
    --listen ADDR     Address to listen on (IPv4 or [IPv6]:port) [default: 127.0.0.1:9009]
    --backend NAME    I/O engine [default: epoll]:
                        epoll  the kernel TCP stack, readiness from epoll
                        tap    smoltcp (userspace TCP/IP) over a TAP device; needs
                               CAP_NET_ADMIN. See README (TAP walkthrough)
    --tap NAME        TAP interface to create or attach to (tap backend) [default: nptap0]
    --addr CIDR       smoltcp's own address on the TAP link (tap backend)
                      [default: 10.7.0.2/24]; --listen must use this address or 0.0.0.0
    --gateway IP      smoltcp's default IPv4 route (tap backend) [default: none]
    --rx-buf BYTES    smoltcp's receive buffer per TCP socket, 1024 to 16777216 (tap backend)
                      [default: netpoll_drivers::Config's, 8192]
    --tx-buf BYTES    smoltcp's send buffer per TCP socket, 1024 to 16777216 (tap backend)
                      [default: netpoll_drivers::Config's, 4096]
    --backlog N       Listen backlog, 1 to 65535 [default: 128]; with the tap backend the
                      accept pool: N smoltcp sockets with both buffers allocated up front
                      (at most 1 GiB in all)
    --buf BYTES       Per-connection read buffer size [default: 128]
    --workers N       Worker threads of the epoll runtime (epoll backend)
                      [default: number of CPUs]
    --quiet           Do not log per-connection errors
    --verbose         Also log every connection reset by its peer (otherwise only counted,
                      in the summary at exit)
    -h, --help        Print this help

Options of one backend given with the other are an error.

Ctrl-C (SIGINT) or SIGTERM stops the server cleanly: the listener is closed; with the tap
backend every open connection is closed (FIN; a reset for those still open after 300 ms) and
smoltcp is kept running until those frames left (at most about a second, since no kernel
closes smoltcp's sockets for us); the process exits with status 0.

EXAMPLE:
    netpoll echo --listen 127.0.0.1:9009 &
    printf 'hello\\n' | nc -q1 127.0.0.1 9009
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Epoll,
    Tap,
}

#[derive(Debug)]
struct EchoOptions {
    listen: SocketAddr,
    buf: usize,
    workers: Option<usize>,
    quiet: bool,
    verbose: bool,
    backend: Backend,
    tap: String,
    addr: (Ipv4Addr, u8),
    gateway: Option<Ipv4Addr>,
    rx_buf: Option<usize>,
    tx_buf: Option<usize>,
    backlog: Option<u32>,
}

/// The most memory the tap backend's accept pool may preallocate (`--backlog` times both
/// buffers).
const MAX_POOL_BYTES: usize = 1 << 30;

/// `v` as a number in `range`, or an error naming the option and the range.
fn parse_in<T>(
    name: &str,
    v: &str,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        format!(
            "{name} {v:?}: expected {unit}from {} to {}",
            range.start(),
            range.end()
        )
    })
}

fn parse_cidr(v: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("--addr {v:?}: expected an IPv4 CIDR such as 10.7.0.2/24");
    let (ip, len) = v.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().ok().filter(|&l| l <= 32).ok_or_else(bad)?;
    Ok((ip, len))
}

fn parse_echo(args: &[String]) -> Result<Option<EchoOptions>, String> {
    let mut opts = EchoOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 9009)),
        buf: 128,
        workers: None,
        quiet: false,
        backend: Backend::Epoll,
        tap: "nptap0".into(),
        addr: (Ipv4Addr::new(10, 7, 0, 2), 24),
        gateway: None,
        verbose: false,
        rx_buf: None,
        tx_buf: None,
        backlog: None,
    };
    // Options given that only one backend reads, to reject them with the other.
    let mut tap_only = Vec::new();
    let mut epoll_only = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let v = value("--listen")?;
                opts.listen = v.parse().map_err(|e| {
                    format!("--listen {v:?}: not an address ({e}); try 127.0.0.1:9009")
                })?;
            }
            "--backend" => {
                opts.backend = match value("--backend")?.as_str() {
                    "epoll" => Backend::Epoll,
                    "tap" => Backend::Tap,
                    other => {
                        return Err(format!(
                            "--backend {other:?}: unknown backend (known: epoll, tap)"
                        ))
                    }
                }
            }
            "--tap" => {
                opts.tap = value("--tap")?;
                tap_only.push("--tap");
            }
            "--addr" => {
                opts.addr = parse_cidr(&value("--addr")?)?;
                tap_only.push("--addr");
            }
            "--gateway" => {
                let v = value("--gateway")?;
                opts.gateway = Some(
                    v.parse()
                        .map_err(|_| format!("--gateway {v:?}: expected an IPv4 address"))?,
                );
                tap_only.push("--gateway");
            }
            "--rx-buf" => {
                let v = value("--rx-buf")?;
                opts.rx_buf = Some(parse_in(
                    "--rx-buf",
                    &v,
                    1024..=16 << 20,
                    "a size in bytes ",
                )?);
                tap_only.push("--rx-buf");
            }
            "--tx-buf" => {
                let v = value("--tx-buf")?;
                opts.tx_buf = Some(parse_in(
                    "--tx-buf",
                    &v,
                    1024..=16 << 20,
                    "a size in bytes ",
                )?);
                tap_only.push("--tx-buf");
            }
            "--backlog" => {
                let v = value("--backlog")?;
                opts.backlog = Some(parse_in("--backlog", &v, 1..=65535, "")?);
            }
            "--buf" => {
                let v = value("--buf")?;
                opts.buf = parse_in("--buf", &v, 1..=16 << 20, "a size in bytes ")?;
            }
            "--workers" => {
                let v = value("--workers")?;
                opts.workers = Some(parse_in("--workers", &v, 1..=1024, "")?);
                epoll_only.push("--workers");
            }
            "--quiet" => opts.quiet = true,
            "--verbose" => opts.verbose = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if opts.quiet && opts.verbose {
        return Err("--quiet and --verbose exclude each other".into());
    }
    let (wrong, other) = match opts.backend {
        Backend::Epoll => (tap_only, "tap"),
        Backend::Tap => (epoll_only, "epoll"),
    };
    if !wrong.is_empty() {
        let (s, verb) = if wrong.len() == 1 {
            ("", "applies")
        } else {
            ("s", "apply")
        };
        return Err(format!(
            "option{s} {} {verb} only to --backend {other}",
            wrong.join(", ")
        ));
    }
    if opts.backend == Backend::Tap {
        let backlog = opts.backlog.unwrap_or(DEFAULT_BACKLOG) as usize;
        let defaults = Config::default();
        let per_socket =
            opts.rx_buf.unwrap_or(defaults.rx_buffer) + opts.tx_buf.unwrap_or(defaults.tx_buffer);
        if backlog * per_socket > MAX_POOL_BYTES {
            return Err(format!(
                "--backlog {backlog} with {per_socket} bytes of buffers per socket would \
                 preallocate {} MiB for the accept pool (at most {} MiB): lower --backlog, \
                 --rx-buf or --tx-buf",
                (backlog * per_socket) >> 20,
                MAX_POOL_BYTES >> 20
            ));
        }
    }
    Ok(Some(opts))
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
    quiet: bool,
    verbose: bool,
}

/// Set once, before the server accepts: connections read their options here rather than each
/// idle task carrying a copy (every byte of an idle task counts: BENCHMARKS.md, s4).
static CONN_OPTIONS: OnceLock<ConnOptions> = OnceLock::new();

/// Connections accepted, for the summary at exit.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
/// Connections that ended with a reset (or a broken pipe) from the peer: normal for a server,
/// so counted, and logged one by one only with `--verbose`.
static RESETS: AtomicU64 = AtomicU64::new(0);
/// The server is closing every connection: the errors that causes are its own doing.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn conn_options() -> ConnOptions {
    *CONN_OPTIONS
        .get()
        .expect("netpoll echo: connection options are set before the first accept")
}

/// Logs a connection's error, naming its peer if the socket still knows it (after a reset it
/// may not). The address is looked up here rather than kept in every connection's task.
fn report<B: SocketBackend>(conn: &TcpStream<B>, e: netpoll_stack::Error) {
    // Relaxed: counters and a flag that only silence logging.
    if SHUTTING_DOWN.load(Ordering::Relaxed) {
        return;
    }
    let opts = conn_options();
    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
        RESETS.fetch_add(1, Ordering::Relaxed);
        if !opts.verbose {
            return;
        }
    } else if opts.quiet {
        return;
    }
    match conn.peer_addr() {
        Ok(peer) => log!("netpoll echo: {peer}: {e}"),
        Err(_) => log!("netpoll echo: {e}"),
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
        // Boxed: it runs once, at the end.
        let _ = Box::pin(conn.close()).await;
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
            Ok((conn, _peer)) => {
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
                    log!("netpoll echo: {e}; retrying in {backoff:?}{more}");
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
    log!(
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
            log!(
                "netpoll echo: TAP {}: link down; frames are lost until it is back (TCP \
                 retransmits them)",
                tap.name
            );
        }
        if now_up && (!up || now_downs != downs) {
            log!("netpoll echo: TAP {}: link up, frames flow again", tap.name);
        }
        (up, downs) = (now_up, now_downs);
    }
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
    let listener = TcpListener::bind_with_backlog(&backend, opts.listen, backlog)
        .map_err(|e| format!("{}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = listener.handle().clone();
    // Only one server per process sets it; a second would keep the first's options.
    let _ = CONN_OPTIONS.set(ConnOptions {
        buf_size: opts.buf,
        quiet: opts.quiet,
        verbose: opts.verbose,
    });
    log!("netpoll echo: listening on {addr} (backend {engine})");
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
    log!("netpoll echo: shutting down");
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
    let _ = listener.close().await;
    if let (Some(registry), Some(tap)) = (&registry, &tap) {
        close_all(&handle, registry, tap).await;
    }
    log!(
        "netpoll echo: served {} connection(s), {} reset by the peer",
        ACCEPTED.load(Ordering::Relaxed),
        RESETS.load(Ordering::Relaxed)
    );
    Ok(())
}

fn run_echo(opts: EchoOptions) -> Result<(), String> {
    signal::install_termination_handler().map_err(|e| format!("signal setup: {e}"))?;
    if let Err(e) = netpoll_hosted::raise_fd_limit() {
        log!("netpoll echo: could not raise the open-file limit: {e}");
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
        Backend::Tap => {
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
            let mut net =
                TapNet::open(&opts.tap, config).map_err(|e| format!("tap backend: {e}"))?;
            log!(
                "netpoll echo: smoltcp on TAP {} as {ip}/{prefix}; give the kernel side an address \
                 in that subnet and bring the link up",
                opts.tap
            );
            let backend = net.backend.clone();
            let host = net.host.clone();
            let tap = TapExtras {
                sockets: Box::new(move || host.stats().sockets),
                link: net.link(),
                name: opts.tap.clone(),
            };
            match net
                .scheduler
                .try_block_on(echo_server(backend, &opts, "tap", Some(tap)))
            {
                Ok(r) => r,
                Err(RunError::Source(e)) => Err(format!("tap backend stopped: {e}")),
                Err(e) => Err(format!("tap backend stopped: {e}")),
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("netpoll {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("echo") => match parse_echo(&args[1..]) {
            Ok(Some(opts)) => run_echo(opts),
            Ok(None) => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Err(e) => Err(format!("{e}\nrun `netpoll --help` for usage")),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}\nrun `netpoll --help` for usage"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("netpoll: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn parse_err(list: &[&str]) -> String {
        parse_echo(&args(list)).expect_err("rejected")
    }

    #[test]
    fn engine_options_are_parsed_and_checked() {
        let o = parse_echo(&args(&[
            "--backend",
            "tap",
            "--rx-buf",
            "4096",
            "--tx-buf",
            "8192",
            "--backlog",
            "512",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.rx_buf, o.tx_buf, o.backlog),
            (Some(4096), Some(8192), Some(512))
        );
        let o = parse_echo(&args(&["--backlog", "1024", "--verbose"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.backend, o.backlog, o.verbose),
            (Backend::Epoll, Some(1024), true)
        );

        for (list, want) in [
            (
                &["--backend", "tap", "--rx-buf", "100"][..],
                "--rx-buf \"100\": expected a size in bytes from 1024 to 16777216",
            ),
            (
                &["--backend", "tap", "--tx-buf", "lots"][..],
                "--tx-buf \"lots\": expected a size in bytes from 1024 to 16777216",
            ),
            (
                &["--backlog", "0"][..],
                "--backlog \"0\": expected from 1 to 65535",
            ),
            (
                &["--backlog", "65536"][..],
                "--backlog \"65536\": expected from 1 to 65535",
            ),
            (
                &["--quiet", "--verbose"][..],
                "--quiet and --verbose exclude each other",
            ),
        ] {
            assert_eq!(parse_err(list), want, "{list:?}");
        }
        // 65535 pool sockets of 128 KiB each would be 8 GiB.
        let e = parse_err(&[
            "--backend",
            "tap",
            "--backlog",
            "65535",
            "--rx-buf",
            "65536",
            "--tx-buf",
            "65536",
        ]);
        assert!(
            e.starts_with("--backlog 65535 with 131072 bytes of buffers per socket"),
            "{e}"
        );
    }

    #[test]
    fn options_of_the_other_backend_are_rejected() {
        assert_eq!(
            parse_err(&["--tap", "nptap1"]),
            "option --tap applies only to --backend tap"
        );
        assert_eq!(
            parse_err(&[
                "--addr",
                "10.0.0.2/24",
                "--gateway",
                "10.0.0.1",
                "--rx-buf",
                "4096",
                "--tx-buf",
                "4096",
                "--backend",
                "epoll",
            ]),
            "options --addr, --gateway, --rx-buf, --tx-buf apply only to --backend tap"
        );
        assert_eq!(
            parse_err(&["--backend", "tap", "--workers", "2"]),
            "option --workers applies only to --backend epoll"
        );
        // Order does not matter: the backend may come last.
        assert!(parse_echo(&args(&["--tap", "nptap1", "--backend", "tap"])).is_ok());
    }

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
