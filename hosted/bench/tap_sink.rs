//! netpoll on smoltcp over a TAP device, bulk one way: the netpoll side of the bulk receive and
//! bulk transmit measurements of `hosted/bench/tap.py` (Linux, needs `CAP_NET_ADMIN`; run it
//! in a network namespace), plus an echo with a chosen backlog.
//!
//! The same modes as `raw_benchmark` (smoltcp alone), written as a netpoll application:
//! an accept loop and one task per connection over `TcpListener` / `TcpStream`, on `TapNet`
//! with the configuration `netpoll echo --backend tap` uses (64 KiB socket buffers unless
//! `--rx-buf` / `--tx-buf` say otherwise, backlog 128, MTU 1500):
//!
//! * `sink`: reads `--buf` bytes at a time and verifies the bulk pattern; after the client's
//!   FIN, answers `OK <bytes>\n` and closes;
//! * `source`: writes the bulk pattern, `--buf` bytes per `write_all`, until the client goes
//!   away;
//! * `echo`: `netpoll echo`'s loop (read into `--buf` bytes, `write_all` them back). The echo
//!   measurements use `netpoll echo --backend tap` itself; this mode exists for `--backlog`,
//!   which `netpoll echo` does not have: the benchmark's diagnostic row runs it with an accept
//!   pool of one socket to show what the 128 pool sockets cost.
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
//! Once it listens it prints `listening <ip:port>` on stdout (its only output there).

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
mod bench_support;

use bench_support::{Mode, ServerOptions as Options};

use std::process::ExitCode;
use std::sync::Arc;

use bench_support::{fill, mismatch, pattern, TRAILER_PREFIX};
use netpoll_drivers::smoltcp::wire::EthernetAddress;
use netpoll_drivers::{Config, SmolBackend, TapDevice, TapNet};
use netpoll_stack::{TcpListener, TcpStream};

const USAGE: &str = "\
tap_sink: netpoll on smoltcp over TAP, bulk sink or source (hosted/bench/tap.py)

OPTIONS:
    --tap NAME          TAP interface to create or attach to [default: nptap0]
    --addr CIDR         smoltcp's address [default: 10.7.0.2/24]
    --port N            TCP port to serve [default: 9009]
    --mode MODE         sink | source | echo [default: sink]
    --buf BYTES         Bytes per read (sink, echo) or write (source) [default: 65536]
    --backlog N         Listen backlog: smoltcp sockets in the accept pool [default: 128]
    --rx-buf BYTES      smoltcp's receive buffer per TCP socket, 1024 to 16777216
                        [default: 65536, as `netpoll echo`]
    --tx-buf BYTES      smoltcp's send buffer per TCP socket, 1024 to 16777216
                        [default: 65536, as `netpoll echo`]
    --exit-after SECS   Exit after this long (0: never) [default: 0]
";

/// The socket buffer sizes when `--rx-buf` / `--tx-buf` are not given: those of
/// `netpoll echo --backend tap`, whatever `Config::default` says.
const DEFAULT_SOCKET_BUF: usize = 64 * 1024;

/// smoltcp's buffers per TCP socket (`--rx-buf`, `--tx-buf`).
#[derive(Debug, Clone, Copy)]
struct SocketBuffers {
    rx: usize,
    tx: usize,
}

/// The value of `--rx-buf` / `--tx-buf`.
fn socket_buffer(p: &mut lexopt::Parser, name: &str) -> Result<usize, String> {
    match bench_support::num::<usize>(p, name)? {
        n @ 1024..=16_777_216 => Ok(n),
        n => Err(format!("{name} {n}: a byte count from 1024 to 16777216")),
    }
}

/// Parses the command line: the options shared with the other TAP server (`bench_support`)
/// plus the socket buffers.
fn parse_args(mut p: lexopt::Parser) -> Result<Option<(Options, SocketBuffers)>, String> {
    use lexopt::Arg::{Long, Short};
    let mut o = Options::defaults(Mode::Sink, 64 * 1024);
    let mut bufs = SocketBuffers {
        rx: DEFAULT_SOCKET_BUF,
        tx: DEFAULT_SOCKET_BUF,
    };
    while let Some(arg) = bench_support::next(&mut p)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("rx-buf") => bufs.rx = socket_buffer(&mut p, "--rx-buf")?,
            Long("tx-buf") => bufs.tx = socket_buffer(&mut p, "--tx-buf")?,
            Long(name) => {
                let name = name.to_owned();
                o.take(&mut p, &name)?;
            }
            other => return Err(bench_support::unexpected(other)),
        }
    }
    Ok(Some((o.check()?, bufs)))
}

type Stream = TcpStream<SmolBackend<TapDevice>>;

/// Reads and verifies until the client's FIN, then answers with the byte count.
async fn sink(conn: Stream, buf_size: usize, pattern: Arc<Vec<u8>>) {
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
async fn source(conn: Stream, buf_size: usize, pattern: Arc<Vec<u8>>) {
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
async fn echo(conn: Stream, buf_size: usize) {
    let mut buf = vec![0u8; buf_size];
    while let Ok(n @ 1..) = conn.read(&mut buf).await {
        if conn.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = conn.close().await;
}

fn run(o: Options, bufs: SocketBuffers) -> Result<(), String> {
    let mut config = Config::with_address(
        o.cidr,
        // The MAC `netpoll echo --backend tap` uses.
        EthernetAddress([0x02, 0x6e, 0x70, 0x00, 0x00, 0x01]),
    );
    config.rx_buffer = bufs.rx;
    config.tx_buffer = bufs.tx;
    let mut net =
        TapNet::open(&o.tap, config).map_err(|e| format!("TAP device {:?}: {e}", o.tap))?;
    let backend = net.backend.clone();
    let handle = net.scheduler.handle().clone();
    let addr = o.listen_addr();
    let pattern = Arc::new(pattern());
    let (mode, buf, backlog, exit_after) = (o.mode, o.buf, o.backlog, o.exit_after);
    let result = net.scheduler.try_block_on(async move {
        let listener = TcpListener::bind_with_backlog(&backend, addr, backlog)
            .map_err(|e| format!("{addr}: {e}"))?;
        bench_support::announce_listening(addr);
        eprintln!(
            "tap_sink: listening on {addr} (mode {mode:?}, backlog {backlog}, socket buffers \
             {} rx + {} tx, TAP {})",
            bufs.rx, bufs.tx, o.tap
        );
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
    });
    match result {
        Ok(r) => r,
        Err(e) => Err(format!("scheduler: {e}")),
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
        Ok(Some((o, bufs))) => match run(o, bufs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tap_sink: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
