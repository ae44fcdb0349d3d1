//! R. `TcpStream::readable`, `try_read` and `try_write`: waiting for data without holding a
//! read buffer, and I/O without a future (netpoll's own API, section R of the checklist in
//! `docs/semantics.md`; tokio has the same calls). They must keep the read and write contracts: no
//! lost wake-up, no spurious EOF, the same close and deadline errors as `read` and `write`.

use core::time::Duration;

use netpoll_stack::{Error, ErrorKind, Op, SocketBackend, TcpStream};

use crate::{assert_closed, assert_timeout, peer, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

/// Spawns `readable` on `s`; the task returns its result.
fn spawn_readable<B: SocketBackend>(
    env: &Env<B>,
    s: &TcpStream<B>,
) -> netpoll_core::JoinHandle<Result<(), Error>> {
    let s = s.clone();
    env.spawn(async move { s.readable().await })
}

/// Reads once, promptly (the data is known to be there).
async fn read_now<B: SocketBackend>(env: &Env<B>, s: &TcpStream<B>) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = env
        .prompt("read after readable", s.read(&mut buf))
        .await
        .expect("read after readable");
    buf[..n].to_vec()
}

/// On a fresh idle connection `readable` blocks; data wakes it, and the read that follows
/// gets the data at once. After that read drained the socket, `readable` blocks again until
/// new data comes.
pub async fn r61_readable_waits_for_data_then_read_gets_it<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = spawn_readable(&env, &server);
    env.assert_blocked("readable on an idle connection", &r, 100 * MS)
        .await;
    client.write_all(b"ping").await.unwrap();
    env.within("readable after data", PROMPT, r)
        .await
        .expect("readable");
    let mut got = read_now(&env, &server).await;
    while got.len() < 4 {
        // The stream may split the message; the rest is already in flight.
        env.prompt("readable for the rest", server.readable())
            .await
            .unwrap();
        got.extend(read_now(&env, &server).await);
    }
    assert_eq!(got, b"ping");

    let r = spawn_readable(&env, &server);
    env.assert_blocked("readable after draining", &r, 100 * MS)
        .await;
    client.write_all(b"pong").await.unwrap();
    env.within("readable after more data", PROMPT, r)
        .await
        .expect("readable");
    let more = read_now(&env, &server).await;
    assert!(
        !more.is_empty() && b"pong".starts_with(&more),
        "read {more:?}"
    );
}

/// Data that arrived before the first `readable` (here: before `accept` returned) is seen:
/// `readable` returns at once and the read gets it.
pub async fn r62_readable_sees_data_queued_before_it<B: SocketBackend>(env: Env<B>) {
    let listener = env.listen();
    let client = env.connect(env.addr_of(&listener)).await;
    client.write_all(b"early").await.unwrap();
    // Give the bytes time to cross the network before the server side exists.
    env.sleep(20 * MS).await;
    let (server, _) = env
        .prompt("accept", listener.accept())
        .await
        .expect("accept");
    let mut got = Vec::new();
    while got.len() < 5 {
        env.prompt("readable with data queued", server.readable())
            .await
            .expect("readable");
        got.extend(read_now(&env, &server).await);
    }
    assert_eq!(got, b"early");
}

/// The peer's FIN makes `readable` return (it does not block on a connection that can only
/// say EOF), and keeps returning; the reads say `Ok(0)`.
pub async fn r63_readable_returns_at_eof<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = spawn_readable(&env, &server);
    env.assert_blocked("readable before the FIN", &r, 50 * MS)
        .await;
    client.close().await.unwrap();
    env.within("readable after the peer's FIN", PROMPT, r)
        .await
        .expect("readable at EOF");
    for round in 0..3 {
        env.prompt("readable at EOF", server.readable())
            .await
            .expect("readable at EOF");
        assert_eq!(read_now(&env, &server).await, b"", "EOF, round {round}");
    }
}

/// A blocked `readable` wakes with `read`'s closed error when the connection is closed; on a
/// closed connection it fails at once.
pub async fn r64_close_unblocks_readable<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    let r = spawn_readable(&env, &server);
    env.assert_blocked("readable on an idle connection", &r, 50 * MS)
        .await;
    env.prompt("close with a blocked readable", server.close())
        .await
        .expect("close");
    let e = env
        .within("blocked readable after close", PROMPT, r)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
    let e = env
        .prompt("readable after close", server.readable())
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
}

/// The read deadline applies: an expired one fails `readable` at once, a future one ends a
/// blocked `readable` with a timeout; clearing it makes `readable` wait for data again.
pub async fn r65_readable_obeys_the_read_deadline<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    server.set_read_deadline(Some(env.past())).unwrap();
    let e = env
        .prompt("readable past the deadline", server.readable())
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Read);

    server.set_read_deadline(Some(env.after(50 * MS))).unwrap();
    let e = env
        .within("readable until the deadline", PROMPT, server.readable())
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Read);

    server.set_read_deadline(None).unwrap();
    let r = spawn_readable(&env, &server);
    env.assert_blocked("readable with no deadline", &r, 50 * MS)
        .await;
    client.write_all(b"x").await.unwrap();
    env.within("readable after data", PROMPT, r)
        .await
        .expect("readable");
    assert_eq!(read_now(&env, &server).await, b"x");
}

/// `readable` queues behind a blocked read (they share the read lock) and loses no wake-up:
/// the read gets the first message, and `readable` then reports the second.
pub async fn r66_readable_queues_behind_a_read<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let s = server.clone();
    let read = env.spawn(async move {
        let mut buf = [0u8; 1];
        s.read(&mut buf).await.map(|n| buf[..n].to_vec())
    });
    env.assert_blocked("read on an idle connection", &read, 50 * MS)
        .await;
    let r = spawn_readable(&env, &server);
    env.assert_blocked("readable behind a blocked read", &r, 50 * MS)
        .await;
    client.write_all(b"a").await.unwrap();
    let first = env.within("read", PROMPT, read).await.expect("read");
    assert_eq!(first, b"a");
    // `readable` may return now (a hint) or wait for the next edge; either way the next
    // message is not lost.
    client.write_all(b"b").await.unwrap();
    env.within("readable", PROMPT, r).await.expect("readable");
    let mut got = read_now(&env, &server).await;
    if got.is_empty() {
        panic!("read after readable returned EOF");
    }
    while got != b"b" {
        env.prompt("readable", server.readable()).await.unwrap();
        got.extend(read_now(&env, &server).await);
    }
}

/// `try_read` and `try_write` never wait: with nothing buffered `try_read` says "would
/// block" (op `read`); data the peer sent is there after `readable`; a drained socket says
/// "would block" again; after the peer's FIN it reads `Ok(0)`.
pub async fn r67_try_read_and_try_write_never_wait<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let mut buf = [0u8; 64];
    let e = server.try_read(&mut buf).expect_err("nothing to read yet");
    assert!(e.is_would_block(), "expected would-block, got {e}");
    assert_eq!(e.op(), Op::Read);
    assert!(!e.is_closed() && !e.is_timeout(), "{e}");

    let n = client
        .try_write(b"abc")
        .expect("an empty send buffer takes 3 bytes");
    assert_eq!(n, 3);
    let mut got = Vec::new();
    while got.len() < 3 {
        env.prompt("readable after try_write", server.readable())
            .await
            .expect("readable");
        match server.try_read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.is_would_block() => {} // A hint: wait again.
            Err(e) => panic!("try_read: {e}"),
        }
    }
    assert_eq!(got, b"abc");
    let e = server.try_read(&mut buf).expect_err("drained");
    assert!(
        e.is_would_block(),
        "expected would-block after draining, got {e}"
    );

    client.close().await.unwrap();
    let end = env
        .prompt("readable and try_read until EOF", async {
            loop {
                server.readable().await?;
                match server.try_read(&mut buf) {
                    Err(e) if e.is_would_block() => continue,
                    r => return r,
                }
            }
        })
        .await;
    assert_eq!(end.expect("EOF"), 0);
}

/// `try_write` fills the send buffer and then says "would block" rather than wait; once the
/// peer reads, it makes progress again. Both calls report closed connections and expired
/// deadlines as the waiting calls do, and `try_read` says "would block" while another task
/// holds the read side.
pub async fn r68_try_ops_report_full_buffers_errors_and_contention<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let chunk = [7u8; 16 * 1024];
    let mut written = 0;
    let full = loop {
        match server.try_write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(
            written <= env.overflow_len(),
            "try_write took {written} bytes while the peer reads nothing"
        );
    };
    assert!(
        full.is_would_block(),
        "expected would-block on a full buffer, got {full}"
    );
    assert_eq!(full.op(), Op::Write);
    assert!(written > 0, "an empty send buffer took nothing");
    crate::io::discard(&client, written).await;
    env.within("try_write after the peer read", PROMPT, async {
        loop {
            match server.try_write(b"more") {
                Ok(n) => return n,
                Err(e) if e.is_would_block() => env.sleep(MS).await,
                Err(e) => panic!("try_write: {e}"),
            }
        }
    })
    .await;

    // A blocked read holds the read side.
    let s = server.clone();
    let read = env.spawn(async move {
        let mut buf = [0u8; 8];
        s.read(&mut buf).await
    });
    env.assert_blocked("read on an idle connection", &read, 50 * MS)
        .await;
    let mut buf = [0u8; 8];
    let e = server.try_read(&mut buf).expect_err("read side busy");
    assert!(e.is_would_block(), "expected would-block, got {e}");

    server.set_read_deadline(Some(env.past())).unwrap();
    server.set_write_deadline(Some(env.past())).unwrap();
    assert_timeout(&server.try_write(b"x").expect_err("expired"), Op::Write);
    assert_timeout(&server.try_write(b"").expect_err("expired"), Op::Write);
    let e = env
        .within("the blocked read times out", PROMPT, read)
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Read);
    assert_timeout(&server.try_read(&mut buf).expect_err("expired"), Op::Read);

    server.close().await.unwrap();
    assert_closed(&server.try_read(&mut buf).expect_err("closed"), Op::Read);
    assert_closed(&server.try_write(b"x").expect_err("closed"), Op::Write);
}

/// A `read` that waits for the edge (the socket is "drained": fresh, or after a drained read)
/// and then gets an error must not leave the fd "drained": no further edge comes after a
/// reset, so the next `read` or `readable` would wait forever. (Go: a read after
/// ECONNRESET returns at once.)
pub async fn r69_read_after_a_reset_returns_at_once<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let s = server.clone();
    let first = env.spawn(async move {
        let mut buf = [0u8; 64];
        s.read(&mut buf).await
    });
    env.assert_blocked("read with no data", &first, 100 * MS)
        .await;
    peer::reset(&client).await;
    let e = env
        .within("blocked read after RST", PROMPT, first)
        .await
        .expect_err("reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");

    // EOF (kernel) or the reset again (smoltcp): either way at once.
    let mut buf = [0u8; 64];
    let _ = env
        .within("second read after RST", PROMPT, server.read(&mut buf))
        .await;
    let _ = env
        .within("readable after RST", PROMPT, server.readable())
        .await;
}

/// Data still buffered when the peer's RST arrives: the read that takes the last of it must
/// not count as "drained" (no edge follows a reset), or the next `read` waits forever instead
/// of reporting the reset (Go: ECONNRESET at once).
pub async fn r70_buffered_data_then_reset_never_hangs<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    client.write_all(b"hello").await.unwrap();
    env.prompt("readable", server.readable()).await.unwrap();
    peer::reset(&client).await;
    env.sleep(50 * MS).await;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    for _ in 0..8 {
        match env
            .within("read after RST", PROMPT, server.read(&mut buf))
            .await
        {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                break;
            }
        }
    }
    assert!(b"hello".starts_with(&got), "{got:?}");
}

/// `try_read` alone (no `readable`, no `read`) returns data that is there. A fresh stream
/// starts "drained" (`edge_on_register`), so `try_read` must take the latched edge itself
/// rather than say would-block with data buffered.
pub async fn r71_try_read_alone_gets_buffered_data<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    client.write_all(b"abc").await.unwrap();
    env.sleep(50 * MS).await;
    let mut buf = [0u8; 16];
    let mut would_block = 0;
    for _ in 0..40 {
        match server.try_read(&mut buf) {
            Ok(n) => {
                assert_eq!(&buf[..n], &b"abc"[..n]);
                return;
            }
            Err(e) if e.is_would_block() => would_block += 1,
            Err(e) => panic!("try_read: {e}"),
        }
        env.sleep(5 * MS).await;
    }
    panic!("try_read said would-block {would_block} times with 3 bytes buffered");
}

/// Stress: readers (`read`, `readable`+`try_read`, and reads dropped by a timeout while
/// queued on the lock) contend on one stream's read lock while the peer writes and the
/// stream is closed. Every task must end promptly (no lost lock wake-up, no lost DESTROYED
/// wake-up for `close`), with data or a closed error.
pub async fn r72_lock_contention_with_close_ends_every_reader<B: SocketBackend>(env: Env<B>) {
    for round in 0..20 {
        let (client, server) = env.pair().await;
        let mut tasks = Vec::new();
        for i in 0..6usize {
            let s = server.clone();
            let e = env.clone();
            tasks.push(env.spawn(async move {
                let mut buf = [0u8; 3];
                for _ in 0..10_000 {
                    let r = match i % 3 {
                        0 => s.read(&mut buf).await.map(|_| ()),
                        1 => match s.readable().await {
                            Ok(()) => match s.try_read(&mut buf) {
                                Err(e) if e.is_would_block() => Ok(()),
                                r => r.map(|_| ()),
                            },
                            Err(e) => Err(e),
                        },
                        _ => match e.timeout(MS, s.read(&mut buf)).await {
                            None => Ok(()),
                            Some(r) => r.map(|_| ()),
                        },
                    };
                    if let Err(err) = r {
                        assert!(err.is_closed(), "reader {i}: {err}");
                        return;
                    }
                }
            }));
        }
        for _ in 0..20 {
            client.write_all(b"abcdefg").await.unwrap();
            if round % 2 == 0 {
                netpoll_core::yield_now().await;
            }
        }
        env.sleep(Duration::from_micros(200 * (round as u64 % 5)))
            .await;
        env.within("close with contended readers", PROMPT, server.close())
            .await
            .expect("close");
        for t in tasks {
            env.within("reader ends after close", PROMPT, t).await;
        }
        client.close().await.unwrap();
    }
}
