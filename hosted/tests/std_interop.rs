//! Kernel sockets and `std::net`: adopting std sockets, handing them back, descriptors,
//! keep-alive and TTL, and connecting by host name.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netpoll_hosted::{backend, connect, connect_deadline, lookup_host, now, spawn, Runtime};
use netpoll_hosted::{TcpListener, TcpListenerExt, TcpStream, TcpStreamExt};

#[test]
fn a_std_listener_and_stream_are_adopted_and_handed_back() {
    Runtime::new().unwrap().block_on(async {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = TcpListener::from_std(std_listener).unwrap();
        assert!(listener.as_raw_fd() >= 0);
        assert_eq!(listener.local_addr().unwrap(), addr);

        // A blocking std client on its own thread, a netpoll server on the adopted listener.
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).unwrap();
            buf
        });
        let (conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            got += conn.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(&buf, b"ping");

        // Hand the accepted connection to std and answer from there.
        let mut std_conn = conn.into_std().unwrap();
        std_conn.set_nonblocking(false).unwrap();
        std_conn.write_all(b"pong").unwrap();
        assert_eq!(&client.join().unwrap(), b"pong");

        let std_listener = listener.into_std().unwrap();
        assert_eq!(std_listener.local_addr().unwrap(), addr);
    });
}

#[test]
fn an_adopted_std_stream_is_polled_like_a_native_one() {
    Runtime::new().unwrap().block_on(async {
        let listener = TcpListener::bind(&backend(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            netpoll_hosted::sleep(Duration::from_millis(30)).await;
            conn.write_all(b"after a wait").await.unwrap();
            conn
        });
        let stream = TcpStream::from_std(std::net::TcpStream::connect(addr).unwrap()).unwrap();
        let mut buf = [0u8; 32];
        // The read parks on the pollDesc and is woken by the epoll edge.
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"after a wait");
        drop(server.await);
    });
}

#[test]
fn into_std_refuses_while_a_byte_is_read_ahead_and_gives_the_stream_back() {
    Runtime::new().unwrap().block_on(async {
        let listener = TcpListener::bind(&backend(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(&backend(), addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"abcdef").await.unwrap();
        netpoll_hosted::sleep(Duration::from_millis(20)).await;
        // A read that fills its buffer exactly reads one byte ahead.
        let mut four = [0u8; 4];
        assert_eq!(server.read(&mut four).await.unwrap(), 4);
        let err = server.into_std().unwrap_err();
        assert!(err.is_read_ahead(), "{err}");
        let server = err.into_inner();
        let mut rest = [0u8; 8];
        let n = server.try_read(&mut rest[..1]).unwrap();
        assert_eq!(&rest[..n], b"e");
        let mut std_server = server.into_std().unwrap();
        std_server.set_nonblocking(false).unwrap();
        std_server.read_exact(&mut rest[..1]).unwrap();
        assert_eq!(rest[0], b'f');
    });
}

#[test]
fn keepalive_and_ttl_round_trip_on_v4_and_v6() {
    Runtime::new().unwrap().block_on(async {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(&backend(), bind.parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = TcpStream::connect(&backend(), addr).await.unwrap();
            assert_eq!(stream.keepalive().unwrap(), None);
            stream
                .set_keepalive(Some(Duration::from_millis(7_500)))
                .unwrap();
            assert_eq!(stream.keepalive().unwrap(), Some(Duration::from_secs(8)));
            stream.set_keepalive(None).unwrap();
            assert_eq!(stream.keepalive().unwrap(), None);

            stream.set_ttl(17).unwrap();
            assert_eq!(stream.ttl().unwrap(), 17, "{bind}");
            listener.set_ttl(33).unwrap();
            assert_eq!(listener.ttl().unwrap(), 33, "{bind}");
            let e = stream.set_ttl(0).unwrap_err();
            assert_eq!(e.kind(), netpoll_hosted::ErrorKind::InvalidInput);

            stream.close().await.unwrap();
            assert!(stream.ttl().unwrap_err().is_closed());
            assert!(stream.set_keepalive(None).unwrap_err().is_closed());
            assert_eq!(stream.as_raw_fd(), -1);
        }
    });
}

#[test]
fn connect_by_host_name_resolves_on_a_helper_thread() {
    Runtime::new().unwrap().block_on(async {
        // localhost may resolve to ::1 first; listen on both so either order connects.
        let v4 = TcpListener::bind(&backend(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = TcpListener::bind(&backend(), format!("[::1]:{port}").parse().unwrap()).ok();
        let host = format!("localhost:{port}");

        let addrs = lookup_host(&host).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == port));

        let accept_v4 = spawn(async move { v4.accept().await.map(|(c, _)| c) });
        let conn = connect(&host).await.unwrap();
        assert_eq!(conn.peer_addr().unwrap().port(), port);
        if v6.is_none() {
            accept_v4.await.unwrap();
        }

        // Numeric addresses need no lookup.
        assert_eq!(
            lookup_host("[::1]:80").await.unwrap(),
            ["[::1]:80".parse().unwrap()]
        );
        // A name that cannot resolve, and input that is not host:port, are errors.
        assert!(lookup_host("no-such-host.invalid:80").await.is_err());
        assert!(connect("localhost").await.is_err());
    });
}

#[test]
fn connect_tries_each_address_in_order() {
    Runtime::new().unwrap().block_on(async {
        // "localhost" with a port nobody listens on: every address refuses, and the
        // first refusal is reported.
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = unused.local_addr().unwrap().port();
        drop(unused);
        let e = connect_deadline(
            &format!("localhost:{port}"),
            Some(now() + Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    });
}
