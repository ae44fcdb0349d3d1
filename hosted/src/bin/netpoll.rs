//! The `netpoll` command: an echo server on netpoll (Go's netpoller semantics in Rust).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use std::net::Ipv4Addr;

use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, TapNet};
use netpoll_hosted::{signal, ErrorKind, Runtime};
use netpoll_stack::{SocketBackend, TcpListener, TcpStream};

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
    --buf BYTES       Per-connection read buffer size [default: 128]
    --workers N       Worker threads of the epoll runtime [default: number of CPUs]
    --quiet           Do not log per-connection errors
    -h, --help        Print this help

Ctrl-C (SIGINT) or SIGTERM stops the server cleanly: the listener is closed, the process
exits with status 0.

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
    backend: Backend,
    tap: String,
    addr: (Ipv4Addr, u8),
    gateway: Option<Ipv4Addr>,
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
    };
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
            "--tap" => opts.tap = value("--tap")?,
            "--addr" => opts.addr = parse_cidr(&value("--addr")?)?,
            "--gateway" => {
                let v = value("--gateway")?;
                opts.gateway = Some(
                    v.parse()
                        .map_err(|_| format!("--gateway {v:?}: expected an IPv4 address"))?,
                );
            }
            "--buf" => {
                let v = value("--buf")?;
                opts.buf = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=16 << 20).contains(&n))
                    .ok_or_else(|| {
                        format!("--buf {v:?}: expected a size from 1 to 16777216 bytes")
                    })?;
            }
            "--workers" => {
                let v = value("--workers")?;
                opts.workers = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| (1..=1024).contains(&n))
                        .ok_or_else(|| format!("--workers {v:?}: expected 1 to 1024"))?,
                );
            }
            "--quiet" => opts.quiet = true,
            other => return Err(format!("unknown option {other:?}")),
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
}

/// Set once, before the server accepts: connections read their options here rather than each
/// idle task carrying a copy (every byte of an idle task counts, issue 4's s4).
static CONN_OPTIONS: OnceLock<ConnOptions> = OnceLock::new();

fn conn_options() -> ConnOptions {
    *CONN_OPTIONS
        .get()
        .expect("netpoll echo: connection options are set before the first accept")
}

/// Logs a connection's error, naming its peer if the socket still knows it (after a reset it
/// may not). The address is looked up here rather than kept in every connection's task.
fn report<B: SocketBackend>(conn: &TcpStream<B>, e: netpoll_stack::Error) {
    if conn_options().quiet {
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

async fn serve<B: SocketBackend>(listener: TcpListener<B>) {
    loop {
        match listener.accept().await {
            Ok((conn, _peer)) => {
                listener.handle().spawn(echo_conn(conn));
            }
            Err(e) if e.kind() == ErrorKind::Closed => return,
            Err(e) => {
                // Out of descriptors or buffers: back off and keep serving (as Go's net/http).
                log!("netpoll echo: accept: {e}; retrying in 10ms");
                listener.handle().sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Listens, serves until SIGINT/SIGTERM, then closes the listener.
async fn echo_server<B: SocketBackend>(
    backend: B,
    opts: &EchoOptions,
    engine: &str,
) -> Result<(), String> {
    let listener =
        TcpListener::bind(&backend, opts.listen).map_err(|e| format!("{}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Only one server per process sets it; a second would keep the first's options.
    let _ = CONN_OPTIONS.set(ConnOptions {
        buf_size: opts.buf,
        quiet: opts.quiet,
    });
    log!("netpoll echo: listening on {addr} (backend {engine})");
    race(serve(listener.clone()), signal::termination()).await;
    log!("netpoll echo: shutting down");
    let _ = listener.close().await;
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
            rt.block_on(echo_server(backend, &opts, &engine))
        }
        Backend::Tap => {
            let (ip, prefix) = opts.addr;
            let mut config = Config::with_address(
                IpCidr::new(ip.into(), prefix),
                // A locally administered unicast MAC.
                EthernetAddress([0x02, 0x6e, 0x70, 0x00, 0x00, 0x01]),
            );
            config.gateway_v4 = opts.gateway;
            let mut net = TapNet::open(&opts.tap, config).map_err(|e| {
                format!(
                    "TAP device {:?}: {e} (the tap backend needs CAP_NET_ADMIN and /dev/net/tun)",
                    opts.tap
                )
            })?;
            log!(
                "netpoll echo: smoltcp on TAP {} as {ip}/{prefix}; give the kernel side an address \
                 in that subnet and bring the link up",
                opts.tap
            );
            let backend = net.backend.clone();
            net.scheduler.block_on(echo_server(backend, &opts, "tap"))
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
