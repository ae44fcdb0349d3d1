//! `netpoll_hosted::timeout` / `timeout_at` on kernel sockets: expiry drops the pending read
//! (its pollDesc wait and read lock go with it), so the connection stays usable.

use std::time::{Duration, Instant};

use netpoll_hosted::{backend, now, spawn, timeout, timeout_at, Elapsed, Runtime};
use netpoll_hosted::{ErrorKind, TcpListener, TcpStream};

#[test]
fn a_read_that_times_out_leaves_the_connection_usable() {
    Runtime::new().unwrap().block_on(async {
        let b = backend();
        let listener = TcpListener::bind(&b, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            netpoll_hosted::sleep(Duration::from_millis(150)).await;
            conn.write_all(b"late").await.unwrap();
            conn
        });
        let client = TcpStream::connect(&b, addr).await.unwrap();
        let mut buf = [0u8; 8];

        let started = Instant::now();
        let first = timeout(Duration::from_millis(40), client.read(&mut buf)).await;
        let waited = started.elapsed();
        let elapsed: Elapsed = first.unwrap_err();
        assert!(
            waited >= Duration::from_millis(40),
            "returned early: {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(140),
            "returned late: {waited:?}"
        );
        assert_eq!(ErrorKind::from(elapsed), ErrorKind::TimedOut);
        // The dropped read gave back its lock and withdrew its wait.
        assert_eq!(netpoll_hosted::handle().waiters(), 0);

        let n = timeout_at(now() + Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the second read gets the data in time")
            .unwrap();
        assert_eq!(&buf[..n], b"late");
        drop(server.await);
    });
}

#[test]
fn an_elapsed_timeout_becomes_a_timed_out_io_error() {
    Runtime::new().unwrap().block_on(async {
        let never = std::future::pending::<()>();
        let e = timeout(Duration::from_millis(1), never).await.unwrap_err();
        let err = netpoll_hosted::Error::new(netpoll_hosted::Op::Read, e.into());
        assert!(err.is_timeout());
        assert_eq!(err.to_string(), "read tcp: i/o timeout");
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    });
}
