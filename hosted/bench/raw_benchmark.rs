//! smoltcp alone on a TAP device: the baseline that `hosted/bench/tap.py` compares
//! netpoll-on-TAP with (Linux, needs `CAP_NET_ADMIN`; run it in a namespace).
//!
//! The pattern of smoltcp's own `examples/benchmark.rs`, without netpoll: one loop over the
//! device, a smoltcp `Interface` and a `SocketSet`; each turn polls the interface, serves the
//! sockets, and blocks in `poll(2)` on the TAP fd for at most `iface.poll_delay` (no scheduler,
//! no tasks, no readiness edges). It serves one TCP port in one of three modes:
//!
//! * `sink`: reads and verifies the bulk pattern; after the client's FIN, answers
//!   `OK <bytes>\n` and closes (bulk receive);
//! * `source`: writes the bulk pattern until the client goes away (bulk transmit);
//! * `echo`: writes back what it reads, through a `--buf`-byte buffer (128-byte echo, or bulk
//!   both ways with a large buffer).
//!
//! To keep the comparison about netpoll and not about configuration, the device (netpoll's
//! `TapDevice`), the socket options and the listen pool match what `netpoll echo --backend tap`
//! uses by default: 64 KiB socket buffers, Nagle off, 10 ms delayed ACK, MTU 1500, and a pool
//! of `--backlog` (128) listening sockets, refilled as connections are taken.
//!
//! ```text
//! ip netns add np && ip netns exec np bash
//! cargo run --release -p netpoll-hosted --example raw_benchmark -- \
//!     --tap nptap0 --addr 10.7.0.2/24 --port 9009 --mode sink &
//! ip addr add 10.7.0.1/24 dev nptap0 && ip link set nptap0 up && ip link set lo up
//! cargo run --release -p netpoll-hosted --example bulk_client -- \
//!     --allow-netns --addr 10.7.0.2:9009 --mode send --duration 3
//! exit; ip netns delete np
//! ```
//!
//! Once the TAP device is up it prints `listening <ip:port>` on stdout (its only output there).

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
mod bench_support;

use bench_support::{Mode, ServerOptions as Options};

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench_support::{fill, mismatch, pattern, TRAILER_PREFIX};
use netpoll_drivers::smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use netpoll_drivers::smoltcp::socket::tcp::{self, State};
use netpoll_drivers::smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use netpoll_drivers::smoltcp::wire::EthernetAddress;
use netpoll_drivers::{TapDevice, Wait};

const USAGE: &str = "\
raw_benchmark: smoltcp alone on a TAP device (the baseline of hosted/bench/tap.py)

OPTIONS:
    --tap NAME          TAP interface to create or attach to [default: nptap0]
    --addr CIDR         smoltcp's address [default: 10.7.0.2/24]
    --port N            TCP port to serve [default: 9009]
    --mode MODE         sink | source | echo [default: echo]
    --buf BYTES         Echo buffer [default: 128]
    --backlog N         Listening sockets kept in the pool [default: 128]
    --socket-buf BYTES  Receive and send buffer per TCP socket [default: 65536]
    --exit-after SECS   Exit after this long (0: never) [default: 0]
";

/// Parses the command line: the options shared with the other TAP server (`bench_support`).
fn parse_args(mut p: lexopt::Parser) -> Result<Option<(Options, usize)>, String> {
    let mut o = Options::defaults(Mode::Echo, 128);
    let mut socket_buf = 64 * 1024;
    while let Some(arg) = bench_support::next(&mut p)? {
        match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => return Ok(None),
            lexopt::Arg::Long("socket-buf") => {
                let v = p.value().map_err(|e| e.to_string())?;
                socket_buf = v
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1024..=16 << 20).contains(n))
                    .ok_or_else(|| format!("--socket-buf {v:?}: expected 1024 to 16777216"))?;
            }
            lexopt::Arg::Long(name) => {
                let name = name.to_owned();
                o.take(&mut p, &name)?;
            }
            other => return Err(bench_support::unexpected(other)),
        }
    }
    o.check().map(|o| Some((o, socket_buf)))
}

/// One accepted connection and its progress.
struct Conn {
    handle: SocketHandle,
    /// Stream offset: bytes verified (sink) or queued (source).
    offset: u64,
    /// The sink's trailer was queued (the connection is closing).
    answered: bool,
}

/// A TCP socket configured as netpoll's host configures its sockets by default.
fn new_listening(sockets: &mut SocketSet<'static>, port: u16, socket_buf: usize) -> SocketHandle {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; socket_buf]),
        tcp::SocketBuffer::new(vec![0u8; socket_buf]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(Some(SmolDuration::from_millis(10)));
    // Cannot fail: a fresh socket and a non-zero port.
    let _ = s.listen(port);
    sockets.add(s)
}

/// Serves one connection as far as its buffers allow. `false`: the connection is over and its
/// socket can go.
fn serve(
    mode: Mode,
    s: &mut tcp::Socket<'static>,
    c: &mut Conn,
    buf: &mut [u8],
    pattern: &[u8],
) -> bool {
    match mode {
        Mode::Echo => {
            // Moves at most what the send buffer can take, so nothing is held outside smoltcp.
            while s.can_recv() {
                let room = s.send_capacity() - s.send_queue();
                let want = room.min(buf.len());
                if want == 0 {
                    break;
                }
                let n = s.recv_slice(&mut buf[..want]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                // Cannot fall short: `n` <= the free space measured above.
                let _ = s.send_slice(&buf[..n]);
            }
            if s.state() == State::CloseWait && !s.can_recv() {
                s.close();
            }
        }
        Mode::Sink => {
            while s.can_recv() {
                let bad = s
                    .recv(|data| {
                        let bad = mismatch(pattern, c.offset, data);
                        c.offset += data.len() as u64;
                        (
                            data.len(),
                            bad.map(|at| c.offset - data.len() as u64 + at as u64),
                        )
                    })
                    .unwrap_or(None);
                if let Some(at) = bad {
                    eprintln!("raw_benchmark: sink: byte mismatch at stream offset {at}");
                    s.abort();
                    return true;
                }
            }
            if s.state() == State::CloseWait && !s.can_recv() && !c.answered {
                let trailer = format!("{TRAILER_PREFIX}{}\n", c.offset);
                // Cannot fall short: the send buffer is empty (a sink sends nothing else).
                let _ = s.send_slice(trailer.as_bytes());
                s.close();
                c.answered = true;
            }
        }
        Mode::Source => {
            while s.can_send() {
                let n = s
                    .send(|room| {
                        fill(pattern, c.offset, room);
                        (room.len(), room.len())
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                c.offset += n as u64;
            }
            if s.state() == State::CloseWait {
                s.close();
            }
        }
    }
    !matches!(s.state(), State::Closed | State::TimeWait)
}

fn run(o: Options, socket_buf: usize) -> Result<(), String> {
    let epoch = Instant::now();
    let now = || SmolInstant::from_micros(epoch.elapsed().as_micros() as i64);
    let mut device = TapDevice::open_with_mtu(&o.tap, 1500)
        .map_err(|e| format!("TAP device {:?}: {e}", o.tap))?;
    let waiter = device.waiter();
    let mut config = IfaceConfig::new(EthernetAddress([0x02, 0x6e, 0x70, 0x00, 0x00, 0x01]).into());
    config.random_seed = 0x6e65_7470_6f6c_6c00;
    let mut iface = Interface::new(config, &mut device, now());
    let mut full = false;
    iface.update_ip_addrs(|addrs| full = addrs.push(o.cidr).is_err());
    if full {
        return Err("too many addresses".into());
    }
    let mut sockets = SocketSet::new(Vec::new());
    let mut pool: Vec<SocketHandle> = (0..o.backlog)
        .map(|_| new_listening(&mut sockets, o.port, socket_buf))
        .collect();
    let mut conns: Vec<Conn> = Vec::new();
    let pattern = pattern();
    let mut buf = vec![0u8; o.buf];
    let stop = (!o.exit_after.is_zero()).then(|| Instant::now() + o.exit_after);
    bench_support::announce_listening(o.listen_addr());
    eprintln!(
        "raw_benchmark: listening on {} (mode {:?}, TAP {})",
        o.listen_addr(),
        o.mode,
        device.name()
    );
    loop {
        if stop.is_some_and(|t| Instant::now() >= t) {
            return Ok(());
        }
        waiter.check().map_err(|e| format!("TAP device: {e}"))?;
        iface.poll(now(), &mut device, &mut sockets);

        // "Accept": a pool socket that left LISTEN becomes a connection and is replaced; one
        // reset during the handshake listens again.
        let mut i = 0;
        while i < pool.len() {
            let s = sockets.get_mut::<tcp::Socket<'static>>(pool[i]);
            match s.state() {
                State::Listen | State::SynReceived => i += 1,
                State::Closed | State::TimeWait => {
                    s.abort();
                    let _ = s.listen(o.port);
                    i += 1;
                }
                _ => {
                    let handle = pool.swap_remove(i);
                    conns.push(Conn {
                        handle,
                        offset: 0,
                        answered: false,
                    });
                    pool.push(new_listening(&mut sockets, o.port, socket_buf));
                }
            }
        }

        let mut i = 0;
        while i < conns.len() {
            let handle = conns[i].handle;
            let s = sockets.get_mut::<tcp::Socket<'static>>(handle);
            if serve(o.mode, s, &mut conns[i], &mut buf, &pattern) {
                i += 1;
            } else {
                sockets.remove(handle);
                conns.swap_remove(i);
            }
        }

        // Block until a frame arrives or smoltcp's next timer, as benchmark.rs does; data the
        // sockets just queued makes the delay zero, so the next turn transmits it at once.
        let delay = iface
            .poll_delay(now(), &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(1));
        if !delay.is_zero() {
            let delay = match stop {
                Some(t) => delay.min(t.saturating_duration_since(Instant::now())),
                None => delay,
            };
            waiter
                .wait(Some(delay))
                .map_err(|e| format!("TAP wait: {e}"))?;
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
            eprintln!("raw_benchmark: {e}");
            ExitCode::from(2)
        }
        Ok(Some((o, socket_buf))) => match run(o, socket_buf) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("raw_benchmark: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
