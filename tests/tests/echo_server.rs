//! The shared echo server (`netpoll_stack::echo`, what `netpoll echo` and the UEFI guest run)
//! over the in-memory wire: host A serves, host B's clients check it, in simulated time.

use std::time::Duration;

use netpoll_drivers::{SmolBackend, WireDevice, WireNet};
use netpoll_stack::echo::{close_all, wait_until, EchoOptions, EchoServer};
use netpoll_stack::{ErrorKind, SocketBackend, TcpListener, TcpStream};

type Backend = SmolBackend<WireDevice>;

/// Starts a server on A's port 7 with `options`; returns it and its listener.
fn start(net: &WireNet, options: EchoOptions) -> (EchoServer<Backend>, TcpListener<Backend>) {
    let listener = TcpListener::bind(&net.a, net.addr_a(7)).expect("listen");
    let server = EchoServer::new(options);
    let (s, l) = (server.clone(), listener.clone());
    net.a.handle().spawn(async move { s.serve(&l).await });
    (server, listener)
}

/// Reads until end of stream.
async fn read_to_end(conn: &TcpStream<Backend>) -> Result<Vec<u8>, netpoll_stack::Error> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await? {
            0 => return Ok(got),
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn echoes_byte_for_byte_and_closes_after_a_half_close() {
    // Buffers on the stack (128, 4096) and lent from the server's spares (64 KiB).
    for buf_size in [128, 4096, 64 * 1024] {
        echo_clients(buf_size);
    }
}

fn echo_clients(buf_size: usize) {
    let mut net = WireNet::new();
    let options = EchoOptions {
        buf_size,
        ..EchoOptions::default()
    };
    let (server, _listener) = start(&net, options);
    let (b, addr) = (net.b.clone(), net.addr_a(7));
    let handle = net.b.handle().clone();
    net.scheduler.block_on(async move {
        // Several clients at once, each half-closing after 100 KiB (far more than the
        // 128-byte reads and the socket buffers, so replies wait for room).
        let clients: Vec<_> = (0..8u8)
            .map(|seed| {
                let b = b.clone();
                handle.spawn(async move {
                    let conn = TcpStream::connect(&b, addr).await.expect("connect");
                    let payload = pattern(100 * 1024, seed);
                    let (writer, sent) = (conn.clone(), payload.clone());
                    let write = conn.handle().spawn(async move {
                        writer.write_all(&sent).await.expect("write");
                        writer.shutdown_write().expect("half-close");
                    });
                    let got = read_to_end(&conn).await.expect("read");
                    write.await;
                    conn.close().await.expect("close");
                    got == payload
                })
            })
            .collect();
        for c in clients {
            assert!(
                c.await,
                "a client got back other bytes than it sent (buf {buf_size})"
            );
        }
        let h = b.handle().clone();
        assert!(wait_until(&h, Duration::from_secs(5), || server.stats().active == 0).await);
        let stats = server.stats();
        assert_eq!(
            (stats.accepted, stats.active, stats.errors),
            (8, 0, 0),
            "{stats:?}"
        );
    });
}

#[test]
fn a_peer_reset_is_counted_and_the_server_keeps_serving() {
    let mut net = WireNet::new();
    let (server, _listener) = start(&net, EchoOptions::default());
    let (b, addr) = (net.b.clone(), net.addr_a(7));
    net.scheduler.block_on(async move {
        let h = b.handle().clone();
        let conn = TcpStream::connect(&b, addr).await.expect("connect");
        conn.write_all(&pattern(6000, 1)).await.expect("write");
        conn.abort().await.expect("abort");
        assert!(
            wait_until(&h, Duration::from_secs(5), || server.stats().resets == 1).await,
            "{:?}",
            server.stats()
        );
        let conn = TcpStream::connect(&b, addr)
            .await
            .expect("connect after the reset");
        conn.write_all(b"still here").await.expect("write");
        conn.shutdown_write().expect("half-close");
        assert_eq!(read_to_end(&conn).await.expect("read"), b"still here");
        assert_eq!(server.stats().errors, 0);
    });
}

#[test]
fn past_the_connection_limit_a_client_is_reset_and_the_others_are_served() {
    let mut net = WireNet::new();
    let options = EchoOptions {
        max_connections: 2,
        ..EchoOptions::default()
    };
    let (server, _listener) = start(&net, options);
    let (b, addr) = (net.b.clone(), net.addr_a(7));
    net.scheduler.block_on(async move {
        let h = b.handle().clone();
        let first = TcpStream::connect(&b, addr).await.expect("connect");
        let second = TcpStream::connect(&b, addr).await.expect("connect");
        assert!(wait_until(&h, Duration::from_secs(5), || server.stats().active == 2).await);
        let third = TcpStream::connect(&b, addr)
            .await
            .expect("the handshake completes");
        let mut buf = [0u8; 16];
        let refused = third.read(&mut buf).await;
        assert_eq!(
            refused.map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionReset)
        );
        assert_eq!(server.stats().refused, 1);
        for conn in [&first, &second] {
            conn.write_all(b"ping").await.expect("write");
            conn.shutdown_write().expect("half-close");
            assert_eq!(read_to_end(conn).await.expect("read"), b"ping");
        }
        // Room again: a new client is served.
        assert!(wait_until(&h, Duration::from_secs(5), || server.stats().active == 0).await);
        let fourth = TcpStream::connect(&b, addr).await.expect("connect");
        fourth.write_all(b"pong").await.expect("write");
        fourth.shutdown_write().expect("half-close");
        assert_eq!(read_to_end(&fourth).await.expect("read"), b"pong");
    });
}

#[test]
fn close_all_ends_open_connections_with_a_fin() {
    let mut net = WireNet::new();
    let options = EchoOptions {
        track_connections: true,
        ..EchoOptions::default()
    };
    let (server, listener) = start(&net, options);
    let (b, addr) = (net.b.clone(), net.addr_a(7));
    let a_handle = net.a.handle().clone();
    net.scheduler.block_on(async move {
        let h = b.handle().clone();
        let conn = TcpStream::connect(&b, addr).await.expect("connect");
        conn.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        read_exact(&conn, &mut buf).await;
        assert_eq!(&buf, b"hello");
        assert!(wait_until(&h, Duration::from_secs(5), || server.stats().active == 1).await);
        // The client reads on and closes at EOF, as a well-behaved one does.
        let client = h.spawn(async move {
            let rest = read_to_end(&conn).await;
            let _ = conn.close().await;
            rest
        });
        listener.close().await.expect("close the listener");
        let (closed, reset) = close_all(&server, &a_handle, Duration::from_millis(300)).await;
        assert_eq!((closed, reset), (1, 0), "the client got a FIN, not a reset");
        assert_eq!(client.await.expect("read"), b"");
    });
}

/// `read` until `buf` is full.
async fn read_exact(conn: &TcpStream<Backend>, buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let n = conn.read(&mut buf[filled..]).await.expect("read");
        assert!(n > 0, "EOF after {filled} bytes");
        filled += n;
    }
}

/// What an idle connection costs in its task (besides the socket): the future of
/// `EchoServer::connection`, 32 bytes (the stream, the server's handle, the slot of a
/// pending write or close).
#[test]
fn an_idle_connection_task_stays_small() {
    let mut net = WireNet::new();
    let listener = TcpListener::bind(&net.a, net.addr_a(7)).expect("listen");
    let (b, addr) = (net.b.clone(), net.addr_a(7));
    net.scheduler.block_on(async move {
        let client = TcpStream::connect(&b, addr).await.expect("connect");
        let (conn, _) = listener.accept().await.expect("accept");
        let server = EchoServer::new(EchoOptions::default());
        let size = std::mem::size_of_val(&server.connection(conn));
        assert!(size <= 32, "the echo task's future is {size} bytes");
        drop(client);
    });
}
