//! E. Close (`docs/semantics.md#close`): items 42–48 of its conformance checklist (49 is
//! UDP-only, 50 a core case).

use core::pin::pin;
use core::time::Duration;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use netpoll_stack::{Error, Op, SocketBackend, TcpStream};

use super::poll_once;
use crate::io::read_to_end;
use crate::{assert_closed, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

/// Spawns a read; the task returns its result.
fn spawn_read<B: SocketBackend>(
    env: &Env<B>,
    s: &TcpStream<B>,
) -> netpoll_core::JoinHandle<Result<usize, Error>> {
    let s = s.clone();
    env.spawn(async move {
        let mut buf = [0u8; 64];
        s.read(&mut buf).await
    })
}

/// #42: `close` unblocks a blocked read with the closed error of op `read`: "use of closed
/// network connection", neither timeout nor temporary. The peer sees EOF.
pub async fn e42_close_unblocks_blocked_read<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = spawn_read(&env, &server);
    env.assert_blocked("read with no data", &r, 100 * MS).await;
    env.prompt("close with a blocked read", server.close())
        .await
        .expect("close");
    let e = env
        .within("blocked read after close", PROMPT, r)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
    let (got, err) = env
        .within("peer reads EOF", PROMPT, read_to_end(&client, 16))
        .await;
    assert_eq!(
        (got.len(), err),
        (0, None),
        "a local close is a FIN to the peer"
    );
    env.assert_no_waiters().await;
}

/// #43: `close` unblocks a write blocked on a full send path with the closed error of op
/// `write`; `transferred` is at most what was asked.
pub async fn e43_close_unblocks_blocked_write<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    let len = env.overflow_len();
    let w = {
        let s = server.clone();
        env.spawn(async move { s.write_all(&vec![1u8; len]).await })
    };
    env.assert_blocked("write of more than the send path holds", &w, 100 * MS)
        .await;
    env.prompt("close with a blocked write", server.close())
        .await
        .expect("close");
    let e = env
        .within("blocked write after close", PROMPT, w)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Write);
    assert!(e.transferred() < len);
    env.assert_no_waiters().await;
}

/// #44: `close` also wakes tasks queued behind the per-stream lock (a second and third reader,
/// a second writer), each with the closed error.
pub async fn e44_close_wakes_queued_readers<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    let len = env.overflow_len();
    let readers: Vec<_> = (0..3).map(|_| spawn_read(&env, &server)).collect();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let s = server.clone();
            env.spawn(async move { s.write_all(&vec![2u8; len]).await })
        })
        .collect();
    env.sleep(100 * MS).await;
    assert!(
        readers.iter().all(|r| !r.is_finished()) && writers.iter().all(|w| !w.is_finished()),
        "an op ended before close"
    );
    env.prompt("close with queued ops", server.close())
        .await
        .expect("close");
    for r in readers {
        let e = env
            .within("queued read after close", PROMPT, r)
            .await
            .expect_err("closed");
        assert_closed(&e, Op::Read);
    }
    for w in writers {
        let e = env
            .within("queued write after close", PROMPT, w)
            .await
            .expect_err("closed");
        assert_closed(&e, Op::Write);
    }
    env.assert_no_waiters().await;
}

/// #45: when a stream (or listener) is both closed and past its deadline, the closed error
/// wins — for a new op, and for a parked op that sees the expiry and the close before it runs
/// again.
pub async fn e45_closed_wins_over_expired_deadline<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    server.set_read_deadline(Some(env.past())).unwrap();
    server.set_write_deadline(Some(env.past())).unwrap();
    server.close().await.unwrap();
    let mut buf = [0u8; 8];
    let e = env
        .prompt("read, expired and closed", server.read(&mut buf))
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
    let e = env
        .prompt("write, expired and closed", server.write(b"x"))
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Write);

    let ln = env.listen();
    ln.set_deadline(Some(env.past())).unwrap();
    ln.close().await.unwrap();
    let e = env
        .prompt("accept, expired and closed", ln.accept())
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Accept);

    // Parked read; its deadline expires and the stream closes before it runs again.
    let (_client, server) = env.pair().await;
    let mut read = pin!(server.read(&mut buf));
    assert!(
        poll_once(read.as_mut()).await.is_pending(),
        "the read must park"
    );
    server.set_read_deadline(Some(env.past())).unwrap();
    let mut close = pin!(server.close());
    // The close marks the stream closed at once; it completes after the read returned.
    let _ = poll_once(close.as_mut()).await;
    let e = env
        .prompt("parked read, expired then closed", read)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
    env.prompt("close", close).await.expect("close");
    env.assert_no_waiters().await;
}

/// #46: every operation after `close` fails with the closed error, on every clone: read, write
/// (also zero-length), deadlines (op `set`), shutdown, addresses and options; for listeners
/// accept, deadline and address.
pub async fn e46_ops_after_close_fail<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let (client, server) = env.pair_on(&ln).await;
    let clone = server.clone();
    server.close().await.unwrap();

    let mut buf = [0u8; 8];
    for s in [&server, &clone] {
        let e = env.prompt("read", s.read(&mut buf)).await.unwrap_err();
        assert_closed(&e, Op::Read);
        let e = env
            .prompt("read(&mut [])", s.read(&mut []))
            .await
            .unwrap_err();
        assert_closed(&e, Op::Read);
        let e = env.prompt("write", s.write(b"x")).await.unwrap_err();
        assert_closed(&e, Op::Write);
        let e = env.prompt("write(&[])", s.write(&[])).await.unwrap_err();
        assert_closed(&e, Op::Write);
        let e = env
            .prompt("write_all", s.write_all(b"x"))
            .await
            .unwrap_err();
        assert_closed(&e, Op::Write);
        for d in [
            None,
            Some(env.past()),
            Some(env.after(Duration::from_secs(1))),
        ] {
            assert_closed(&s.set_deadline(d).unwrap_err(), Op::Set);
            assert_closed(&s.set_read_deadline(d).unwrap_err(), Op::Set);
            assert_closed(&s.set_write_deadline(d).unwrap_err(), Op::Set);
        }
        assert_closed(&s.shutdown_write().unwrap_err(), Op::Shutdown);
        assert_closed(&s.shutdown_read().unwrap_err(), Op::Shutdown);
        assert_closed(&s.local_addr().unwrap_err(), Op::Get);
        assert_closed(&s.peer_addr().unwrap_err(), Op::Get);
        assert_closed(&s.set_nodelay(true).unwrap_err(), Op::Set);
        assert_closed(&s.nodelay().unwrap_err(), Op::Get);
    }
    // The peer saw a FIN, not a reset.
    let (got, err) = env
        .within("peer reads EOF", PROMPT, read_to_end(&client, 16))
        .await;
    assert_eq!((got.len(), err), (0, None));

    ln.close().await.unwrap();
    let e = env.prompt("accept", ln.accept()).await.unwrap_err();
    assert_closed(&e, Op::Accept);
    assert_closed(&ln.set_deadline(None).unwrap_err(), Op::Set);
    assert_closed(&ln.set_deadline(Some(env.past())).unwrap_err(), Op::Set);
    assert_closed(&ln.local_addr().unwrap_err(), Op::Get);
}

/// #47: a second close (or an abort after close) fails with op `close` and "use of closed
/// network connection", for streams and listeners.
pub async fn e47_second_close_error_shape<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let (client, server) = env.pair_on(&ln).await;
    env.prompt("close", server.close())
        .await
        .expect("first close");
    let e = env
        .prompt("second close", server.close())
        .await
        .unwrap_err();
    assert_closed(&e, Op::Close);
    let e = env
        .prompt("abort after close", server.abort())
        .await
        .unwrap_err();
    assert_closed(&e, Op::Close);

    env.prompt("abort", client.abort())
        .await
        .expect("first abort");
    let e = env
        .prompt("close after abort", client.close())
        .await
        .unwrap_err();
    assert_closed(&e, Op::Close);

    env.prompt("close listener", ln.close())
        .await
        .expect("first close");
    let e = env
        .prompt("second listener close", ln.close())
        .await
        .unwrap_err();
    assert_closed(&e, Op::Close);
}

/// #48: `close` returns only after every in-flight op (parked in the poller or queued on the
/// lock) has returned, and the descriptor is released exactly once, after the last reference
/// (the [`crate::Checked`] ledger of every case enforces "once"; here the pollDesc count too).
pub async fn e48_close_waits_for_inflight_ops<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    let len = env.overflow_len();
    let pds_before = env.handle.pds_in_use();

    let returned = Arc::new(AtomicUsize::new(0));
    let track = |fut: std::pin::Pin<Box<dyn core::future::Future<Output = Error> + Send>>| {
        let returned = returned.clone();
        env.spawn(async move {
            let e = fut.await;
            // Relaxed: read by the closer after `close` returned, on the same scheduler.
            returned.fetch_add(1, Ordering::Relaxed);
            e
        })
    };
    let mut tasks = Vec::new();
    // A parked reader, a queued reader, a parked writer, a queued writer.
    for _ in 0..2 {
        let s = server.clone();
        tasks.push((
            Op::Read,
            track(Box::pin(async move {
                let mut b = [0u8; 8];
                s.read(&mut b).await.expect_err("closed")
            })),
        ));
        let s = server.clone();
        tasks.push((
            Op::Write,
            track(Box::pin(async move {
                s.write_all(&vec![3u8; len]).await.expect_err("closed")
            })),
        ));
    }
    env.sleep(100 * MS).await;
    assert_eq!(
        returned.load(Ordering::Relaxed),
        0,
        "an op ended before close"
    );

    env.prompt("close with in-flight ops", server.close())
        .await
        .expect("close");
    assert_eq!(
        env.handle.pds_in_use(),
        pds_before - 1,
        "close must release the stream's pollDesc before it returns"
    );
    // Go's queued ops hold a reference too (`docs/semantics.md#fdmutex`), so `Close` waits for all
    // four to release theirs: the stream's pollDesc is gone when `close` returns (checked above).
    // CAUTION: on a multi-worker runtime an op's task can still be between releasing its
    // reference and returning (and bumping `returned`) on another thread when `close` returns,
    // so there `returned` is checked to reach 4 promptly rather than at the very instant.
    for _ in 0..1000 {
        if returned.load(Ordering::Relaxed) == 4 {
            break;
        }
        env.sleep(MS).await;
    }
    assert_eq!(
        returned.load(Ordering::Relaxed),
        4,
        "close returned but an in-flight op never returned"
    );
    for (op, t) in tasks {
        let e = env.within("op after close", PROMPT, t).await;
        assert_closed(&e, op);
    }
    drop(server);
    assert_eq!(
        env.handle.pds_in_use(),
        pds_before - 1,
        "dropping the last handle after close must not release anything again"
    );
    env.assert_no_waiters().await;
}
