//! netpoll's side of the one-way bulk measurements of `hosted/bench/tap.py`, on any of its
//! engines: smoltcp over a TAP device (`--backend tap`, the default) or over an AF_XDP socket
//! (`--backend xdp --iface NAME`), or the kernel's TCP through netpoll's epoll `Runtime`
//! (`--backend epoll`, one worker thread, as `netpoll echo --backend epoll --workers 1`).
//! Linux; tap and xdp need `CAP_NET_ADMIN` (xdp also `CAP_BPF`): run it in a network
//! namespace. Plus an echo with a chosen backlog.
//!
//! The same modes as `raw_benchmark` (smoltcp alone), written as a netpoll application:
//! an accept loop and one task per connection over `TcpListener` / `TcpStream`; on smoltcp
//! with the configuration of `netpoll echo --backend tap|xdp` but `raw_benchmark`'s 64 KiB
//! socket buffers unless `--rx-buf` / `--tx-buf` say otherwise (backlog 128, MTU 1500 unless
//! `--mtu`):
//!
//! * `sink`: reads `--buf` bytes at a time and verifies the bulk pattern; after the client's
//!   FIN, answers `OK <bytes>\n` and closes;
//! * `source`: writes the bulk pattern, `--buf` bytes per `write_all`, until the client goes
//!   away;
//! * `echo`: `netpoll echo`'s loop (read into `--buf` bytes, `write_all` them back). The echo
//!   measurements use `netpoll echo` itself; the benchmark's diagnostic row runs this mode
//!   with `--backlog 1`, an accept pool of one socket, to show what the 128 pool sockets
//!   cost.
//!
//! ```text
//! ip netns add np && ip netns exec np bash
//! cargo run --release -p netpoll-hosted --example tap_sink -- \
//!     --tap nptap0 --addr 10.7.0.2/24 --port 9009 --mode sink &
//! ip addr add 10.7.0.1/24 dev nptap0 && ip link set nptap0 up && ip link set lo up
//! cargo run --release -p netpoll-hosted --example bulk_client -- \
//!     --allow-netns --addr 10.7.0.2:9009 --mode send --duration 3
//! exit; ip netns delete np
//! ```
//!
//! On AF_XDP, the interface is one end of a veth pair without an address, offloads off on
//! both ends (see `hosted/scripts/xdp-echo.sh`): `--backend xdp --iface npxs --addr
//! 10.6.0.2/24`. With `--backend epoll`, `--addr`'s address is the local one to listen on.
//!
//! Once it listens it prints `listening <ip:port>` on stdout (its only output there).

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
mod bench_support;

use bench_support::{Mode, ServerOptions as Options};

use std::process::ExitCode;
use std::sync::Arc;

use bench_support::{fill, mismatch, pattern, TRAILER_PREFIX};
use netpoll_core::Handle;
use netpoll_drivers::smoltcp::wire::EthernetAddress;
use netpoll_drivers::{Config, TapNet, XdpNet};
use netpoll_hosted::Runtime;
use netpoll_stack::{SocketBackend, TcpListener, TcpStream};

const USAGE: &str = "\
tap_sink: netpoll over TAP, AF_XDP or kernel TCP, bulk sink or source (hosted/bench/tap.py)

OPTIONS:
    --backend ENGINE    tap (smoltcp over TAP) | xdp (smoltcp over AF_XDP) |
                        epoll (kernel TCP, netpoll's Runtime, 1 worker) [default: tap]
    --tap NAME          TAP interface to create or attach to (tap) [default: nptap0]
    --iface NAME        Interface to bind the AF_XDP socket to, queue 0 (xdp; required)
    --addr CIDR         smoltcp's address; with epoll, the address to listen on
                        [default: 10.7.0.2/24]
    --port N            TCP port to serve [default: 9009]
    --mode MODE         sink | source | echo [default: sink]
    --buf BYTES         Bytes per read (sink, echo) or write (source) [default: 65536]
    --backlog N         Listen backlog: smoltcp sockets in the accept pool [default: 128]
    --rx-buf BYTES      smoltcp's receive buffer per TCP socket, 1024 to 16777216
                        [default: 65536, as raw_benchmark] (tap, xdp)
    --tx-buf BYTES      smoltcp's send buffer per TCP socket, 1024 to 16777216
                        [default: 65536, as raw_benchmark] (tap, xdp)
    --mtu BYTES         smoltcp's MTU, 576 to 9000 [default: 1500] (tap, xdp); the
                        interface's own MTU is left as is
    --exit-after SECS   Exit after this long (0: never) [default: 0]
";

/// The socket buffer sizes when `--rx-buf` / `--tx-buf` are not given: `raw_benchmark`'s
/// (fixed), whatever `Config::default` says.
const DEFAULT_SOCKET_BUF: usize = 64 * 1024;

/// Which engine carries the connections (`--backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Engine {
    Tap,
    /// AF_XDP on this interface.
    Xdp(String),
    Epoll,
}

/// What this program takes beyond the options shared with `raw_benchmark`.
#[derive(Debug, Clone)]
struct Extra {
    engine: Engine,
    /// smoltcp's buffers per TCP socket (`--rx-buf`, `--tx-buf`).
    rx_buf: usize,
    tx_buf: usize,
    /// smoltcp's MTU (`--mtu`); `None`: the configuration's default.
    mtu: Option<usize>,
}

/// The value of `--rx-buf` / `--tx-buf`.
fn socket_buffer(p: &mut lexopt::Parser, name: &str) -> Result<usize, String> {
    match bench_support::num::<usize>(p, name)? {
        n @ 1024..=16_777_216 => Ok(n),
        n => Err(format!("{name} {n}: a byte count from 1024 to 16777216")),
    }
}

/// Parses the command line: the options shared with the other TAP server (`bench_support`)
/// plus the engine, socket buffers and MTU.
fn parse_args(mut p: lexopt::Parser) -> Result<Option<(Options, Extra)>, String> {
    use lexopt::Arg::{Long, Short};
    let mut o = Options::defaults(Mode::Sink, 64 * 1024);
    let (mut backend, mut iface) = ("tap".to_string(), None);
    let mut extra = Extra {
        engine: Engine::Tap,
        rx_buf: DEFAULT_SOCKET_BUF,
        tx_buf: DEFAULT_SOCKET_BUF,
        mtu: None,
    };
    let mut smoltcp_only = Vec::new();
    while let Some(arg) = bench_support::next(&mut p)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("backend") => backend = bench_support::text(&mut p, "--backend")?,
            Long("iface") => iface = Some(bench_support::text(&mut p, "--iface")?),
            Long("rx-buf") => {
                extra.rx_buf = socket_buffer(&mut p, "--rx-buf")?;
                smoltcp_only.push("--rx-buf");
            }
            Long("tx-buf") => {
                extra.tx_buf = socket_buffer(&mut p, "--tx-buf")?;
                smoltcp_only.push("--tx-buf");
            }
            Long("mtu") => {
                extra.mtu = match bench_support::num::<usize>(&mut p, "--mtu")? {
                    n @ 576..=9000 => Some(n),
                    n => return Err(format!("--mtu {n}: from 576 to 9000 bytes")),
                };
                smoltcp_only.push("--mtu");
            }
            Long(name) => {
                let name = name.to_owned();
                o.take(&mut p, &name)?;
            }
            other => return Err(bench_support::unexpected(other)),
        }
    }
    extra.engine = match (backend.as_str(), iface) {
        ("tap", None) => Engine::Tap,
        ("xdp", Some(name)) => Engine::Xdp(name),
        ("xdp", None) => return Err("--backend xdp needs --iface NAME".into()),
        ("epoll", None) => Engine::Epoll,
        ("tap" | "epoll", Some(_)) => return Err("--iface is for --backend xdp".into()),
        (other, _) => return Err(format!("--backend {other:?}: tap, xdp or epoll")),
    };
    if extra.engine == Engine::Epoll {
        if let Some(option) = smoltcp_only.first() {
            return Err(format!("{option} is for the smoltcp backends (tap, xdp)"));
        }
    }
    Ok(Some((o.check()?, extra)))
}

/// Reads and verifies until the client's FIN, then answers with the byte count.
async fn sink<B: SocketBackend>(conn: TcpStream<B>, buf_size: usize, pattern: Arc<Vec<u8>>) {
    let mut buf = vec![0u8; buf_size];
    let mut offset = 0u64;
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => {
                let trailer = format!("{TRAILER_PREFIX}{offset}\n");
                let _ = conn.write_all(trailer.as_bytes()).await;
                break;
            }
            Ok(n) => {
                if let Some(at) = mismatch(&pattern, offset, &buf[..n]) {
                    eprintln!(
                        "tap_sink: sink: byte mismatch at stream offset {}",
                        offset + at as u64
                    );
                    let _ = conn.abort().await;
                    return;
                }
                offset += n as u64;
            }
            Err(e) => {
                eprintln!("tap_sink: sink: {e}");
                break;
            }
        }
    }
    let _ = conn.close().await;
}

/// Writes the pattern until the client goes away (a reset or a closed connection).
async fn source<B: SocketBackend>(conn: TcpStream<B>, buf_size: usize, pattern: Arc<Vec<u8>>) {
    let mut buf = vec![0u8; buf_size];
    let mut offset = 0u64;
    loop {
        fill(&pattern, offset, &mut buf);
        if conn.write_all(&buf).await.is_err() {
            break;
        }
        offset += buf.len() as u64;
    }
    let _ = conn.close().await;
}

/// `netpoll echo`'s connection loop.
async fn echo<B: SocketBackend>(conn: TcpStream<B>, buf_size: usize) {
    let mut buf = vec![0u8; buf_size];
    while let Ok(n @ 1..) = conn.read(&mut buf).await {
        if conn.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = conn.close().await;
}

/// Listens on `backend`, announces the address, and serves every connection in its own
/// task, in `o.mode`; `engine` describes the engine in the startup line.
async fn serve<B: SocketBackend>(
    backend: B,
    handle: Handle,
    o: Options,
    engine: String,
) -> Result<(), String> {
    let addr = o.listen_addr();
    let pattern = Arc::new(pattern());
    let (mode, buf, backlog, exit_after) = (o.mode, o.buf, o.backlog, o.exit_after);
    let listener = TcpListener::bind_with_backlog(&backend, addr, backlog)
        .map_err(|e| format!("{addr}: {e}"))?;
    bench_support::announce_listening(addr);
    eprintln!("tap_sink: listening on {addr} (mode {mode:?}, backlog {backlog}, {engine})");
    if !exit_after.is_zero() {
        let h = handle.clone();
        handle.spawn(async move {
            h.sleep(exit_after).await;
            std::process::exit(0);
        });
    }
    loop {
        match listener.accept().await {
            Ok((conn, _peer)) => {
                let pattern = pattern.clone();
                match mode {
                    Mode::Sink => handle.spawn(sink(conn, buf, pattern)),
                    Mode::Source => handle.spawn(source(conn, buf, pattern)),
                    Mode::Echo => handle.spawn(echo(conn, buf)),
                };
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// The smoltcp configuration of `netpoll echo --backend tap|xdp` with these buffers and MTU.
fn smoltcp_config(o: &Options, extra: &Extra) -> Config {
    let mut config = Config::with_address(
        o.cidr,
        // The MAC `netpoll echo --backend tap` uses.
        EthernetAddress([0x02, 0x6e, 0x70, 0x00, 0x00, 0x01]),
    );
    config.rx_buffer = extra.rx_buf;
    config.tx_buffer = extra.tx_buf;
    if let Some(mtu) = extra.mtu {
        config.mtu = mtu;
    }
    config
}

fn run(o: Options, extra: Extra) -> Result<(), String> {
    let bufs = format!("socket buffers {} rx + {} tx", extra.rx_buf, extra.tx_buf);
    match &extra.engine {
        Engine::Tap => {
            let config = smoltcp_config(&o, &extra);
            let engine = format!("{bufs}, MTU {}, TAP {}", config.mtu, o.tap);
            let mut net =
                TapNet::open(&o.tap, config).map_err(|e| format!("TAP device {:?}: {e}", o.tap))?;
            let (backend, handle) = (net.backend.clone(), net.scheduler.handle().clone());
            net.scheduler
                .try_block_on(serve(backend, handle, o, engine))
                .map_err(|e| format!("scheduler: {e}"))?
        }
        Engine::Xdp(iface) => {
            let config = smoltcp_config(&o, &extra);
            let mtu = config.mtu;
            let mut net =
                XdpNet::open(iface, config).map_err(|e| format!("AF_XDP on {iface:?}: {e}"))?;
            let engine = format!(
                "{bufs}, MTU {mtu}, AF_XDP on {iface} queue 0, {} mode",
                net.mode
            );
            let (backend, handle) = (net.backend.clone(), net.scheduler.handle().clone());
            net.scheduler
                .try_block_on(serve(backend, handle, o, engine))
                .map_err(|e| format!("scheduler: {e}"))?
        }
        Engine::Epoll => {
            // One worker thread, like the smoltcp servers (and `netpoll echo --workers 1`).
            let mut rt = Runtime::builder()
                .workers(1)
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            let (backend, handle) = (rt.backend().clone(), rt.handle().clone());
            let engine = "kernel TCP, epoll, 1 worker".to_string();
            rt.try_block_on(serve(backend, handle, o, engine))
                .map_err(|e| format!("epoll failed: {e}"))?
        }
    }
}

fn main() -> ExitCode {
    match parse_args(lexopt::Parser::from_env()) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tap_sink: {e}");
            ExitCode::from(2)
        }
        Ok(Some((o, extra))) => match run(o, extra) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tap_sink: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
