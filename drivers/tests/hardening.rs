//! Regression tests for the userspace engine under hostile input, on the in-memory wire in
//! simulated time: late duplicate SYNs, spoofed SYN floods, half-open expiry, and per-frame
//! cost with many connections held.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netpoll_drivers::smoltcp::socket::tcp::State;
use netpoll_drivers::smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket,
};
use netpoll_drivers::{Side, WireDevice, WireNet};
use netpoll_stack::{TcpListener, TcpStream};

mod support;

use support::spoofed_syn;

type B = netpoll_drivers::SmolBackend<WireDevice>;

/// Whether `frame` is a TCP SYN without ACK.
fn is_syn(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if ip.next_header() != IpProtocol::Tcp {
        return false;
    }
    TcpPacket::new_checked(ip.payload()).is_ok_and(|t| t.syn() && !t.ack())
}

async fn echo_once<D>(conn: &TcpStream<netpoll_drivers::SmolBackend<D>>, msg: &[u8])
where
    D: netpoll_drivers::smoltcp::phy::Device + Send + 'static,
{
    conn.write_all(msg).await.expect("write");
    let mut got = vec![0u8; msg.len()];
    let mut n = 0;
    while n < msg.len() {
        match conn.read(&mut got[n..]).await {
            Ok(0) => panic!("EOF after {n} of {} bytes", msg.len()),
            Ok(k) => n += k,
            Err(e) => panic!("read: {e} after {n} bytes"),
        }
    }
    assert_eq!(got, msg);
}

/// An echo server: accepts forever, one task per connection.
fn spawn_echo_server(h: &netpoll_core::Handle, listener: TcpListener<B>) {
    let h2 = h.clone();
    h.spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            h2.spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = conn.close().await;
            });
        }
    });
}

/// A delayed copy of a connection's SYN reaches host A while the connection is established:
/// it must go to that connection (which answers with a challenge ACK, RFC 9293), not to a free
/// listening socket, whose SYN-ACK would make the peer's next segment draw a reset.
#[test]
fn late_duplicate_syn_does_not_reset_connections() {
    const CONNS: usize = 20;
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(80);
    let wire = net.wire.clone();
    wire.capture(10_000);
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&a, addr, 64).unwrap();
        spawn_echo_server(&h, listener);
        let mut conns = Vec::new();
        for _ in 0..CONNS {
            conns.push(TcpStream::connect(&b, addr).await.unwrap());
        }
        for (i, c) in conns.iter().enumerate() {
            echo_once(c, &[i as u8; 100]).await;
        }
        let syns: Vec<_> = wire
            .take_captured()
            .into_iter()
            .filter(|(side, f)| *side == Side::A && is_syn(f))
            .collect();
        assert_eq!(syns.len(), CONNS, "one SYN per connection captured");
        let rst_before = wire.stats().tcp_rst;
        for (side, frame) in syns {
            assert!(wire.inject(side, frame));
        }
        h.sleep(Duration::from_millis(50)).await;
        for (i, c) in conns.iter().enumerate() {
            echo_once(c, &[0x80 | i as u8; 300]).await;
        }
        assert_eq!(
            wire.stats().tcp_rst,
            rst_before,
            "no connection was reset by its own duplicate SYN"
        );
        for c in conns {
            c.close().await.unwrap();
        }
    });
}

/// 130 SYNs from addresses that never answer, against a backlog of 128: a real client still
/// connects at once (a half-open socket that cannot even send its SYN-ACK is evicted for it),
/// and every half-open socket is gone after `Config::half_open_timeout` (30 s).
#[test]
fn spoofed_syns_do_not_stop_accepting_and_expire() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = a.host().clone();
    let addr = net.addr_a(80);
    let wire = net.wire.clone();
    let clock = net.clock.clone();
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&a, addr, 128).unwrap();
        spawn_echo_server(&h, listener);
        for i in 0..130u16 {
            let src = Ipv4Address::new(10, 0, 0, 100 + (i % 100) as u8);
            wire.inject(
                Side::A,
                spoofed_syn(src, 20_000 + i, 80, i32::from(i) * 7919),
            );
        }
        h.sleep(Duration::from_millis(20)).await;
        let half_open =
            |states: Vec<State>| states.iter().filter(|s| **s == State::SynReceived).count();
        let states = host_a.socket_states();
        assert!(
            half_open(states.clone()) >= 100,
            "the pool is full of half-opens: {states:?} {:?}",
            host_a.stats()
        );
        let start = clock.now();
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        let took = clock.now() - start;
        assert!(
            took < Duration::from_millis(100),
            "connect took {took:?} under 130 spoofed SYNs: {:?}",
            host_a.stats()
        );
        echo_once(&conn, b"still serving").await;
        h.sleep(Duration::from_secs(31)).await;
        assert_eq!(
            half_open(host_a.socket_states()),
            0,
            "half-open connections expired"
        );
        echo_once(&conn, b"and the real one survived").await;
        conn.close().await.unwrap();
    });
}

/// A flood of 100,000 spoofed SYNs at 100,000/s while 200 real clients connect: every client
/// connects, the p99 of their connect times stays bounded, and within 5 s of the flood's end
/// connects are immediate again.
#[test]
fn syn_flood_legitimate_clients_still_connect_and_server_recovers() {
    const FLOOD: u32 = 100_000;
    const PER_MS: u32 = 100;
    const CLIENTS: usize = 200;
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = a.host().clone();
    let addr = net.addr_a(80);
    let wire = net.wire.clone();
    let clock = net.clock.clone();
    let h = net.scheduler.handle().clone();
    let times = Arc::new(Mutex::new(Vec::new()));
    let times2 = times.clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&a, addr, 128).unwrap();
        spawn_echo_server(&h, listener);
        let flood_wire = wire.clone();
        let fh = h.clone();
        let flood = h.spawn(async move {
            let mut sent = 0u32;
            while sent < FLOOD {
                for _ in 0..PER_MS {
                    let n = sent;
                    let src = Ipv4Address::new(10, 0, 0, 10 + (n % 200) as u8);
                    flood_wire.inject(
                        Side::A,
                        spoofed_syn(src, 1024 + (n % 60_000) as u16, 80, n as i32),
                    );
                    sent += 1;
                }
                fh.sleep(Duration::from_millis(1)).await;
            }
        });
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let (b, clock, times, ch) = (b.clone(), clock.clone(), times2.clone(), h.clone());
            clients.push(h.spawn(async move {
                // Spread over the flood's first 800 ms.
                ch.sleep(Duration::from_millis(4 * i as u64)).await;
                let start = clock.now();
                let conn = TcpStream::connect(&b, addr)
                    .await
                    .expect("connect under flood");
                times.lock().unwrap().push(clock.now() - start);
                echo_once(&conn, &[i as u8; 64]).await;
                conn.close().await.unwrap();
            }));
        }
        for c in clients {
            c.await;
        }
        flood.await;
        let flood_end = clock.now();
        // Recovery: within 5 s of the flood's end a connect is immediate again.
        h.sleep(Duration::from_secs(5)).await;
        let start = clock.now();
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        assert!(clock.now() - start < Duration::from_millis(50));
        echo_once(&conn, b"recovered").await;
        conn.close().await.unwrap();
        assert!(clock.now() - flood_end < Duration::from_secs(6));
    });
    let mut t = times.lock().unwrap().clone();
    t.sort();
    assert_eq!(t.len(), CLIENTS, "every client connected");
    let p50 = t[t.len() / 2];
    let p99 = t[t.len() * 99 / 100];
    let stats = host_a.stats();
    println!("flood: connect p50 {p50:?}, p99 {p99:?}, {stats:?}");
    assert!(
        stats.half_open_evicted > 0,
        "the flood cycled through the pool"
    );
    assert!(
        p99 <= Duration::from_secs(1),
        "connect p99 {p99:?} under the flood"
    );
}

/// Early retransmission recovers a lost segment in about `Config::early_retransmit` instead of
/// smoltcp's 1 s minimum timeout, and never fires on a link that loses nothing.
#[test]
fn early_retransmit_fires_on_loss_only() {
    use netpoll_drivers::{Impairments, SimNet};

    fn echo_time(loss_ppm: u32, early: Option<Duration>) -> (Duration, u64) {
        let mut net = SimNet::builder(2)
            .seed(7)
            .impairments(Impairments {
                loss_ppm,
                delay: Duration::from_millis(5),
                ..Impairments::NONE
            })
            .configure(|_, c| c.early_retransmit = early)
            .build()
            .unwrap();
        let addr = net.addr(0, 7);
        let (server, client) = (net.host(0).clone(), net.host(1).clone());
        let server_host = server.host().clone();
        let client_host = client.host().clone();
        let h = net.handle().clone();
        let clock = net.clock.clone();
        let took = net.block_on(async move {
            let listener = TcpListener::bind(&server, addr).unwrap();
            let h2 = h.clone();
            h.spawn(async move {
                let (conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = conn.close().await;
                drop(h2);
            });
            let conn = TcpStream::connect(&client, addr).await.unwrap();
            let start = netpoll_core::Clock::now(&*clock);
            for i in 0..200u32 {
                echo_once(&conn, &[i as u8; 1000]).await;
            }
            let took = netpoll_core::Clock::now(&*clock) - start;
            conn.close().await.unwrap();
            took
        });
        let replays = server_host.stats().early_retransmits + client_host.stats().early_retransmits;
        (took, replays)
    }
    let (_, clean_replays) = echo_time(0, Some(Duration::from_millis(200)));
    assert_eq!(clean_replays, 0, "no early retransmission without loss");
    let (with, replays) = echo_time(50_000, Some(Duration::from_millis(200)));
    let (without, none) = echo_time(50_000, None);
    assert!(replays > 0);
    assert_eq!(none, 0);
    assert!(
        with * 2 < without,
        "200 echoes at 5% loss: {with:?} with early retransmission, {without:?} without"
    );
}

/// Loss in both directions (10% loss, 5 ± 2 ms delay, 25% reordering, 2% duplication, 1%
/// corruption each way): 32 connections each echo seeded data and get every byte back
/// unchanged. (The full 32 × 2 MiB figure is in `docs/userspace-engine.md`, from the
/// `lossy_transfer` example; this is the same workload at a size a debug test can afford.)
#[test]
fn lossy_link_both_directions_delivers_every_byte() {
    use netpoll_drivers::{Impairments, SimNet};
    const CONNS: usize = 32;
    const LEN: usize = 64 * 1024;
    let imp = Impairments {
        loss_ppm: 100_000,
        delay: Duration::from_millis(3),
        jitter: Duration::from_millis(4),
        reorder_ppm: 250_000,
        reorder_delay: Duration::from_millis(4),
        duplicate_ppm: 20_000,
        corrupt_ppm: 10_000,
    };
    let mut net = SimNet::builder(2)
        .seed(11)
        .impairments(imp)
        .build()
        .unwrap();
    let addr = net.addr(0, 7);
    let (server, client) = (net.host(0).clone(), net.host(1).clone());
    let h = net.handle().clone();
    let results = net.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&server, addr, CONNS as u32).unwrap();
        let h2 = h.clone();
        h.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                h2.spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = conn.close().await;
                });
            }
        });
        let tasks: Vec<_> = (0..CONNS)
            .map(|i| {
                let (client, h) = (client.clone(), h.clone());
                h.clone().spawn(async move {
                    let data: Vec<u8> = (0..LEN).map(|k| (k * 31 + i * 7) as u8).collect();
                    let conn = TcpStream::connect(&client, addr).await.expect("connect");
                    let writer = conn.clone();
                    let sent = data.clone();
                    let w = h.spawn(async move {
                        writer.write_all(&sent).await.expect("write");
                        writer.shutdown_write().expect("shutdown");
                    });
                    let mut got = Vec::with_capacity(LEN);
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) => panic!("connection {i}: {e} after {} bytes", got.len()),
                        }
                    }
                    w.await;
                    let _ = conn.close().await;
                    got == data
                })
            })
            .collect();
        let mut ok = Vec::new();
        for t in tasks {
            ok.push(t.await);
        }
        ok
    });
    assert!(results.iter().all(|&ok| ok), "every byte echoed unchanged");
    let stats = net.switch.stats();
    assert!(stats.lost > 0 && stats.duplicated > 0 && stats.corrupted > 0 && stats.reordered > 0);
}

/// TCP frames whose checksum does not hold are dropped before smoltcp sees them (the host
/// verifies each TCP frame once, and smoltcp is built not to verify again): a SYN with a bad
/// TCP checksum, or a bad IPv4 header checksum, takes no pool socket and is counted, and the
/// listener then serves a real client as before.
#[test]
fn frames_with_bad_checksums_are_dropped_and_counted() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = a.host().clone();
    let addr = net.addr_a(80);
    let wire = net.wire.clone();
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&a, addr, 4).unwrap();
        spawn_echo_server(&h, listener);
        let mut syn = spoofed_syn(Ipv4Address::new(10, 0, 0, 99), 40_000, 80, 1234);
        let last = syn.len() - 1;
        syn[last] ^= 0x5a;
        let corrupted_payload = syn.clone();
        wire.inject(Side::A, syn);
        // A SYN with a bad TCP checksum but a valid IPv4 header, and one with both bad.
        let mut both = corrupted_payload;
        both[14 + 10] ^= 0xff;
        wire.inject(Side::A, both);
        h.sleep(Duration::from_millis(20)).await;
        let states = host_a.socket_states();
        assert!(
            !states.contains(&State::SynReceived),
            "a corrupted SYN took a pool socket: {states:?}"
        );
        assert_eq!(host_a.stats().bad_checksums, 2, "{:?}", host_a.stats());
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        echo_once(&conn, b"after the corrupted SYNs").await;
        conn.close().await.unwrap();
    });
}
