//! The simulated network: determinism (same seed, same trace), partitions and holds, each
//! impairment really happening while TCP still delivers every byte, and an echo workload under
//! 100 seeds with every impairment in both directions.

use core::net::SocketAddr;
use core::time::Duration;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use netpoll_core::sched::RunError;
use netpoll_core::Handle;
use netpoll_drivers::smoltcp::phy::{Device, RxToken, TxToken};
use netpoll_drivers::smoltcp::time::Instant as SmolInstant;
use netpoll_drivers::{DriverError, Impairments, SimDevice, SimNet, SimStats, SmolBackend};
use netpoll_stack::{TcpListener, TcpStream};

type B = SmolBackend<SimDevice>;

/// Every impairment at once, at moderate rates.
const ROUGH: Impairments = Impairments {
    loss_ppm: 30_000,
    delay: Duration::from_millis(1),
    jitter: Duration::from_millis(4),
    reorder_ppm: 20_000,
    reorder_delay: Duration::from_millis(6),
    duplicate_ppm: 10_000,
    corrupt_ppm: 5_000,
};

/// xorshift64*: seeded test data without a dependency.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
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

async fn read_exact(s: &TcpStream<B>, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut out[got..]).await {
            Ok(0) => panic!("EOF after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) => panic!("read: {e} after {got} of {n} bytes"),
        }
    }
    out
}

/// Accepts `conns` connections and echoes each until EOF, then closes it.
async fn echo_server(listener: TcpListener<B>, conns: usize) {
    let h = listener.handle().clone();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (conn, _) = listener.accept().await.expect("accept");
        tasks.push(h.spawn(async move {
            let mut buf = vec![0u8; 8 * 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => conn.write_all(&buf[..n]).await.expect("echo write"),
                    Err(e) => panic!("echo read: {e}"),
                }
            }
            conn.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await;
    }
    listener.close().await.expect("close listener");
}

/// Sends `data` (writer task) while reading the echo back (this task); returns the echo.
async fn echo_client(client: B, addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let conn = TcpStream::connect(&client, addr).await.expect("connect");
    let len = data.len();
    let writer = {
        let conn = conn.clone();
        conn.handle().clone().spawn(async move {
            for chunk in data.chunks(10_000) {
                conn.write_all(chunk).await.expect("write");
            }
            conn.shutdown_write().expect("shutdown_write");
        })
    };
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("client read: {e} after {} of {len} bytes", got.len()),
        }
    }
    writer.await;
    conn.close().await.expect("close");
    got
}

/// Runs `task` to completion, failing if it is not done within `limit` of simulated time.
async fn within<T: Send + 'static>(
    h: &Handle,
    limit: Duration,
    task: netpoll_core::JoinHandle<T>,
) -> T {
    let deadline = h.now() + limit;
    while !task.is_finished() {
        assert!(
            h.now() < deadline,
            "not done after {limit:?} of simulated time (a hang)"
        );
        h.sleep(Duration::from_millis(250)).await;
    }
    task.await
}

/// What one echo run observed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    trace: u64,
    stats: SimStats,
    /// Simulated nanoseconds the run took.
    elapsed: u64,
    echoed: Vec<Vec<u8>>,
}

/// Host 0 echoes; hosts 1..=clients each send `len` seeded bytes on one connection.
fn echo_run(seed: u64, clients: usize, len: usize, imp: Impairments) -> Outcome {
    let mut net = SimNet::builder(clients + 1)
        .seed(seed)
        .impairments(imp)
        .configure(|_, c| {
            // Small buffers: more segments per byte, so more impairments per run.
            c.rx_buffer = 16 * 1024;
            c.tx_buffer = 16 * 1024;
        })
        .build()
        .expect("build");
    let addr = net.addr(0, 7);
    let server = net.host(0).clone();
    let clients_b: Vec<B> = (1..=clients).map(|i| net.host(i).clone()).collect();
    let h = net.handle().clone();
    let switch = net.switch.clone();
    let run = catch_unwind(AssertUnwindSafe(|| {
        net.block_on(async move {
            let listener = TcpListener::bind(&server, addr).expect("bind");
            let srv = h.spawn(echo_server(listener, clients));
            let tasks: Vec<_> = clients_b
                .into_iter()
                .enumerate()
                .map(|(i, b)| h.spawn(echo_client(b, addr, random_bytes(len, seed ^ i as u64))))
                .collect();
            let mut echoed = Vec::new();
            for t in tasks {
                echoed.push(within(&h, Duration::from_secs(600), t).await);
            }
            within(&h, Duration::from_secs(60), srv).await;
            echoed
        })
    }));
    match run {
        Ok(echoed) => Outcome {
            trace: switch.trace_hash(),
            stats: switch.stats(),
            elapsed: net.now().as_nanos(),
            echoed,
        },
        Err(panic) => {
            eprintln!(
                "echo run failed: seed {seed}, trace {:016x}, at {:?}, {:?}",
                switch.trace_hash(),
                switch.now(),
                switch.stats()
            );
            resume_unwind(panic)
        }
    }
}

fn assert_echoed(seed: u64, len: usize, out: &Outcome) {
    for (i, got) in out.echoed.iter().enumerate() {
        let want = random_bytes(len, seed ^ i as u64);
        assert_eq!(
            got.len(),
            want.len(),
            "seed {seed} trace {:016x}: connection {i} echoed {} of {} bytes",
            out.trace,
            got.len(),
            want.len()
        );
        if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "seed {seed} trace {:016x}: connection {i}: byte {at} differs",
                out.trace
            );
        }
    }
}

#[test]
fn same_seed_same_trace_and_result() {
    let a = echo_run(11, 2, 32 * 1024, ROUGH);
    let b = echo_run(11, 2, 32 * 1024, ROUGH);
    assert_echoed(11, 32 * 1024, &a);
    assert_eq!(a, b, "seed 11 ran differently twice");
    let s = a.stats;
    assert!(s.lost > 0 && s.reordered > 0, "impairments missing: {s:?}");
}

#[test]
fn different_seeds_give_different_traces() {
    let traces: Vec<u64> = (0..4)
        .map(|seed| {
            let out = echo_run(seed, 1, 16 * 1024, ROUGH);
            assert_echoed(seed, 16 * 1024, &out);
            out.trace
        })
        .collect();
    for (i, t) in traces.iter().enumerate() {
        assert!(
            !traces[..i].contains(t),
            "seed {i} repeats an earlier seed's trace {t:016x}: {traces:x?}"
        );
    }
}

/// Even on a perfect link the seed matters: it picks the TCP initial sequence numbers.
#[test]
fn seed_reaches_the_tcp_stack() {
    let a = echo_run(1, 1, 1000, Impairments::NONE);
    let b = echo_run(2, 1, 1000, Impairments::NONE);
    assert_echoed(1, 1000, &a);
    assert_eq!(a.stats, b.stats, "same frames crossed");
    assert_ne!(a.trace, b.trace, "but with other sequence numbers");
}

/// Runs `imp` on every link, echoes 128 KiB over two connections, and returns the counters.
fn impaired_echo(imp: Impairments) -> Outcome {
    let out = echo_run(5, 2, 128 * 1024, imp);
    assert_echoed(5, 128 * 1024, &out);
    out
}

#[test]
fn loss_happens_and_tcp_delivers_every_byte() {
    let out = impaired_echo(Impairments {
        loss_ppm: 50_000,
        ..Impairments::NONE
    });
    assert!(out.stats.lost > 10, "{:?}", out.stats);
    assert_eq!(out.stats.delivered + out.stats.lost, out.stats.sent);
}

#[test]
fn duplication_happens_and_tcp_delivers_every_byte() {
    let out = impaired_echo(Impairments {
        duplicate_ppm: 50_000,
        ..Impairments::NONE
    });
    let s = out.stats;
    assert!(s.duplicated > 10, "{s:?}");
    assert_eq!(s.delivered, s.sent + s.duplicated);
}

#[test]
fn corruption_happens_and_tcp_delivers_every_byte() {
    let out = impaired_echo(Impairments {
        corrupt_ppm: 30_000,
        ..Impairments::NONE
    });
    let s = out.stats;
    assert!(s.corrupted > 10, "{s:?}");
    // Corrupted frames are delivered; the hosts' checksums reject them.
    assert_eq!(s.delivered, s.sent);
}

#[test]
fn reordering_happens_and_tcp_delivers_every_byte() {
    let out = impaired_echo(Impairments {
        delay: Duration::from_millis(1),
        reorder_ppm: 50_000,
        reorder_delay: Duration::from_millis(5),
        ..Impairments::NONE
    });
    let s = out.stats;
    assert!(s.reordered > 10, "{s:?}");
    assert_eq!(s.delivered, s.sent);
}

#[test]
fn delay_and_jitter_happen_and_tcp_delivers_every_byte() {
    let one_way = Duration::from_millis(20);
    let imp = Impairments {
        delay: one_way,
        jitter: Duration::from_millis(10),
        ..Impairments::NONE
    };
    let out = impaired_echo(imp);
    // At least the ARP exchange, the handshake and one echo: three round trips.
    assert!(
        out.elapsed >= 6 * one_way.as_nanos() as u64,
        "{:?} is too fast for a {one_way:?} link",
        Duration::from_nanos(out.elapsed)
    );
    let clean = impaired_echo(Impairments::NONE);
    assert!(
        out.elapsed > clean.elapsed,
        "{} vs clean {}",
        out.elapsed,
        clean.elapsed
    );
    assert_ne!(out.trace, clean.trace);
}

/// Per-link settings: only the one impaired direction loses frames.
#[test]
fn impairments_are_per_direction() {
    let lossy = Impairments {
        loss_ppm: 100_000,
        ..Impairments::NONE
    };
    let mut net = SimNet::builder(3)
        .seed(3)
        .link(1, 0, lossy)
        .build()
        .unwrap();
    let addr = net.addr(0, 7);
    let (server, c1, c2) = (
        net.host(0).clone(),
        net.host(1).clone(),
        net.host(2).clone(),
    );
    let h = net.handle().clone();
    let (a, b) = net.block_on(async move {
        let listener = TcpListener::bind(&server, addr).unwrap();
        let srv = h.spawn(echo_server(listener, 2));
        let a = h.spawn(echo_client(c1, addr, random_bytes(64 * 1024, 1)));
        let b = h.spawn(echo_client(c2, addr, random_bytes(64 * 1024, 2)));
        let r = (a.await, b.await);
        srv.await;
        r
    });
    assert!(a == random_bytes(64 * 1024, 1) && b == random_bytes(64 * 1024, 2));
    let sw = &net.switch;
    assert!(sw.link_stats(1, 0).lost > 0, "{:?}", sw.link_stats(1, 0));
    for (from, to) in [(0, 1), (0, 2), (2, 0), (1, 2), (2, 1)] {
        assert_eq!(sw.link_stats(from, to).lost, 0, "{from} -> {to}");
    }
    assert!(sw.link_stats(2, 0).delivered > 0);
}

/// An established connection survives a partition: reads time out meanwhile (the deadline
/// fires in simulated time), and after the repair the data written during it arrives.
#[test]
fn partition_then_repair_resumes_the_connection() {
    let mut net = SimNet::builder(2)
        .seed(9)
        .impairments(Impairments {
            delay: Duration::from_millis(2),
            ..Impairments::NONE
        })
        .build()
        .unwrap();
    let addr = net.addr(0, 7);
    let (server, client) = (net.host(0).clone(), net.host(1).clone());
    let h = net.handle().clone();
    let sw = net.switch.clone();
    net.block_on(async move {
        let listener = TcpListener::bind(&server, addr).unwrap();
        let srv = h.spawn(echo_server(listener, 1));
        let conn = TcpStream::connect(&client, addr).await.unwrap();
        conn.write_all(b"before").await.unwrap();
        assert_eq!(read_exact(&conn, 6).await, b"before");

        sw.partition(0, 1);
        assert!(sw.is_partitioned(0, 1) && sw.is_partitioned(1, 0));
        conn.write_all(b"during").await.unwrap();
        let t0 = h.now();
        conn.set_read_deadline(Some(t0 + Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let e = conn
            .read(&mut buf)
            .await
            .expect_err("no echo through a partition");
        assert!(e.is_timeout(), "{e}");
        assert!(h.now() - t0 >= Duration::from_secs(5));
        h.sleep(Duration::from_secs(20)).await;
        let cut = sw.stats().partitioned;
        assert!(cut >= 3, "retransmissions were dropped: {cut}");

        sw.repair(0, 1);
        conn.set_read_deadline(Some(h.now() + Duration::from_secs(60)))
            .unwrap();
        assert_eq!(read_exact(&conn, 6).await, b"during");
        conn.shutdown_write().unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
        srv.await;
    });
    assert_eq!(net.switch.stats().lost, 0);
}

/// The switch itself, without TCP: held frames wait, then cross in the order they were sent.
#[test]
fn hold_then_release_delivers_in_order() {
    let net = SimNet::new(2, 4);
    // Extra ports on the switch; the scheduler never runs, so the hosts take no frames.
    let mut a = SimDevice::new(&net.switch, 0, 1500);
    let mut b = SimDevice::new(&net.switch, 1, 1500);
    let ts = SmolInstant::ZERO;
    let mac_b = [0x02, 0, 0x0a, 0, 0, 2];
    let mut send = |i: u8| {
        a.transmit(ts).unwrap().consume(64, |f| {
            f[..6].copy_from_slice(&mac_b);
            f[6..12].copy_from_slice(&[0x02, 0, 0x0a, 0, 0, 1]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
            f[14] = i;
        });
    };
    let mut recv = || b.receive(ts).map(|(rx, _)| rx.consume(|f| f[14]));

    send(0);
    net.switch.hold(0, 1);
    for i in 1..10 {
        send(i);
    }
    net.clock.advance(Duration::from_secs(1));
    assert_eq!(recv(), None, "a held link delivers nothing");
    assert_eq!(
        net.switch.held_frames(0, 1),
        10,
        "the frame in flight joined the hold"
    );
    net.switch.release(0, 1);
    assert!(!net.switch.is_held(0, 1));
    let got: Vec<u8> = core::iter::from_fn(&mut recv).collect();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    let s = net.switch.link_stats(0, 1);
    assert_eq!((s.sent, s.held, s.delivered), (10, 10, 10));
}

/// Held TCP traffic: nothing arrives while held, everything after the release, no reset.
#[test]
fn hold_then_release_over_tcp() {
    let mut net = SimNet::new(2, 8);
    let addr = net.addr(0, 7);
    let (server, client) = (net.host(0).clone(), net.host(1).clone());
    let h = net.handle().clone();
    let sw = net.switch.clone();
    net.block_on(async move {
        let listener = TcpListener::bind(&server, addr).unwrap();
        let srv = h.spawn(echo_server(listener, 1));
        let conn = TcpStream::connect(&client, addr).await.unwrap();
        conn.write_all(b"x").await.unwrap();
        assert_eq!(read_exact(&conn, 1).await, b"x");
        sw.hold(0, 1);
        for i in 0..5u8 {
            conn.write_all(&[i; 100]).await.unwrap();
            // Let the poller send each write as its own segment.
            h.sleep(Duration::from_millis(1)).await;
        }
        h.sleep(Duration::from_millis(500)).await;
        assert!(sw.held_frames(1, 0) >= 5, "{}", sw.held_frames(1, 0));
        let mut buf = [0u8; 1];
        assert!(conn.try_read(&mut buf).unwrap_err().is_would_block());
        sw.release(0, 1);
        let got = read_exact(&conn, 500).await;
        let want: Vec<u8> = (0..5u8).flat_map(|i| [i; 100]).collect();
        assert_eq!(got, want);
        conn.shutdown_write().unwrap();
        srv.await;
    });
    assert!(net.switch.stats().held >= 5);
}

#[test]
fn idle_wait_with_nothing_pending_is_a_deadlock() {
    let mut net = SimNet::new(2, 0);
    let server = net.host(0).clone();
    let addr = net.addr(0, 7);
    let r = net.try_block_on(async move {
        let listener = TcpListener::bind(&server, addr).unwrap();
        let _ = listener.accept().await;
    });
    assert!(matches!(r, Err(RunError::Source(DriverError::Deadlock))));
}

#[test]
fn builder_rejects_bad_networks() {
    assert!(SimNet::builder(0).build().is_err());
    assert!(SimNet::builder(255).build().is_err());
    assert!(SimNet::builder(2)
        .link(0, 0, Impairments::NONE)
        .build()
        .is_err());
    assert!(SimNet::builder(2)
        .link(0, 2, Impairments::NONE)
        .build()
        .is_err());
    let net = SimNet::new(254, 0);
    assert_eq!(net.ip(253), core::net::Ipv4Addr::new(10, 0, 0, 254));
}

/// The acceptance workload: 100 seeds, every impairment in both directions, three
/// connections each echoing seeded random data: not one byte lost or changed, no hang.
#[test]
fn echo_under_100_seeds_with_every_impairment() {
    const LEN: usize = 64 * 1024;
    let mut totals = SimStats::default();
    for seed in 0..100 {
        let out = echo_run(seed, 3, LEN, ROUGH);
        assert_echoed(seed, LEN, &out);
        let s = out.stats;
        totals.lost += s.lost;
        totals.duplicated += s.duplicated;
        totals.corrupted += s.corrupted;
        totals.reordered += s.reordered;
    }
    assert!(
        totals.lost > 0 && totals.duplicated > 0 && totals.corrupted > 0 && totals.reordered > 0,
        "{totals:?}"
    );
}
