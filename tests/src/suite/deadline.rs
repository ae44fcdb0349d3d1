//! D. Deadlines (`docs/semantics.md#deadlines`): items 26–41 of its conformance checklist.

use core::pin::pin;
use core::task::Poll;
use core::time::Duration;

use netpoll_core::{yield_now, Instant, JoinHandle};
use netpoll_stack::{Error, ErrorKind, Op, SocketBackend, TcpStream};

use super::poll_once;
use crate::io::{discard, pattern, read_exact, read_to_end};
use crate::{assert_closed, assert_timeout, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

/// Spawns a read of up to 64 bytes; the task returns the bytes and when the read returned.
fn spawn_read<B: SocketBackend>(
    env: &Env<B>,
    s: &TcpStream<B>,
) -> JoinHandle<(Result<Vec<u8>, Error>, Instant)> {
    let (s, h) = (s.clone(), env.handle.clone());
    env.spawn(async move {
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf).await.map(|n| buf[..n].to_vec());
        (r, h.now())
    })
}

/// Spawns `write_all` of `len` bytes; the task returns the result and when it returned.
fn spawn_timed_write<B: SocketBackend>(
    env: &Env<B>,
    s: &TcpStream<B>,
    len: usize,
) -> JoinHandle<(Result<(), Error>, Instant)> {
    let (s, h) = (s.clone(), env.handle.clone());
    env.spawn(async move {
        let r = s.write_all(&vec![0x5A; len]).await;
        (r, h.now())
    })
}

#[track_caller]
fn assert_in(what: &str, elapsed: Duration, min: Duration, max: Duration) {
    assert!(
        elapsed >= min && elapsed < max,
        "{what}: took {elapsed:?}, want [{min:?}, {max:?})"
    );
}

/// #26 (`docs/semantics.md#past-deadline`): a read with a past deadline times out at once even
/// though data is readable; the data is still there once the deadline is cleared.
pub async fn d26_read_past_deadline_times_out_with_data_ready<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    client.write_all(b"ab").await.unwrap();
    // Reading one byte proves the data arrived; "b" stays readable.
    assert_eq!(
        env.within("first byte", PROMPT, read_exact(&server, 1))
            .await,
        b"a"
    );
    server.set_read_deadline(Some(env.past())).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        let e = env
            .prompt("read, past deadline", server.read(&mut buf))
            .await
            .expect_err("past deadline: timeout even with data readable");
        assert_timeout(&e, Op::Read);
    }
    server.set_read_deadline(None).unwrap();
    assert_eq!(
        env.prompt("read after clearing", read_exact(&server, 1))
            .await,
        b"b"
    );
}

/// #27 (`docs/semantics.md#past-deadline`): a write with a past deadline times out at once with
/// nothing transferred, even with free buffer space; nothing of it reaches the peer.
pub async fn d27_write_past_deadline_times_out<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    server.set_write_deadline(Some(env.past())).unwrap();
    for _ in 0..2 {
        let e = env
            .prompt("write, past deadline", server.write(b"x"))
            .await
            .expect_err("past deadline");
        assert_timeout(&e, Op::Write);
        assert_eq!(e.transferred(), 0);
        let e = env
            .prompt("write_all, past deadline", server.write_all(b"xx"))
            .await
            .expect_err("past deadline");
        assert_timeout(&e, Op::Write);
        assert_eq!(e.transferred(), 0);
    }
    server.set_write_deadline(None).unwrap();
    server.write_all(b"y").await.unwrap();
    server.close().await.unwrap();
    let (got, err) = env
        .within("peer reads", PROMPT, read_to_end(&client, 16))
        .await;
    assert_eq!((got.as_slice(), err), (&b"y"[..], None));
}

/// #28: the timeout error has Go's whole shape for read, write and accept: `Timeout()` and
/// `Temporary()` true, not closed, op set, message "`<op> …: i/o timeout`", `io::ErrorKind::TimedOut`.
pub async fn d28_timeout_error_shape<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let (_client, server) = env.pair_on(&ln).await;
    let mut errors = Vec::new();

    server.set_deadline(Some(env.after(10 * MS))).unwrap();
    let mut buf = [0u8; 8];
    errors.push((
        Op::Read,
        env.within("read", PROMPT, server.read(&mut buf))
            .await
            .expect_err("read timeout"),
    ));
    errors.push((
        Op::Write,
        env.prompt("write", server.write(b"x"))
            .await
            .expect_err("write timeout (sticky)"),
    ));
    ln.set_deadline(Some(env.after(10 * MS))).unwrap();
    errors.push((
        Op::Accept,
        env.within("accept", PROMPT, ln.accept())
            .await
            .expect_err("accept timeout"),
    ));

    for (op, e) in errors {
        assert_timeout(&e, op);
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert_eq!(
            std::io::Error::from(e).kind(),
            std::io::ErrorKind::TimedOut,
            "{e} as io::Error"
        );
    }
}

/// #29: a read with a 100 ms deadline and no data times out after ≥ 90 ms and before 1 s.
pub async fn d29_read_deadline_fires_on_time<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    for _ in 0..3 {
        let t0 = env.now();
        server.set_read_deadline(Some(t0 + 100 * MS)).unwrap();
        let mut buf = [0u8; 8];
        let e = env
            .within("read with a deadline", 2 * PROMPT, server.read(&mut buf))
            .await
            .expect_err("timeout");
        assert_timeout(&e, Op::Read);
        assert_in("100 ms read deadline", env.since(t0), 90 * MS, PROMPT);
    }
}

/// #30 (`docs/semantics.md#sticky-expiry`): expiry is sticky: after one timeout every later read
/// times out at once — even once data arrives — until the deadline is changed.
pub async fn d30_read_timeout_is_sticky<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    server.set_read_deadline(Some(env.after(20 * MS))).unwrap();
    let mut buf = [0u8; 8];
    let e = env
        .within("read", PROMPT, server.read(&mut buf))
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Read);
    for _ in 0..3 {
        let e = env
            .prompt("read after a timeout", server.read(&mut buf))
            .await
            .expect_err("sticky");
        assert_timeout(&e, Op::Read);
    }
    client.write_all(b"late").await.unwrap();
    env.sleep(50 * MS).await;
    let e = env
        .prompt("read after a timeout, data ready", server.read(&mut buf))
        .await
        .expect_err("still sticky with data ready");
    assert_timeout(&e, Op::Read);

    server.set_read_deadline(None).unwrap();
    assert_eq!(
        env.prompt("read after clearing", read_exact(&server, 4))
            .await,
        b"late"
    );
}

/// #31 (`docs/semantics.md#moving-into-the-past`): moving the deadline into the past while an op is
/// blocked unblocks it promptly with a timeout — and not before the call (`testPresentTimeout`),
/// for read and write.
pub async fn d31_past_deadline_unblocks_blocked_ops<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let r = spawn_read(&env, &server);
    env.assert_blocked("read without a deadline", &r, 100 * MS)
        .await;
    let t = env.now();
    server.set_read_deadline(Some(env.past())).unwrap();
    let (res, at) = env.within("read after the past deadline", PROMPT, r).await;
    assert_timeout(&res.expect_err("timeout"), Op::Read);
    assert!(at >= t, "timed out before the deadline was set");

    let len = env.overflow_len();
    let w = spawn_timed_write(&env, &client, len);
    env.assert_blocked("write of more than the send path holds", &w, 100 * MS)
        .await;
    let t = env.now();
    // A deadline equal to now is expired too (#36).
    client.set_write_deadline(Some(env.now())).unwrap();
    let (res, at) = env.within("write after the deadline", PROMPT, w).await;
    let e = res.expect_err("timeout");
    assert_timeout(&e, Op::Write);
    assert!(e.transferred() < len);
    assert!(at >= t, "timed out before the deadline was set");
    env.assert_no_waiters().await;
}

/// #32 (`docs/semantics.md#extending`, `#shortening`, `#fired-then-reset-deadline`): changing
/// the deadline of a blocked read takes effect: extended, the read
/// does not time out at the old deadline but at the new one — also when the old timer already
/// fired and woke the reader before the extension; shortened, it times out at the new one.
pub async fn d32_extended_deadline_takes_effect<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;

    // Extended while the old timer is pending.
    let t0 = env.now();
    server.set_read_deadline(Some(t0 + 100 * MS)).unwrap();
    let r = spawn_read(&env, &server);
    env.assert_blocked("read", &r, 50 * MS).await;
    server.set_read_deadline(Some(t0 + 400 * MS)).unwrap();
    let (res, at) = env.within("extended read", 2 * PROMPT, r).await;
    assert_timeout(&res.expect_err("timeout"), Op::Read);
    assert_in(
        "extended deadline (400 ms)",
        at - t0,
        360 * MS,
        400 * MS + PROMPT,
    );

    // `docs/semantics.md#fired-then-reset-deadline`: the old timer fires and wakes the parked
    // reader, but the deadline is extended before the reader runs again. It must find no error and
    // block again until the new deadline.
    let mut buf = [0u8; 8];
    server.set_read_deadline(Some(env.after(20 * MS))).unwrap();
    {
        let mut read = pin!(server.read(&mut buf));
        assert!(
            poll_once(read.as_mut()).await.is_pending(),
            "the read must park (no data, deadline in the future)"
        );
        // The 20 ms timer fires meanwhile; the read future is not polled.
        env.sleep(60 * MS).await;
        let t1 = env.now();
        server.set_read_deadline(Some(t1 + 200 * MS)).unwrap();
        let res = env
            .within("read woken by a stale expiry", 2 * PROMPT, read)
            .await;
        assert_timeout(&res.expect_err("timeout at the new deadline"), Op::Read);
        assert_in(
            "re-extended deadline (200 ms)",
            env.since(t1),
            180 * MS,
            200 * MS + PROMPT,
        );
    }

    // Shortened: 10 s → 100 ms.
    server.set_read_deadline(None).unwrap();
    let t0 = env.now();
    server
        .set_read_deadline(Some(t0 + Duration::from_secs(10)))
        .unwrap();
    let r = spawn_read(&env, &server);
    env.assert_blocked("read", &r, 20 * MS).await;
    server.set_read_deadline(Some(t0 + 120 * MS)).unwrap();
    let (res, at) = env.within("shortened read", 2 * PROMPT, r).await;
    assert_timeout(&res.expect_err("timeout"), Op::Read);
    assert_in(
        "shortened deadline (120 ms)",
        at - t0,
        108 * MS,
        120 * MS + PROMPT,
    );
    env.assert_no_waiters().await;
}

/// #33 (`docs/semantics.md#no-deadline`): "no deadline" leaves ops blocked: past then none → read
/// and write block until `close`, which reports closed (not timeout, not temporary); a deadline
/// cleared while a read is blocked never fires.
pub async fn d33_cleared_deadline_leaves_op_blocked<B: SocketBackend>(env: Env<B>) {
    // Read: past → none → blocks until close.
    let (_client, server) = env.pair().await;
    server.set_read_deadline(Some(env.past())).unwrap();
    server.set_read_deadline(None).unwrap();
    let r = spawn_read(&env, &server);
    env.assert_blocked("read after past → none", &r, 150 * MS)
        .await;
    env.prompt("close", server.close()).await.unwrap();
    let (res, _) = env.within("read after close", PROMPT, r).await;
    assert_closed(&res.expect_err("closed"), Op::Read);

    // Write: past → none → blocks until close.
    let (client, _server) = env.pair().await;
    client.set_write_deadline(Some(env.past())).unwrap();
    client.set_write_deadline(None).unwrap();
    let w = spawn_timed_write(&env, &client, env.overflow_len());
    env.assert_blocked("write after past → none", &w, 150 * MS)
        .await;
    env.prompt("close", client.close()).await.unwrap();
    let (res, _) = env.within("write after close", PROMPT, w).await;
    assert_closed(&res.expect_err("closed"), Op::Write);

    // Cleared while blocked: the armed 100 ms timer must not fire the read.
    let (client, server) = env.pair().await;
    server.set_read_deadline(Some(env.after(100 * MS))).unwrap();
    let r = spawn_read(&env, &server);
    env.sleep(20 * MS).await;
    server.set_read_deadline(None).unwrap();
    env.assert_blocked("read after clearing its deadline", &r, 250 * MS)
        .await;
    client.write_all(b"z").await.unwrap();
    let (res, _) = env.within("read", PROMPT, r).await;
    assert_eq!(res, Ok(b"z".to_vec()));
    env.assert_no_waiters().await;
}

/// #34 (`docs/semantics.md#independent-directions`): read and write deadlines are independent: an
/// expired read deadline does not stop writes (nor a blocked writer), and vice versa.
pub async fn d34_read_and_write_deadlines_are_independent<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let mut buf = [0u8; 8];

    server.set_read_deadline(Some(env.past())).unwrap();
    env.prompt("write, read deadline expired", server.write_all(b"w"))
        .await
        .expect("writes ignore the read deadline");
    assert_eq!(
        env.within("peer read", PROMPT, read_exact(&client, 1))
            .await,
        b"w"
    );
    let e = env
        .prompt("read", server.read(&mut buf))
        .await
        .expect_err("read deadline still expired");
    assert_timeout(&e, Op::Read);

    server.set_read_deadline(None).unwrap();
    server.set_write_deadline(Some(env.past())).unwrap();
    client.write_all(b"r").await.unwrap();
    assert_eq!(
        env.within(
            "read, write deadline expired",
            PROMPT,
            read_exact(&server, 1)
        )
        .await,
        b"r"
    );
    let e = env
        .prompt("write", server.write(b"x"))
        .await
        .expect_err("write deadline still expired");
    assert_timeout(&e, Op::Write);
    server.set_write_deadline(None).unwrap();

    // A read timing out does not disturb a writer blocked on the same stream.
    let len = env.overflow_len();
    let w = spawn_timed_write(&env, &server, len);
    env.assert_blocked("write of more than the send path holds", &w, 50 * MS)
        .await;
    server.set_read_deadline(Some(env.after(30 * MS))).unwrap();
    let e = env
        .within("read with a 30 ms deadline", PROMPT, server.read(&mut buf))
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Read);
    env.assert_blocked("write after the read timed out", &w, 100 * MS)
        .await;
    env.within("peer drains", 20 * PROMPT, discard(&client, len))
        .await;
    let (res, _) = env.within("blocked write", PROMPT, w).await;
    res.expect("the writer is unaffected by the read deadline");
    env.assert_no_waiters().await;
}

/// #35 (`docs/semantics.md#combined-deadline`): `set_deadline` (both directions) times out a
/// pending read and a pending write.
pub async fn d35_set_deadline_times_out_read_and_write<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    let t0 = env.now();
    server.set_deadline(Some(t0 + 100 * MS)).unwrap();
    let r = spawn_read(&env, &server);
    let w = spawn_timed_write(&env, &server, env.overflow_len());
    let (rr, rat) = env.within("read", 2 * PROMPT, r).await;
    let (wr, wat) = env.within("write", 2 * PROMPT, w).await;
    assert_timeout(&rr.expect_err("read timeout"), Op::Read);
    assert_timeout(&wr.expect_err("write timeout"), Op::Write);
    assert_in("read, 100 ms deadline", rat - t0, 90 * MS, PROMPT);
    assert_in("write, 100 ms deadline", wat - t0, 90 * MS, PROMPT);
    env.assert_no_waiters().await;
}

/// #36 (`docs/semantics.md#deadline-now`): a deadline equal to now is already expired; `None` means
/// no deadline.
pub async fn d36_deadline_now_is_expired_and_none_is_no_deadline<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let mut buf = [0u8; 8];
    server.set_read_deadline(Some(env.now())).unwrap();
    let e = env
        .prompt("read, deadline = now", server.read(&mut buf))
        .await
        .expect_err("expired");
    assert_timeout(&e, Op::Read);
    server.set_write_deadline(Some(env.now())).unwrap();
    let e = env
        .prompt("write, deadline = now", server.write(b"x"))
        .await
        .expect_err("expired");
    assert_timeout(&e, Op::Write);

    server.set_deadline(None).unwrap();
    let r = spawn_read(&env, &server);
    env.assert_blocked("read without a deadline", &r, 100 * MS)
        .await;
    client.write_all(b"d").await.unwrap();
    let (res, _) = env.within("read", PROMPT, r).await;
    assert_eq!(res, Ok(b"d".to_vec()));
    env.prompt("write without a deadline", server.write_all(b"e"))
        .await
        .unwrap();
    assert_eq!(
        env.within("peer read", PROMPT, read_exact(&client, 1))
            .await,
        b"e"
    );
}

/// #37: huge deadlines (`Instant::MAX`, now + `Duration::MAX`, now + i64::MAX ns) behave as
/// "never" and do not wrap into "expired".
pub async fn d37_huge_deadline_never_expires<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let huge = [
        Instant::MAX,
        env.now() + Duration::MAX,
        env.now() + Duration::from_nanos(i64::MAX as u64),
        Instant::from_nanos(u64::MAX - 1),
    ];
    for (i, d) in huge.into_iter().enumerate() {
        server.set_deadline(Some(d)).unwrap();
        let r = spawn_read(&env, &server);
        env.assert_blocked("read with a huge deadline", &r, 50 * MS)
            .await;
        let msg = [b'0' + i as u8];
        client.write_all(&msg).await.unwrap();
        let (res, _) = env.within("read", PROMPT, r).await;
        assert_eq!(res, Ok(msg.to_vec()), "huge deadline #{i} ({d:?})");
        env.prompt("write with a huge deadline", server.write_all(&msg))
            .await
            .unwrap_or_else(|e| panic!("huge deadline #{i} ({d:?}): {e}"));
        assert_eq!(
            env.within("peer read", PROMPT, read_exact(&client, 1))
                .await,
            msg
        );
    }
}

/// #38 (`docs/semantics.md#very-short-deadlines`, `TestVariousDeadlines`): deadlines from 1 ns to 1
/// s on a copy loop whose peer never writes always end in a timeout, never a hang or EOF. The runs
/// proceed concurrently, each on its own connection.
pub async fn d38_various_deadlines_always_terminate<B: SocketBackend>(env: Env<B>) {
    const NS: Duration = Duration::from_nanos(1);
    const US: Duration = Duration::from_micros(1);
    let deadlines = [
        NS,
        2 * NS,
        5 * NS,
        50 * NS,
        100 * NS,
        200 * NS,
        500 * NS,
        750 * NS,
        US,
        5 * US,
        25 * US,
        250 * US,
        500 * US,
        MS,
        5 * MS,
        20 * MS,
        50 * MS,
        100 * MS,
        250 * MS,
        500 * MS,
        1000 * MS,
    ];
    let ln = env.listen_with_backlog(64);
    // Connect everything first: a concurrent accept could take another run's connection,
    // and closing it would end that run with EOF.
    let mut servers = Vec::new();
    let mut runs = Vec::new();
    for d in deadlines {
        let n = if d < 50 * MS { 3 } else { 1 };
        for _ in 0..n {
            let (client, server) = env.pair_on(&ln).await;
            servers.push(server);
            runs.push((d, client));
        }
    }
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(d, c)| {
            let h = env.handle.clone();
            env.spawn(async move {
                let t0 = h.now();
                c.set_deadline(Some(t0 + d))?;
                let mut buf = [0u8; 4096];
                // io.Copy(io.Discard, c) with a peer that never writes: its first read must
                // end the copy, with a timeout.
                match c.read(&mut buf).await {
                    Ok(0) => panic!("{d:?}: EOF, but the peer never closes"),
                    Ok(_) => panic!("{d:?}: data, but the peer never writes"),
                    Err(e) => Ok::<_, Error>((d, e, h.now() - t0)),
                }
            })
        })
        .collect();
    for t in tasks {
        let (d, e, took): (Duration, Error, Duration) = env
            .within("copy loop with a deadline", 3 * PROMPT, t)
            .await
            .expect("set_deadline");
        assert_timeout(&e, Op::Read);
        assert!(
            took >= d.mul_f64(0.9) && took < d + PROMPT,
            "deadline {d:?}: timed out after {took:?}"
        );
    }
    drop(servers);
    env.assert_no_waiters().await;
}

/// #39 \[C\], seen from the API: a stale deadline timer (its deadline since cleared, or its
/// stream closed and the pollDesc slot reused) has no effect.
pub async fn d39_stale_deadline_timer_has_no_effect<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();

    // Set then cleared before it fires.
    let (client, server) = env.pair_on(&ln).await;
    server.set_read_deadline(Some(env.after(50 * MS))).unwrap();
    server.set_read_deadline(None).unwrap();
    let r = spawn_read(&env, &server);
    env.assert_blocked("read after clearing the deadline", &r, 150 * MS)
        .await;
    client.write_all(b"1").await.unwrap();
    assert_eq!(env.within("read", PROMPT, r).await.0, Ok(b"1".to_vec()));

    // Armed, then the stream closed; new streams (likely reusing the slots) must not inherit it.
    let (c1, s1) = env.pair_on(&ln).await;
    s1.set_deadline(Some(env.after(50 * MS))).unwrap();
    c1.set_deadline(Some(env.after(50 * MS))).unwrap();
    s1.close().await.unwrap();
    c1.close().await.unwrap();
    let (c2, s2) = env.pair_on(&ln).await;
    let r1 = spawn_read(&env, &s2);
    let r2 = spawn_read(&env, &c2);
    env.sleep(150 * MS).await;
    assert!(
        !r1.is_finished() && !r2.is_finished(),
        "a new stream was hit by a closed stream's deadline"
    );
    c2.write_all(b"2").await.unwrap();
    s2.write_all(b"3").await.unwrap();
    assert_eq!(env.within("read", PROMPT, r1).await.0, Ok(b"2".to_vec()));
    assert_eq!(env.within("read", PROMPT, r2).await.0, Ok(b"3".to_vec()));
    env.assert_no_waiters().await;
}

/// #40 (`docs/semantics.md#concurrent-deadline-changes`): deadline changes racing I/O are safe.
/// `TestReadWriteDeadlineRace`: 2 µs read and write deadlines reset 1000× while a reader and a
/// writer loop 1000×; then `TestConcurrentSetDeadline`: 8 tasks × 10 streams × 100 ever-earlier
/// deadlines. No hang, no panic, only timeouts or successes; the streams still work afterwards.
pub async fn d40_concurrent_deadline_stress<B: SocketBackend>(env: Env<B>) {
    const N: usize = 1000;
    let ln = env.listen();
    let (c, _server) = env.pair_on(&ln).await;

    let setter = {
        let (c, h) = (c.clone(), env.handle.clone());
        env.spawn(async move {
            for i in 0..N {
                c.set_read_deadline(Some(h.now() + Duration::from_micros(2)))?;
                c.set_write_deadline(Some(h.now() + Duration::from_micros(2)))?;
                if i % 16 == 0 {
                    h.sleep(Duration::from_micros(2)).await;
                } else {
                    yield_now().await;
                }
            }
            Ok::<(), Error>(())
        })
    };
    let reader = {
        let c = c.clone();
        env.spawn(async move {
            let mut b = [0u8; 1];
            for _ in 0..N {
                match c.read(&mut b).await {
                    Ok(_) => {}
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    };
    let writer = {
        let c = c.clone();
        env.spawn(async move {
            for _ in 0..N {
                match c.write(&[1]).await {
                    Ok(_) => {}
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    };
    for (what, t) in [("setter", setter), ("reader", reader), ("writer", writer)] {
        env.within(what, 5 * PROMPT, t)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    // 8 tasks × 10 streams × 100 ever-earlier deadlines.
    const TASKS: u64 = 8;
    const CONNS: usize = 10;
    const TRIES: u64 = 100;
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(env.pair_on(&ln).await);
    }
    let now = env.now();
    let setters: Vec<_> = (0..TASKS)
        .map(|i| {
            let cs: Vec<_> = conns.iter().map(|(c, _)| c.clone()).collect();
            env.spawn(async move {
                for j in (1..=TRIES).rev() {
                    for (k, c) in cs.iter().enumerate() {
                        let s = Duration::from_secs(i * j * k as u64);
                        c.set_read_deadline(Some(now + Duration::from_secs(7200) + s))?;
                        c.set_write_deadline(Some(now + Duration::from_secs(3600) + s))?;
                    }
                    yield_now().await;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for t in setters {
        env.within("deadline setter", 5 * PROMPT, t)
            .await
            .expect("set_deadline");
    }
    // The deadlines are hours away: every stream still works.
    for (i, (c, s)) in conns.iter().enumerate() {
        let msg = [i as u8; 3];
        c.write_all(&msg).await.unwrap();
        assert_eq!(
            env.within("read after the stress", PROMPT, read_exact(s, 3))
                .await,
            msg
        );
    }
    env.assert_no_waiters().await;
}

/// #41 (`docs/semantics.md#buffers-after-return`): after a read or write returns (timeout included)
/// the stack never touches the caller's buffer again: a buffer mutated right after a write timed
/// out does not change what the peer receives; a buffer reused after a read timed out (or after a
/// parked read was dropped) is not written into, and no data is lost.
pub async fn d41_buffers_untouched_after_return<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;

    // testRacyWrite.
    let mut data = pattern(env.overflow_len(), 41);
    client
        .set_write_deadline(Some(env.after(100 * MS)))
        .unwrap();
    let e = env
        .within(
            "write_all with a deadline",
            5 * PROMPT,
            client.write_all(&data),
        )
        .await
        .expect_err("timeout: the peer does not read");
    assert_timeout(&e, Op::Write);
    let nn = e.transferred();
    data.fill(0xEE);
    client.set_write_deadline(None).unwrap();
    let got = env
        .within(
            "peer reads what was accepted",
            20 * PROMPT,
            read_exact(&server, nn),
        )
        .await;
    assert!(
        got == pattern(nn, 41),
        "the peer received bytes written into the buffer after write_all returned"
    );
    client.write_all(b"END").await.unwrap();
    assert_eq!(
        env.within("read", PROMPT, read_exact(&server, 3)).await,
        b"END",
        "stray bytes after the accepted prefix"
    );
    drop(data);

    // testRacyRead.
    let mut buf = [0x11u8; 64];
    server.set_read_deadline(Some(env.after(30 * MS))).unwrap();
    let e = env
        .within("read with a deadline", PROMPT, server.read(&mut buf))
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Read);
    buf.fill(0x22);
    server.set_read_deadline(None).unwrap();
    client.write_all(b"fresh").await.unwrap();
    env.sleep(50 * MS).await;
    assert!(
        buf.iter().all(|&b| b == 0x22),
        "the buffer changed after read returned"
    );
    let n = env.prompt("read", server.read(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"fresh", "data lost after a timed-out read");

    // A parked read that is dropped (cancelled) consumes nothing.
    let mut small = [0u8; 8];
    {
        let mut read = pin!(server.read(&mut small));
        assert!(matches!(poll_once(read.as_mut()).await, Poll::Pending));
    }
    client.write_all(b"kept").await.unwrap();
    env.sleep(50 * MS).await;
    assert_eq!(small, [0u8; 8], "a dropped read wrote into its buffer");
    assert_eq!(
        env.prompt("read after a cancelled read", read_exact(&server, 4))
            .await,
        b"kept"
    );
    env.assert_no_waiters().await;
}
