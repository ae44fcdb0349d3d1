//! 32 connections each echo 2 MiB through a badly impaired link in both directions (10% loss,
//! 5 ± 2 ms delay, 25% reordering, 2% duplication, 1% corruption), on the simulated network:
//! how long smoltcp's loss recovery takes, in simulated time, under each set of TCP options.
//!
//! ```text
//! cargo run --release -p netpoll-hosted --example lossy_transfer -- [CONNS] [BYTES] [SEED]
//! ```
//!
//! `ONLY=text` runs only the configurations whose name contains `text`. Prints one line per
//! configuration: simulated seconds to finish, frames sent and lost, and
//! whether every byte came back unchanged. BENCHMARKS.md compares it with the kernel's TCP.

use std::time::Duration;

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
mod bench_support;

use netpoll_drivers::smoltcp::socket::tcp::CongestionControl;
use std::sync::Arc;

use netpoll_core::Clock;
use netpoll_drivers::{Config, Impairments, SimClock, SimDevice, SimNet};
use netpoll_stack::{TcpListener, TcpStream};

type B = netpoll_drivers::SmolBackend<SimDevice>;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The impairment in each direction.
fn impaired() -> Impairments {
    Impairments {
        loss_ppm: 100_000,
        delay: Duration::from_millis(3),
        jitter: Duration::from_millis(4),
        reorder_ppm: 250_000,
        reorder_delay: Duration::from_millis(4),
        duplicate_ppm: 20_000,
        corrupt_ppm: 10_000,
    }
}

async fn client(
    b: B,
    addr: std::net::SocketAddr,
    data: Vec<u8>,
    clock: Arc<SimClock>,
) -> (bool, u64) {
    let conn = TcpStream::connect(&b, addr).await.expect("connect");
    let writer = conn.clone();
    let len = data.len();
    let h = conn.handle().clone();
    let expect = data.clone();
    let w = h.spawn(async move {
        writer.write_all(&data).await.expect("write");
        writer.shutdown_write().expect("shutdown");
    });
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {} bytes", got.len()),
        }
    }
    w.await;
    let _ = conn.close().await;
    (got == expect, clock.now().as_nanos())
}

async fn echo(conn: TcpStream<B>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => conn.write_all(&buf[..n]).await.expect("echo write"),
            Err(e) => panic!("echo read: {e}"),
        }
    }
    let _ = conn.close().await;
}

fn run(name: &str, conns: usize, bytes: usize, seed: u64, tune: impl Fn(&mut Config)) {
    if let Ok(only) = std::env::var("ONLY") {
        if !name.contains(only.as_str()) {
            return;
        }
    }
    let started = std::time::Instant::now();
    let mut net = SimNet::builder(2)
        .seed(seed)
        .impairments(impaired())
        .configure(|_, c| {
            // A closed socket keeps retransmitting its tail this long; with RTO backoff under
            // this much loss, 30 s of silence from the peer happens.
            c.linger = Duration::from_secs(300);
            tune(c)
        })
        .build()
        .expect("build");
    let addr = net.addr(0, 7);
    let (server, b) = (net.host(0).clone(), net.host(1).clone());
    let h = net.handle().clone();
    let clock = net.clock.clone();
    let ok = net.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&server, addr, conns as u32).unwrap();
        let h2 = h.clone();
        h.spawn(async move {
            while let Ok((c, _)) = listener.accept().await {
                h2.spawn(echo(c));
            }
        });
        let tasks: Vec<_> = (0..conns)
            .map(|i| {
                h.spawn(client(
                    b.clone(),
                    addr,
                    random_bytes(bytes, seed ^ i as u64),
                    clock.clone(),
                ))
            })
            .collect();
        let mut ok = true;
        let mut done = Vec::new();
        for t in tasks {
            let (good, at) = t.await;
            ok &= good;
            done.push(at);
        }
        done.sort_unstable();
        (ok, done)
    });
    let (ok, done) = ok;
    let s = net.switch.stats();
    println!(
        "{name:<28} {:>8.1} s simulated  {:>6.1} s real  frames {} lost {}  byte-for-byte: {}",
        net.now().as_nanos() as f64 / 1e9,
        started.elapsed().as_secs_f64(),
        s.sent,
        s.lost,
        if ok { "yes" } else { "NO" }
    );
    let pick = |q: usize| done[(done.len() - 1) * q / 100] as f64 / 1e9;
    println!(
        "{:<28} connections done at p50 {:.1} s, p90 {:.1} s, last {:.1} s",
        "",
        pick(50),
        pick(90),
        pick(100)
    );
}

/// `[CONNS] [BYTES] [SEED]`, each optional.
fn parse_args(mut p: lexopt::Parser) -> Result<(usize, usize, u64), String> {
    let (mut conns, mut bytes, mut seed) = (32usize, 2usize << 20, 1u64);
    let mut position = 0;
    while let Some(arg) = bench_support::next(&mut p)? {
        let lexopt::Arg::Value(v) = arg else {
            return Err(format!(
                "{}; usage: lossy_transfer [CONNS] [BYTES] [SEED]",
                bench_support::unexpected(arg)
            ));
        };
        let v = v.to_string_lossy().into_owned();
        let bad = |name: &str| format!("{name} {v:?}: not a positive integer");
        match position {
            0 => {
                conns = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("CONNS"))?
            }
            1 => {
                bytes = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("BYTES"))?
            }
            2 => seed = v.parse().map_err(|_| bad("SEED"))?,
            _ => return Err(format!("unexpected argument {v:?}")),
        }
        position += 1;
    }
    Ok((conns, bytes, seed))
}

fn main() -> std::process::ExitCode {
    let (conns, bytes, seed) = match parse_args(lexopt::Parser::from_env()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lossy_transfer: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!("{conns} connections x {bytes} bytes echoed, seed {seed}");
    run("defaults", conns, bytes, seed, |_| {});
    run("no early retransmit", conns, bytes, seed, |c| {
        c.early_retransmit = None;
    });
    run("early retransmit 50 ms", conns, bytes, seed, |c| {
        c.early_retransmit = Some(Duration::from_millis(50));
    });
    run("64K buffers", conns, bytes, seed, |c| {
        c.rx_buffer = 64 * 1024;
        c.tx_buffer = 64 * 1024;
    });
    run("64K, no ACK delay", conns, bytes, seed, |c| {
        c.rx_buffer = 64 * 1024;
        c.tx_buffer = 64 * 1024;
        c.ack_delay = None;
    });
    run("64K, no ACK delay, Reno", conns, bytes, seed, |c| {
        c.rx_buffer = 64 * 1024;
        c.tx_buffer = 64 * 1024;
        c.ack_delay = None;
        c.congestion_control = CongestionControl::Reno;
    });
    run("64K, no ACK delay, tstamps", conns, bytes, seed, |c| {
        c.rx_buffer = 64 * 1024;
        c.tx_buffer = 64 * 1024;
        c.ack_delay = None;
        c.timestamps = true;
    });
    run("16K, no ACK delay", conns, bytes, seed, |c| {
        c.rx_buffer = 16 * 1024;
        c.tx_buffer = 16 * 1024;
        c.ack_delay = None;
    });
    std::process::ExitCode::SUCCESS
}
