//! Poll-based I/O on `TcpStream` (`poll_read`, `poll_write`, `writable`, and the futures-io,
//! tokio and embedded-io-async trait impls) keeps the Go semantics of `read`/`write`:
//! deadlines, close, the fdMutex. Each body runs on the kernel (epoll) and on smoltcp over the
//! in-memory wire.

use core::future::poll_fn;
use core::time::Duration;

use futures::future::join;
use netpoll_conformance::io::pattern;
use netpoll_conformance::{assert_closed, assert_timeout, run_case, Env, Harness};
use netpoll_stack::{Error, ErrorKind, Op, SocketBackend, TcpStream};

async fn poll_read<B: SocketBackend>(s: &TcpStream<B>, buf: &mut [u8]) -> Result<usize, Error> {
    poll_fn(|cx| s.poll_read(cx, buf)).await
}

async fn poll_write<B: SocketBackend>(s: &TcpStream<B>, buf: &[u8]) -> Result<usize, Error> {
    poll_fn(|cx| s.poll_write(cx, buf)).await
}

/// A pending `poll_read` fails with the read timeout when its deadline fires, not before.
async fn poll_read_deadline_fires<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let t0 = env.now();
    server
        .set_read_deadline(Some(env.after(Duration::from_millis(100))))
        .unwrap();
    let mut buf = [0u8; 16];
    let e = env
        .within(
            "poll_read under a deadline",
            Duration::from_secs(5),
            poll_read(&server, &mut buf),
        )
        .await
        .expect_err("nothing was sent: the deadline must fail the read");
    assert_timeout(&e, Op::Read);
    assert!(
        env.since(t0) >= Duration::from_millis(90),
        "fired early: {:?}",
        env.since(t0)
    );
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    // Clearing the deadline makes the stream usable again (a timeout does not poison it).
    server.set_read_deadline(None).unwrap();
    client.write_all(b"after").await.unwrap();
    let n = env
        .prompt("poll_read after the deadline", poll_read(&server, &mut buf))
        .await;
    assert_eq!(&buf[..n.unwrap()], b"after");
}

/// `close` wakes a pending `poll_read` with the closed error.
async fn poll_read_woken_by_close<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    let reader = server.clone();
    let task = env.spawn(async move {
        let mut buf = [0u8; 16];
        poll_read(&reader, &mut buf).await
    });
    env.assert_blocked(
        "poll_read with nothing sent",
        &task,
        Duration::from_millis(50),
    )
    .await;
    env.prompt("close", server.close()).await.unwrap();
    let e = env
        .prompt("poll_read after close", task)
        .await
        .expect_err("a closed stream cannot read");
    assert_closed(&e, Op::Read);
    env.assert_no_waiters().await;
}

/// A `poll_read` queues behind a pending `read` (the fdMutex), then reads what follows.
async fn poll_read_queues_behind_read<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let first = server.clone();
    let read = env.spawn(async move {
        let mut buf = [0u8; 1];
        first.read(&mut buf).await.map(|n| buf[..n].to_vec())
    });
    env.sleep(Duration::from_millis(20)).await;
    let second = server.clone();
    let polled = env.spawn(async move {
        let mut buf = [0u8; 16];
        poll_read(&second, &mut buf)
            .await
            .map(|n| buf[..n].to_vec())
    });
    env.assert_blocked("poll_read behind read", &polled, Duration::from_millis(30))
        .await;
    client.write_all(b"a").await.unwrap();
    assert_eq!(env.prompt("read", read).await.unwrap(), b"a");
    client.write_all(b"bc").await.unwrap();
    assert_eq!(env.prompt("poll_read", polled).await.unwrap(), b"bc");
}

/// A pending `poll_write` (send buffer full) fails with the write timeout at its deadline;
/// `writable` then waits for room, and wakes once the peer drains.
async fn poll_write_deadline_and_writable<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    // Fill every buffer on the way: a write of more than they hold never completes.
    let overflow = pattern(env.overflow_len(), 3);
    let filled = env
        .timeout(Duration::from_millis(300), client.write_all(&overflow))
        .await;
    assert!(
        filled.is_none(),
        "the peer reads nothing: the write must block"
    );
    // Then a non-blocking write finds the send buffer full (and `writable` must wait).
    let chunk = pattern(16 * 1024, 4);
    let mut full = false;
    for _ in 0..1024 {
        match client.try_write(&chunk) {
            Ok(_) => {}
            Err(e) if e.is_would_block() => {
                full = true;
                break;
            }
            Err(e) => panic!("try_write: {e}"),
        }
    }
    assert!(full, "try_write never found the send buffer full");
    client
        .set_write_deadline(Some(env.after(Duration::from_millis(100))))
        .unwrap();
    let e = env
        .within(
            "poll_write to a full buffer",
            Duration::from_secs(5),
            poll_write(&client, &chunk),
        )
        .await
        .expect_err("the peer reads nothing: the deadline must fail the write");
    assert_timeout(&e, Op::Write);
    let e = env
        .prompt("writable past the deadline", client.writable())
        .await
        .expect_err("an expired write deadline fails writable");
    assert_timeout(&e, Op::Write);
    client.set_write_deadline(None).unwrap();
    let waiting = client.clone();
    let writable = env.spawn(async move { waiting.writable().await });
    env.assert_blocked(
        "writable with a full buffer",
        &writable,
        Duration::from_millis(50),
    )
    .await;
    // Draining the peer makes room: `writable` wakes, and a write goes through.
    let drain = env.spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while let Ok(n @ 1..) = server.read(&mut buf).await {
            got += n;
        }
        got
    });
    env.within(
        "writable after the peer drained",
        Duration::from_secs(5),
        writable,
    )
    .await
    .unwrap();
    let n = env
        .within(
            "poll_write after writable",
            Duration::from_secs(5),
            poll_write(&client, b"x"),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    env.prompt("close", client.close()).await.unwrap();
    let drained = env
        .within("drain to EOF", Duration::from_secs(5), drain)
        .await;
    assert!(drained > 0, "the peer read nothing");
}

/// The futures-io and tokio traits move bytes both ways through `&TcpStream`, and an
/// `std::io::Error` made from a netpoll error converts back unchanged.
async fn traits_through_shared_references<B: SocketBackend>(env: Env<B>) {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = env.pair().await;
    let data = pattern(200_000, 9);
    let writer = async {
        // Through the trait (the inherent `write_all` and `close` would shadow it).
        let mut w = &client;
        AsyncWriteExt::write_all(&mut w, &data).await.unwrap();
        AsyncWriteExt::close(&mut w).await.unwrap(); // poll_close: the write half's FIN.
    };
    let reader = async {
        let mut r = &server;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // Through the trait: the inherent `read` would shadow it.
            match AsyncReadExt::read(&mut r, &mut buf).await.unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ((), got) = env
        .within(
            "200 kB through futures-io",
            Duration::from_secs(10),
            join(writer, reader),
        )
        .await;
    assert!(got == data, "futures-io: the stream arrived altered");
    // tokio's traits, the other way.
    let mut buf = [0u8; 8];
    let n = {
        let mut w = &server;
        tokio::io::AsyncWriteExt::write(&mut w, b"tokio")
            .await
            .unwrap()
    };
    assert_eq!(n, 5);
    let mut r = &client;
    let n = env
        .prompt(
            "tokio read",
            tokio::io::AsyncReadExt::read(&mut r, &mut buf),
        )
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"tokio");

    let closed = Error::new(Op::Write, ErrorKind::Closed);
    let io: std::io::Error = closed.into();
    assert_eq!(Error::from_io(Op::Read, &io), closed);
}

/// `embedded_io_async::Read`/`Write` on `&TcpStream`: bytes both ways, end of stream, and a
/// read deadline's error kind through `embedded_io::Error`.
async fn embedded_io_async_traits<B: SocketBackend>(env: Env<B>) {
    use embedded_io_async::{Read, Write};
    let (client, server) = env.pair().await;
    let data = pattern(100_000, 5);
    let writer = async {
        let mut w = &client;
        Write::write_all(&mut w, &data).await.unwrap();
        Write::flush(&mut w).await.unwrap();
        client.shutdown_write().unwrap();
    };
    let reader = async {
        let mut r = &server;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match Read::read(&mut r, &mut buf).await.unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ((), got) = env
        .within(
            "100 kB through embedded-io-async",
            Duration::from_secs(10),
            join(writer, reader),
        )
        .await;
    assert!(got == data, "embedded-io-async: the stream arrived altered");
    client.set_read_deadline(Some(env.past())).unwrap();
    let mut r = &client;
    let e = env
        .prompt("read past the deadline", Read::read(&mut r, &mut [0u8; 8]))
        .await
        .expect_err("an expired read deadline fails the read");
    let kind = embedded_io_async::Error::kind(&e);
    assert_eq!(kind, embedded_io_async::ErrorKind::TimedOut);
}

fn all<H: Harness>() {
    run_case::<H, _, _>("embedded_io_async_traits", embedded_io_async_traits);
    run_case::<H, _, _>("poll_read_deadline_fires", poll_read_deadline_fires);
    run_case::<H, _, _>("poll_read_woken_by_close", poll_read_woken_by_close);
    run_case::<H, _, _>("poll_read_queues_behind_read", poll_read_queues_behind_read);
    run_case::<H, _, _>(
        "poll_write_deadline_and_writable",
        poll_write_deadline_and_writable,
    );
    run_case::<H, _, _>(
        "traits_through_shared_references",
        traits_through_shared_references,
    );
}

#[test]
fn hosted() {
    all::<netpoll_conformance::hosted::HostedHarness>();
}

#[test]
fn smoltcp() {
    all::<netpoll_conformance::smoltcp::WireHarness>();
}
