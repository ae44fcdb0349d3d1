//! The smoltcp backend over the in-memory wire: two smoltcp hosts (10.0.0.1 listens, 10.0.0.2
//! connects) under one scheduler, in simulated time unless a test says otherwise. Simulated
//! time makes TCP timers and deadlines instant and the runs deterministic.

use core::net::SocketAddr;
use core::time::Duration;

use netpoll_core::sched::RunError;
use netpoll_drivers::{DriverError, Faults, WireConfig, WireDevice, WireNet};
use netpoll_stack::{ErrorKind, TcpListener, TcpStream};

type B = netpoll_drivers::SmolBackend<WireDevice>;

/// xorshift64*: seeded test data without a dependency.
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

async fn read_to_end(s: &TcpStream<B>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return out,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) => panic!("read_to_end: {e} after {} bytes", out.len()),
        }
    }
}

/// Connects from host B and accepts on `listener`, concurrently.
async fn pair(net_b: &B, listener: &TcpListener<B>) -> (TcpStream<B>, TcpStream<B>) {
    let addr = listener.local_addr().unwrap();
    let h = listener.handle().clone();
    let b = net_b.clone();
    let connect = h.spawn(async move { TcpStream::connect(&b, addr).await });
    let (server, peer) = listener.accept().await.expect("accept");
    let client = connect.await.expect("connect");
    assert_eq!(client.local_addr().unwrap(), peer);
    (client, server)
}

async fn echo_server(listener: TcpListener<B>) {
    let (conn, _) = listener.accept().await.expect("accept");
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => conn.write_all(&buf[..n]).await.expect("echo write"),
            Err(e) => panic!("echo read: {e}"),
        }
    }
    conn.close().await.expect("close");
}

#[test]
fn accept_then_echo() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(7);
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let server = h.spawn(echo_server(listener));
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        assert_eq!(conn.peer_addr().unwrap(), addr);
        assert!(
            conn.nodelay().unwrap(),
            "TCP_NODELAY is on by default, as in Go"
        );
        for i in 0..10u8 {
            let msg = [i; 100];
            conn.write_all(&msg).await.unwrap();
            assert_eq!(read_exact(&conn, 100).await, msg);
        }
        conn.shutdown_write().unwrap();
        assert!(read_to_end(&conn).await.is_empty());
        server.await;
        conn.close().await.unwrap();
    });
    assert_eq!(net.wire.stats().tcp_rst, 0);
}

/// 8 MiB of seeded random bytes echoed through the wire, compared byte for byte, with the
/// writer and the reader as separate tasks (full duplex).
#[test]
fn transfer_8mib_echo_byte_for_byte() {
    const LEN: usize = 8 << 20;
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(9000);
    let h = net.scheduler.handle().clone();
    let data = random_bytes(LEN, 0x5eed);
    let expect = data.clone();
    let got = net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).unwrap();
        let server = h.spawn(echo_server(listener));
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        let writer = {
            let conn = conn.clone();
            h.spawn(async move {
                for chunk in data.chunks(100_000) {
                    conn.write_all(chunk).await.unwrap();
                }
                conn.shutdown_write().unwrap();
            })
        };
        let got = read_to_end(&conn).await;
        writer.await;
        server.await;
        got
    });
    assert_eq!(got.len(), LEN);
    assert!(got == expect, "echoed bytes differ");
}

/// The same transfer over a lossy, corrupting wire: TCP recovers, nothing is lost or garbled.
#[test]
fn transfer_over_lossy_wire() {
    const LEN: usize = 1 << 20;
    let faults = Faults {
        drop_ppm: 20_000,
        corrupt_ppm: 5_000,
        seed: 42,
    };
    let mut net = WireNet::builder()
        .wire(WireConfig {
            faults,
            ..WireConfig::default()
        })
        .build()
        .unwrap();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(9001);
    let h = net.scheduler.handle().clone();
    let data = random_bytes(LEN, 7);
    let expect = data.clone();
    let got = net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).unwrap();
        let server = h.spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let got = read_to_end(&conn).await;
            conn.close().await.unwrap();
            got
        });
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        conn.write_all(&data).await.unwrap();
        conn.close().await.unwrap();
        server.await
    });
    assert!(got == expect, "bytes differ after loss");
    let stats = net.wire.stats();
    assert!(stats.dropped > 0 && stats.corrupted > 0, "{stats:?}");
}

#[test]
fn fin_gives_eof_after_data() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:80".parse().unwrap()).unwrap();
        let (client, server) = pair(&b, &listener).await;
        server.write_all(b"bye").await.unwrap();
        server.close().await.unwrap();
        assert_eq!(read_exact(&client, 3).await, b"bye");
        for _ in 0..3 {
            assert_eq!(
                client.read(&mut [0u8; 8]).await.unwrap(),
                0,
                "EOF is sticky"
            );
        }
        // The half-closed connection still carries our data; the peer socket is gone, so
        // writing eventually fails (never hangs).
        client.close().await.unwrap();
    });
}

#[test]
fn rst_gives_connection_reset() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:81".parse().unwrap()).unwrap();
        let (client, server) = pair(&b, &listener).await;
        let h = listener.handle().clone();
        // A reader blocked before the reset is woken by it.
        let reader = {
            let client = client.clone();
            h.spawn(async move { client.read(&mut [0u8; 8]).await })
        };
        h.sleep(Duration::from_millis(5)).await;
        assert!(!reader.is_finished());
        server.abort().await.unwrap();
        let e = reader.await.expect_err("read after RST");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert!(!e.is_temporary() && !e.is_timeout());
        let e = client.write_all(b"x").await.expect_err("write after RST");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        client.close().await.unwrap();
    });
    assert!(net.wire.stats().tcp_rst >= 1);
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut net = WireNet::new();
    let b = net.b.clone();
    let addr = net.addr_a(4444);
    net.scheduler.block_on(async move {
        let e = TcpStream::connect(&b, addr)
            .await
            .expect_err("nobody listens");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    });
}

/// Backlog 8: eight simultaneous connects all complete before anyone accepts, then all are
/// accepted and echo; no RST crosses the wire.
#[test]
fn backlog_burst_is_accepted() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = net.a.host().clone();
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener =
            TcpListener::bind_with_backlog(&a, "10.0.0.1:82".parse().unwrap(), 8).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                h.spawn(async move { TcpStream::connect(&b, addr).await })
            })
            .collect();
        h.sleep(Duration::from_millis(50)).await;
        assert!(
            clients.iter().all(|c| c.is_finished()),
            "all 8 handshakes complete with nobody accepting yet"
        );
        let mut conns = Vec::new();
        for c in clients {
            conns.push(c.await.expect("connect"));
        }
        for (i, c) in conns.iter().enumerate() {
            let (s, _) = listener.accept().await.unwrap();
            c.write_all(&[i as u8; 10]).await.unwrap();
            let got = read_exact(&s, 10).await;
            assert!(got.iter().all(|&x| x as usize == got[0] as usize));
        }
        assert_eq!(host_a.stats().syns_dropped, 0);
    });
    assert_eq!(
        net.wire.stats().tcp_rst,
        0,
        "a burst within the backlog is never reset"
    );
}

/// Backlog 4, twelve simultaneous connects: four complete at once, the other SYNs are dropped
/// (not answered with RST), and every client gets in once the server accepts.
#[test]
fn backlog_overflow_drops_syns_instead_of_resetting() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = net.a.host().clone();
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener =
            TcpListener::bind_with_backlog(&a, "10.0.0.1:83".parse().unwrap(), 4).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..12u8)
            .map(|i| {
                let b = b.clone();
                h.spawn(async move {
                    let c = TcpStream::connect(&b, addr).await.expect("connect");
                    c.write_all(&[i; 4]).await.unwrap();
                    read_exact(&c, 4).await
                })
            })
            .collect();
        h.sleep(Duration::from_millis(100)).await;
        let stats = host_a.stats();
        assert!(stats.syns_dropped >= 8, "{stats:?}");
        // Serve every client with an ordinary accept loop.
        let server = h.spawn(async move {
            for _ in 0..12 {
                let (s, _) = listener.accept().await.unwrap();
                let msg = read_exact(&s, 4).await;
                s.write_all(&msg).await.unwrap();
            }
        });
        for (i, c) in clients.into_iter().enumerate() {
            assert_eq!(c.await, [i as u8; 4]);
        }
        server.await;
    });
    assert_eq!(
        net.wire.stats().tcp_rst,
        0,
        "overflow SYNs are dropped, not reset"
    );
}

/// A connection reset while it waits in the accept queue is skipped; accept returns the next.
#[test]
fn reset_before_accept_is_skipped() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = net.a.host().clone();
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener =
            TcpListener::bind_with_backlog(&a, "10.0.0.1:84".parse().unwrap(), 4).unwrap();
        let addr = listener.local_addr().unwrap();
        let doomed = TcpStream::connect(&b, addr).await.unwrap();
        doomed.abort().await.unwrap();
        h.sleep(Duration::from_millis(5)).await;
        let good = TcpStream::connect(&b, addr).await.unwrap();
        let (s, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, good.local_addr().unwrap());
        good.write_all(b"ok").await.unwrap();
        assert_eq!(read_exact(&s, 2).await, b"ok");
        assert_eq!(host_a.stats().aborted_before_accept, 1);
    });
}

#[test]
fn read_deadline_times_out() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:85".parse().unwrap()).unwrap();
        let (client, _server) = pair(&b, &listener).await;
        let h = listener.handle().clone();
        let t0 = h.now();
        client
            .set_read_deadline(Some(t0 + Duration::from_millis(50)))
            .unwrap();
        let e = client.read(&mut [0u8; 8]).await.expect_err("deadline");
        assert!(e.is_timeout(), "{e}");
        let took = h.now() - t0;
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(100),
            "{took:?}"
        );
        // Still usable after the deadline is cleared.
        client.set_read_deadline(None).unwrap();
        _server.write_all(b"z").await.unwrap();
        assert_eq!(read_exact(&client, 1).await, b"z");
    });
}

#[test]
fn close_while_blocked_in_read_and_accept() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:86".parse().unwrap()).unwrap();
        let (client, _server) = pair(&b, &listener).await;
        let h = listener.handle().clone();
        let reader = {
            let client = client.clone();
            h.spawn(async move { client.read(&mut [0u8; 8]).await })
        };
        let acceptor = {
            let listener = listener.clone();
            h.spawn(async move { listener.accept().await.map(|_| ()) })
        };
        h.sleep(Duration::from_millis(10)).await;
        assert!(!reader.is_finished() && !acceptor.is_finished());
        client.close().await.unwrap();
        listener.close().await.unwrap();
        assert!(reader.await.expect_err("closed").is_closed());
        assert!(acceptor.await.expect_err("closed").is_closed());
        assert_eq!(h.waiters(), 0);
    });
}

#[test]
fn listener_close_releases_port_synchronously() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let host_a = net.a.host().clone();
    net.scheduler.block_on(async move {
        let addr: SocketAddr = "10.0.0.1:87".parse().unwrap();
        let l1 = TcpListener::bind_with_backlog(&a, addr, 16).unwrap();
        let e = TcpListener::bind(&a, addr).expect_err("port taken");
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
        let before = host_a.stats().sockets;
        assert!(before >= 16);
        l1.close().await.unwrap();
        assert_eq!(host_a.stats().sockets, before - 16, "pool released at once");
        let l2 = TcpListener::bind(&a, addr).expect("listen again on the same port");
        let (c, s) = pair(&b, &l2).await;
        c.write_all(b"again").await.unwrap();
        assert_eq!(read_exact(&s, 5).await, b"again");
    });
}

#[test]
fn shutdown_write_then_write_is_broken_pipe() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:88".parse().unwrap()).unwrap();
        let (client, server) = pair(&b, &listener).await;
        client.write_all(b"last").await.unwrap();
        client.shutdown_write().unwrap();
        assert_eq!(read_to_end(&server).await, b"last");
        let e = client.write_all(b"more").await.expect_err("after shutdown");
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
        // The other direction still works (half close).
        server.write_all(b"reply").await.unwrap();
        assert_eq!(read_exact(&client, 5).await, b"reply");
        client.shutdown_read().unwrap();
        assert_eq!(client.read(&mut [0u8; 4]).await.unwrap(), 0);
    });
}

/// Data leaves at once, not at the next timer (`docs/userspace-engine.md`, "Nothing waits for
/// a timer"). In simulated time the clock moves only when everything is idle, so 200
/// ping-pong round trips must take no simulated time at all.
#[test]
fn egress_never_waits_for_a_timer() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:89".parse().unwrap()).unwrap();
        let server = h.spawn(echo_server(listener));
        let conn = TcpStream::connect(&b, "10.0.0.1:89".parse().unwrap())
            .await
            .unwrap();
        let t0 = h.now();
        for i in 0..200u32 {
            conn.write_all(&i.to_le_bytes()).await.unwrap();
            assert_eq!(read_exact(&conn, 4).await, i.to_le_bytes());
        }
        let took = h.now() - t0;
        assert_eq!(took, Duration::ZERO, "a round trip waited for a timer");
        conn.shutdown_write().unwrap();
        server.await;
    });
}

#[test]
fn many_concurrent_connections() {
    const N: usize = 64;
    let mut net = WireNet::builder()
        .configure(|c| {
            c.rx_buffer = 8 * 1024;
            c.tx_buffer = 8 * 1024;
        })
        .build()
        .unwrap();
    let (a, b) = (net.a.clone(), net.b.clone());
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener =
            TcpListener::bind_with_backlog(&a, "10.0.0.1:90".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let hs = h.clone();
        let server = h.spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..N {
                let (s, _) = listener.accept().await.unwrap();
                tasks.push(hs.spawn(async move {
                    let msg = read_to_end(&s).await;
                    s.write_all(&msg).await.unwrap();
                    s.close().await.unwrap();
                }));
            }
            for t in tasks {
                t.await;
            }
        });
        let clients: Vec<_> = (0..N)
            .map(|i| {
                let b = b.clone();
                h.spawn(async move {
                    let c = TcpStream::connect(&b, addr).await.unwrap();
                    let msg = random_bytes(20_000 + i, i as u64);
                    c.write_all(&msg).await.unwrap();
                    c.shutdown_write().unwrap();
                    assert!(read_to_end(&c).await == msg);
                    c.close().await.unwrap();
                })
            })
            .collect();
        for c in clients {
            c.await;
        }
        server.await;
    });
    assert_eq!(net.wire.stats().tcp_rst, 0);
}

#[test]
fn ipv6_echo() {
    use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr, Ipv6Address};
    use netpoll_drivers::Config;
    let a6 = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let b6 = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    let mut net = WireNet::builder()
        .config_a(Config::with_address(
            IpCidr::new(a6.into(), 64),
            EthernetAddress([2, 0, 0, 0, 0, 0xa]),
        ))
        .config_b(Config::with_address(
            IpCidr::new(b6.into(), 64),
            EthernetAddress([2, 0, 0, 0, 0, 0xb]),
        ))
        .build()
        .unwrap();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(7);
    assert!(addr.is_ipv6());
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).unwrap();
        let server = h.spawn(echo_server(listener));
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        conn.write_all(b"six").await.unwrap();
        assert_eq!(read_exact(&conn, 3).await, b"six");
        conn.shutdown_write().unwrap();
        server.await;
    });
}

/// smoltcp cannot talk to itself: connecting to one's own address fails at once, clearly.
#[test]
fn connect_to_own_address_is_unsupported() {
    let mut net = WireNet::new();
    let a = net.a.clone();
    let addr = net.addr_a(95);
    net.scheduler.block_on(async move {
        let _l = TcpListener::bind(&a, addr).unwrap();
        let e = TcpStream::connect(&a, addr).await.expect_err("no loopback");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    });
}

#[test]
fn listen_on_foreign_address_fails() {
    let net = WireNet::new();
    let e = TcpListener::bind(&net.a, "10.9.9.9:80".parse().unwrap()).expect_err("not ours");
    assert_eq!(e.kind(), ErrorKind::AddrNotAvailable);
    let l = TcpListener::bind(&net.a, "0.0.0.0:0".parse().unwrap()).expect("any address");
    assert_ne!(l.local_addr().unwrap().port(), 0);
}

/// In simulated time a wait that nothing could ever end is reported, not hung on.
#[test]
fn simulated_deadlock_is_an_error() {
    let mut net = WireNet::new();
    let a = net.a.clone();
    let r = net.scheduler.try_block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:91".parse().unwrap()).unwrap();
        let _ = listener.accept().await;
    });
    assert!(matches!(r, Err(RunError::Source(DriverError::Deadlock))));
}

/// Real time and a blocking waiter: a task spawned from another thread wakes the poller.
#[cfg(feature = "std")]
#[test]
fn real_time_wire_with_cross_thread_spawn() {
    let mut net = WireNet::builder().real_time().build().unwrap();
    let (a, b) = (net.a.clone(), net.b.clone());
    let h = net.scheduler.handle().clone();
    let addr = net.addr_a(92);
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).unwrap();
        let server = h.spawn(echo_server(listener));
        let h2 = h.clone();
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h2.spawn(async move {
                let conn = TcpStream::connect(&b, addr).await.unwrap();
                conn.set_read_deadline(Some(conn.handle().now() + Duration::from_millis(30)))
                    .unwrap();
                let t0 = conn.handle().now();
                let e = conn.read(&mut [0u8; 1]).await.expect_err("deadline");
                assert!(e.is_timeout());
                assert!(conn.handle().now() - t0 >= Duration::from_millis(30));
                conn.set_read_deadline(None).unwrap();
                conn.write_all(b"rt").await.unwrap();
                assert_eq!(read_exact(&conn, 2).await, b"rt");
                conn.shutdown_write().unwrap();
            })
        })
        .join()
        .unwrap();
        client.await;
        server.await;
    });
}

/// Sixteen seeds of 5 % loss and 1 % corruption, data both ways and a FIN each way: every
/// byte arrives, every close completes (this found the smoltcp lost-FIN stall that
/// `fin_probe` works around).
#[test]
fn lossy_wire_many_seeds() {
    for seed in 1..=16u64 {
        const LEN: usize = 256 << 10;
        let faults = Faults {
            drop_ppm: 50_000,
            corrupt_ppm: 10_000,
            seed,
        };
        let mut net = WireNet::builder()
            .wire(WireConfig {
                faults,
                ..WireConfig::default()
            })
            .build()
            .unwrap();
        let (a, b) = (net.a.clone(), net.b.clone());
        let addr = net.addr_a(9001);
        let h = net.scheduler.handle().clone();
        let data = random_bytes(LEN, seed);
        let expect = data.clone();
        let (got, back) = net.scheduler.block_on(async move {
            let listener = TcpListener::bind(&a, addr).unwrap();
            let server = h.spawn(async move {
                let (conn, _) = listener.accept().await.unwrap();
                let got = read_to_end(&conn).await;
                conn.write_all(&got[..1000]).await.unwrap();
                conn.close().await.unwrap();
                got
            });
            let conn = TcpStream::connect(&b, addr).await.unwrap();
            conn.write_all(&data).await.unwrap();
            conn.shutdown_write().unwrap();
            let back = read_to_end(&conn).await;
            conn.close().await.unwrap();
            (server.await, back)
        });
        assert!(got == expect, "seed {seed}");
        assert!(back[..] == expect[..1000], "seed {seed}");
    }
}

/// A socket closed with unread data, or receiving data after its close, resets the sender (as
/// Linux does) instead of swallowing data until the window closes and the writer hangs.
#[test]
fn data_to_a_closed_socket_draws_a_reset() {
    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, "10.0.0.1:93".parse().unwrap()).unwrap();
        let h = listener.handle().clone();
        // Peer closed gracefully; our later data draws its RST.
        let (client, server) = pair(&b, &listener).await;
        server.close().await.unwrap();
        assert_eq!(client.read(&mut [0u8; 4]).await.unwrap(), 0);
        let mut err = None;
        for _ in 0..100 {
            match client.write(&[1u8; 1024]).await {
                Ok(_) => h.sleep(Duration::from_millis(1)).await,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        // The RST arrives in CLOSE-WAIT (after the peer's FIN): Linux reports EPIPE then.
        assert_eq!(err.expect("a write fails").kind(), ErrorKind::BrokenPipe);
        // Closed with unread data: RST at once.
        let (client, server) = pair(&b, &listener).await;
        client.write_all(b"unread").await.unwrap();
        h.sleep(Duration::from_millis(5)).await;
        server.close().await.unwrap();
        let e = client.read(&mut [0u8; 4]).await.expect_err("reset");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
    });
}

/// Two schedulers on two threads, one per end of a real-time wire: each waiter watches only
/// its own side. The server's scheduler stops as soon as its task closed the connection: the
/// FIN must already be on the wire (close transmits inline), or the client would never see EOF.
#[cfg(feature = "std")]
#[test]
fn two_schedulers_on_two_threads() {
    use std::sync::Arc;

    use netpoll_core::{Clock, Scheduler};
    use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
    use netpoll_drivers::{
        Config, Host, MonotonicClock, Side, SmolBackend, SmolSource, Watch, Wire, WireWaiter,
    };

    let clock: Arc<dyn Clock> = MonotonicClock::new();
    let wire = Wire::new(WireConfig::default());
    let config = |last: u8| {
        Config::with_address(
            IpCidr::new(Ipv4Address::new(10, 0, 0, last).into(), 24),
            EthernetAddress([2, 0, 0, 0, 0, last]),
        )
    };
    let build = |side: Side, last: u8| {
        let host = Host::new(wire.device(side), config(last), clock.clone()).unwrap();
        let source =
            SmolSource::new(WireWaiter::threaded(&wire, Watch::Side(side))).with_host(host.clone());
        let scheduler = Scheduler::new(source, clock.clone());
        let backend = SmolBackend::new(host, scheduler.handle().clone());
        (scheduler, backend)
    };
    let (mut sched_a, a) = build(Side::A, 1);
    let (mut sched_b, b) = build(Side::B, 2);
    let addr: SocketAddr = "10.0.0.1:96".parse().unwrap();
    let listener = TcpListener::bind(&a, addr).unwrap();
    // CAUTION: unlike the kernel, smoltcp sends only while a scheduler drives the host: the
    // server's scheduler must keep running after `close` until the client has everything
    // (the echo tail and the FIN), so it waits for the client's side to finish.
    let client_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server_done = client_done.clone();
    let handle_a = sched_a.handle().clone();
    let server = std::thread::spawn(move || {
        sched_a.block_on(async move {
            echo_server(listener).await;
            // Bounded: the client finishes within the test's time or the test fails anyway.
            for _ in 0..30_000 {
                if server_done.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                handle_a.sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    });
    let data = random_bytes(1 << 20, 3);
    let expect = data.clone();
    let got = sched_b.block_on(async move {
        let conn = TcpStream::connect(&b, addr).await.unwrap();
        let writer = {
            let conn = conn.clone();
            conn.handle().clone().spawn(async move {
                conn.write_all(&data).await.unwrap();
                conn.shutdown_write().unwrap();
            })
        };
        let got = read_to_end(&conn).await;
        writer.await;
        got
    });
    // Release: pairs with the server thread's Acquire load.
    client_done.store(true, std::sync::atomic::Ordering::Release);
    server.join().unwrap();
    assert!(got == expect);
}
