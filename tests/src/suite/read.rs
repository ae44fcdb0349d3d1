//! A. Read: items 1–10 of the conformance checklist in `docs/semantics.md` (9 is a core case,
//! `core/tests/sched.rs`).

use core::time::Duration;

use netpoll_stack::{ErrorKind, Op, SocketBackend, TcpStream};

use crate::io::{pattern, read_exact, read_to_end};
use crate::{assert_closed, peer, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

/// Spawns a read of up to `cap` bytes on `s`; the task returns what it read.
fn spawn_read<B: SocketBackend>(
    env: &Env<B>,
    s: &TcpStream<B>,
    cap: usize,
) -> netpoll_core::JoinHandle<Result<Vec<u8>, netpoll_stack::Error>> {
    let s = s.clone();
    env.spawn(async move {
        let mut buf = vec![0u8; cap];
        let n = s.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    })
}

/// #1: a read with data available returns `n > 0` at once, without waiting to fill the
/// buffer; once the data is consumed, the next read blocks (no spurious EOF or `Ok(0)`).
pub async fn a01_read_returns_available_data<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    env.prompt("write", client.write_all(b"hello"))
        .await
        .unwrap();

    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    // The stream may split "hello", but a read never waits for more than is there.
    for _ in 0..5 {
        let n = env
            .prompt("read of available data", server.read(&mut buf))
            .await
            .expect("read");
        assert!(
            n > 0 && got.len() + n <= 5,
            "read returned {n} after {got:?}"
        );
        got.extend_from_slice(&buf[..n]);
        if got.len() == 5 {
            break;
        }
    }
    assert_eq!(got, b"hello");

    // Drained: the next read must block, not report EOF.
    let r = spawn_read(&env, &server, 64);
    env.assert_blocked("read after draining", &r, 100 * MS)
        .await;
    client.write_all(b"more").await.unwrap();
    let more = env.within("read of new data", PROMPT, r).await.unwrap();
    assert!(
        !more.is_empty() && b"more".starts_with(&more),
        "read {more:?}"
    );
}

/// #2: the peer writes 1 MiB and closes; all the data comes first, then `Ok(0)` (EOF), which is
/// not an error, and stays EOF.
pub async fn a02_read_returns_data_then_eof_after_peer_close<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let data = pattern(1 << 20, 2);
    let sent = data.clone();
    let writer = env.spawn(async move {
        client.write_all(&sent).await?;
        client.close().await
    });

    let mut got = Vec::with_capacity(data.len());
    let mut buf = [0u8; 1024];
    let end = env
        .within("read 1 MiB then EOF", 20 * PROMPT, async {
            // Bounded: every successful read returns at least one byte.
            for _ in 0..=data.len() {
                match server.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
            panic!("more reads than bytes");
        })
        .await;
    end.unwrap_or_else(|e| panic!("read after {} bytes: {e} (want EOF)", got.len()));
    assert_eq!(got.len(), data.len(), "bytes before EOF");
    assert!(got == data, "data corrupted");
    env.within("writer", PROMPT, writer)
        .await
        .expect("write_all + close");

    // EOF is sticky.
    let again = env.prompt("read after EOF", server.read(&mut buf)).await;
    assert_eq!(again, Ok(0), "a read after EOF");
}

/// #3: a read blocked before the peer's close wakes with `Ok(0)` (golang/go#17695).
pub async fn a03_blocked_read_wakes_with_eof_on_peer_close<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = spawn_read(&env, &server, 64);
    env.assert_blocked("read with no data", &r, 100 * MS).await;
    peer::close(&client).await;
    let got = env.within("blocked read after peer FIN", PROMPT, r).await;
    assert_eq!(got, Ok(Vec::new()), "want EOF");
}

/// #4: a zero-length read on an open stream returns `Ok(0)` at once: it does not block (no
/// data), does not consume data, and ignores an expired deadline (the check comes before
/// `prepare`, golang/go#15735).
pub async fn a04_zero_length_read_returns_at_once<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = env
        .prompt("zero-length read, no data", server.read(&mut []))
        .await;
    assert_eq!(r, Ok(0));

    client.write_all(b"x").await.unwrap();
    env.sleep(20 * MS).await;
    let r = env
        .prompt("zero-length read, data", server.read(&mut []))
        .await;
    assert_eq!(r, Ok(0));

    server.set_read_deadline(Some(env.past())).unwrap();
    let r = env
        .prompt("zero-length read, expired deadline", server.read(&mut []))
        .await;
    assert_eq!(
        r,
        Ok(0),
        "a zero-length read is not subject to the deadline"
    );
    let mut buf = [0u8; 8];
    let e = env
        .prompt("read, expired deadline", server.read(&mut buf))
        .await
        .expect_err("the deadline is expired");
    assert!(e.is_timeout(), "{e}");

    server.set_read_deadline(None).unwrap();
    let n = env
        .prompt("read after zero-length reads", server.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"x", "zero-length reads must not consume data");
}

/// #5: a zero-length read on a closed stream fails with the closed error (the lock fails
/// before the zero-length shortcut).
pub async fn a05_zero_length_read_on_closed_conn_fails<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    server.close().await.unwrap();
    let e = env
        .prompt("zero-length read after close", server.read(&mut []))
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
}

/// #6: after a local `shutdown_read` a read returns `Ok(0)` without blocking, and a read
/// blocked at the time of the shutdown wakes. Writing still works.
pub async fn a06_read_after_shutdown_read_returns_eof<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = spawn_read(&env, &server, 64);
    env.assert_blocked("read with no data", &r, 100 * MS).await;
    server.shutdown_read().unwrap();
    // CAUTION: Go returns `(0, io.EOF)` on Linux (`TestCloseRead` accepts any `(0, non-nil)`); here
    // EOF is `Ok(0)`, as `TcpStream::shutdown_read` documents.
    let got = env
        .within("blocked read after shutdown_read", PROMPT, r)
        .await;
    assert_eq!(got, Ok(Vec::new()), "blocked read must wake with EOF");

    let mut buf = [0u8; 16];
    for _ in 0..2 {
        let r = env
            .prompt("read after shutdown_read", server.read(&mut buf))
            .await;
        assert_eq!(r, Ok(0));
    }

    // The write half is unaffected.
    server.write_all(b"still").await.unwrap();
    let got = env
        .within("peer read", PROMPT, read_exact(&client, 5))
        .await;
    assert_eq!(got, b"still");
}

/// #7: after the peer's abort (RST), a read — blocked or not — fails with `ConnectionReset`:
/// not EOF, not temporary, not a timeout, not closed (Go #24808).
pub async fn a07_read_after_peer_reset_is_not_eof<B: SocketBackend>(env: Env<B>) {
    fn check(what: &str, r: Result<Vec<u8>, netpoll_stack::Error>) {
        let e = match r {
            Ok(d) => panic!("{what}: read returned {d:?} (EOF if empty); want ConnectionReset"),
            Err(e) => e,
        };
        assert_eq!(e.op(), Op::Read, "{what}: {e}");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{what}: {e}");
        assert!(
            !e.is_temporary() && !e.is_timeout() && !e.is_closed(),
            "{what}: {e}"
        );
        assert!(
            e.to_string().contains("connection reset"),
            "{what}: message {e}"
        );
    }

    // Blocked when the RST arrives.
    let (client, server) = env.pair().await;
    let r = spawn_read(&env, &server, 64);
    env.assert_blocked("read with no data", &r, 100 * MS).await;
    peer::reset(&client).await;
    check(
        "blocked read",
        env.within("blocked read after RST", PROMPT, r).await,
    );

    // Not blocked: the RST is already there when the read starts.
    let (client, server) = env.pair().await;
    peer::reset(&client).await;
    env.sleep(50 * MS).await;
    let r = spawn_read(&env, &server, 64);
    check(
        "read after RST",
        env.within("read after RST", PROMPT, r).await,
    );
}

/// #8: no lost wake-ups: 1000 synchronous 8-byte round trips (`testPingPong`), then 1 MiB in
/// 1 KiB writes (`testBasicIO`). Streams have `TCP_NODELAY` on, as in Go.
pub async fn a08_ping_pong_and_bulk_transfer_lose_no_wakeups<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    assert_eq!(client.nodelay(), Ok(true), "Go turns TCP_NODELAY on");
    assert_eq!(server.nodelay(), Ok(true), "Go turns TCP_NODELAY on");

    const ROUNDS: u64 = 1000;
    let echo = server.clone();
    let echoer = env.spawn(async move {
        for _ in 0..ROUNDS {
            let msg = read_exact(&echo, 8).await;
            let v = u64::from_le_bytes(msg.try_into().unwrap());
            echo.write_all(&(v + 1).to_le_bytes()).await?;
        }
        Ok::<(), netpoll_stack::Error>(())
    });
    env.within("1000 round trips", 20 * PROMPT, async {
        for i in 0..ROUNDS {
            client.write_all(&(i * 3).to_le_bytes()).await.unwrap();
            let back = read_exact(&client, 8).await;
            assert_eq!(u64::from_le_bytes(back.try_into().unwrap()), i * 3 + 1);
        }
    })
    .await;
    env.within("echo task", PROMPT, echoer).await.unwrap();

    let data = pattern(1 << 20, 8);
    let sent = data.clone();
    let c = client.clone();
    let writer = env.spawn(async move {
        for chunk in sent.chunks(1024) {
            c.write_all(chunk).await?;
        }
        c.shutdown_write()
    });
    let (got, err) = env
        .within(
            "1 MiB in 1 KiB chunks",
            20 * PROMPT,
            read_to_end(&server, 2 << 20),
        )
        .await;
    assert_eq!(err, None, "reading the bulk transfer");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data corrupted");
    env.within("writer", PROMPT, writer).await.unwrap();
    env.assert_no_waiters().await;
}

/// #10: concurrent reads (and writes) on one stream are serialised, not failed: 20 queued
/// readers each get their byte; 10 concurrent `write_all`s do not interleave; 100×7 mixed
/// concurrent calls (`testConcurrentMethods`) all complete and leave the stream usable.
pub async fn a10_concurrent_reads_are_serialised<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;

    // 20 readers queue on one stream; each read takes one byte.
    const READERS: u8 = 20;
    let readers: Vec<_> = (0..READERS).map(|_| spawn_read(&env, &server, 1)).collect();
    env.sleep(50 * MS).await;
    assert!(
        readers.iter().all(|r| !r.is_finished()),
        "a read ended early"
    );
    let bytes: Vec<u8> = (0..READERS).collect();
    client.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    for r in readers {
        let b = env.within("queued reader", PROMPT * 2, r).await.unwrap();
        assert_eq!(b.len(), 1, "each reader asked for one byte");
        got.push(b[0]);
    }
    got.sort_unstable();
    assert_eq!(got, bytes, "every byte read exactly once");

    // 10 concurrent write_alls: each holds the write lock for its whole buffer (Go's fdMutex),
    // so the peer sees 10 unbroken runs.
    const WRITERS: u8 = 10;
    const RUN: usize = 64 * 1024;
    let writers: Vec<_> = (1..=WRITERS)
        .map(|v| {
            let c = client.clone();
            env.spawn(async move { c.write_all(&vec![v; RUN]).await })
        })
        .collect();
    let runs = env
        .within(
            "read concurrent writes",
            10 * PROMPT,
            read_exact(&server, RUN * WRITERS as usize),
        )
        .await;
    for w in writers {
        env.within("writer", PROMPT, w).await.unwrap();
    }
    let mut seen = Vec::new();
    for run in runs.chunks(RUN) {
        assert!(
            run.iter().all(|&b| b == run[0]),
            "writes interleaved: a run mixes values"
        );
        seen.push(run[0]);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=WRITERS).collect::<Vec<_>>());

    // testConcurrentMethods: the peer echoes; 100×7 concurrent calls; all complete.
    let echo = client.clone();
    let echoer = env.spawn(async move {
        let mut buf = vec![0u8; 4096];
        for _ in 0..100_000 {
            match echo.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if echo.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (s, h) = (server.clone(), env.handle.clone());
        tasks.push(env.spawn(async move {
            let mut b = [0u8; 1024];
            s.read(&mut b).await.map(drop).or_else(timeout_ok)?;
            s.write(&[0u8; 1024]).await.map(drop).or_else(timeout_ok)?;
            s.set_deadline(Some(h.now() + 10 * MS))?;
            Ok::<(), netpoll_stack::Error>(())
        }));
        let (s, h) = (server.clone(), env.handle.clone());
        tasks.push(env.spawn(async move {
            let past = netpoll_core::Instant::from_nanos(h.now().as_nanos().saturating_sub(1));
            s.set_read_deadline(Some(past))?;
            s.set_write_deadline(Some(past))?;
            s.local_addr()?;
            s.peer_addr()?;
            s.nodelay().map(drop)
        }));
    }
    for t in tasks {
        env.within("concurrent method", 2 * PROMPT, t)
            .await
            .expect("every call completes with success or a timeout");
    }

    // resyncConn + testRoundtrip: the stream still works.
    server.set_deadline(None).unwrap();
    const MARK: &[u8] = b"RESYNC-MARKER";
    server.write_all(MARK).await.unwrap();
    env.within("resync", 10 * PROMPT, async {
        let mut tail = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..100_000 {
            let n = server.read(&mut buf).await.expect("resync read");
            assert!(n > 0, "EOF while resyncing");
            tail.extend_from_slice(&buf[..n]);
            if tail.ends_with(MARK) {
                return;
            }
            let keep = tail.len().saturating_sub(MARK.len());
            tail.drain(..keep);
        }
        panic!("resync marker never came back");
    })
    .await;
    server.write_all(b"roundtrip").await.unwrap();
    let back = env
        .within("roundtrip", PROMPT, read_exact(&server, 9))
        .await;
    assert_eq!(back, b"roundtrip");

    peer::close(&server).await;
    env.within("echo task ends on EOF", PROMPT, echoer).await;
    env.assert_no_waiters().await;
}

/// Maps a timeout to success (for calls racing a deadline); other errors pass through.
fn timeout_ok(e: netpoll_stack::Error) -> Result<(), netpoll_stack::Error> {
    if e.is_timeout() {
        Ok(())
    } else {
        Err(e)
    }
}
