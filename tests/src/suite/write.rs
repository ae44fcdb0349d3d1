//! B. Write: items 11–16 of the conformance checklist in `docs/semantics.md`.

use core::time::Duration;

use netpoll_stack::{Error, ErrorKind, Op, SocketBackend, TcpStream};

use crate::io::{discard, pattern, read_exact, read_to_end};
use crate::{assert_closed, assert_timeout, peer, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

/// Spawns `write_all(vec![0x5A; len])` on `s`.
pub(crate) fn spawn_write_all<B: SocketBackend>(
    env: &Env<B>,
    s: &TcpStream<B>,
    len: usize,
) -> netpoll_core::JoinHandle<Result<(), Error>> {
    let s = s.clone();
    env.spawn(async move { s.write_all(&vec![0x5A; len]).await })
}

/// A write error after the peer went away: reset or broken pipe, never a timeout or closed.
#[track_caller]
fn assert_peer_gone(e: &Error) {
    assert_eq!(e.op(), Op::Write, "{e}");
    assert!(
        matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "want ConnectionReset or BrokenPipe, got {e}"
    );
    assert!(
        !e.is_timeout() && !e.is_temporary() && !e.is_closed(),
        "{e}"
    );
}

/// #11: `write_all` loops over partial writes and returns `Ok` once everything is accepted; it
/// blocks only while the send path is full. A plain `write` accepts `1..=len` bytes.
pub async fn b11_write_all_loops_over_partial_writes<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    // Room in the send buffer: no blocking, and no reader needed.
    env.prompt("small write_all", client.write_all(b"0123456789abcdef"))
        .await
        .unwrap();
    let n = env
        .prompt("small write", client.write(b"xyz"))
        .await
        .unwrap();
    assert!((1..=3).contains(&n), "write returned {n}");

    let data = pattern(4 << 20, 11);
    let reader = {
        let s = server.clone();
        env.spawn(async move { read_to_end(&s, 8 << 20).await })
    };
    env.within("write_all 4 MiB", 20 * PROMPT, client.write_all(&data))
        .await
        .expect("write_all");
    peer::close(&client).await;
    let (got, err) = env.within("reader", 20 * PROMPT, reader).await;
    assert_eq!(err, None);
    let mut want = b"0123456789abcdef".to_vec();
    want.extend_from_slice(&b"xyz"[..n]);
    want.extend_from_slice(&data);
    assert_eq!(got.len(), want.len(), "bytes received");
    assert!(got == want, "data corrupted");
}

/// #12: a write blocked on a full send path (the peer is not reading) resumes once the peer
/// reads.
pub async fn b12_blocked_write_resumes_when_peer_reads<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let len = env.overflow_len();
    let w = spawn_write_all(&env, &client, len);
    env.assert_blocked("write_all of more than the send path holds", &w, 100 * MS)
        .await;
    env.within("peer drains everything", 30 * PROMPT, discard(&server, len))
        .await;
    env.within("blocked write resumes", PROMPT, w)
        .await
        .expect("write_all after the peer read");
    env.assert_no_waiters().await;
}

/// #13: after our own `shutdown_write`, writes fail (`EPIPE`: `BrokenPipe`) and the peer reads
/// the data then EOF; the other direction keeps working (half close). A writer blocked at the
/// time of the shutdown wakes and fails too.
pub async fn b13_write_after_shutdown_write_fails_and_peer_reads_eof<B: SocketBackend>(
    env: Env<B>,
) {
    let (client, server) = env.pair().await;
    client.write_all(b"data").await.unwrap();
    client.shutdown_write().unwrap();

    let e = env
        .prompt("write after shutdown_write", client.write(b"x"))
        .await
        .expect_err("write after shutdown_write");
    assert_eq!(e.op(), Op::Write, "{e}");
    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
    assert!(
        !e.is_closed() && !e.is_timeout() && !e.is_temporary(),
        "{e}"
    );

    let (got, err) = env
        .within("peer reads to EOF", PROMPT, read_to_end(&server, 1024))
        .await;
    assert_eq!(err, None);
    assert_eq!(got, b"data");

    server.write_all(b"pong").await.unwrap();
    let back = env
        .within("read the other direction", PROMPT, read_exact(&client, 4))
        .await;
    assert_eq!(back, b"pong");

    // Derived (as #6 for reads): a writer blocked when the write half shuts down is woken,
    // and fails the same way.
    let (client, _server) = env.pair().await;
    let w = spawn_write_all(&env, &client, env.overflow_len());
    env.assert_blocked("write_all of more than the send path holds", &w, 100 * MS)
        .await;
    client.shutdown_write().unwrap();
    let e = env
        .within("blocked write after shutdown_write", PROMPT, w)
        .await
        .expect_err("write after shutdown_write");
    assert_eq!(e.op(), Op::Write, "{e}");
    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
    env.assert_no_waiters().await;
}

/// #14: writing to a peer that reset, or that closed (after its RST comes back), eventually
/// fails with `ConnectionReset`/`BrokenPipe` and never hangs; a writer blocked on a full buffer
/// is woken by the reset.
pub async fn b14_write_to_reset_peer_fails_and_never_hangs<B: SocketBackend>(env: Env<B>) {
    /// Writes 1 KiB at a time until an error, at most `LIMIT` times.
    async fn write_until_error<B: SocketBackend>(env: &Env<B>, s: &TcpStream<B>) -> Error {
        const LIMIT: usize = 1000;
        let buf = [7u8; 1024];
        for _ in 0..LIMIT {
            match env
                .within("write to a gone peer", PROMPT, s.write(&buf))
                .await
            {
                // CAUTION [K]: on Linux the first writes after the peer's close may still
                // succeed; the peer's RST turns a later one into an error (#14).
                Ok(_) => env.sleep(MS).await,
                Err(e) => return e,
            }
        }
        panic!("{LIMIT} writes to a gone peer all succeeded");
    }

    // The peer reset.
    let (client, server) = env.pair().await;
    peer::reset(&server).await;
    let e = write_until_error(&env, &client).await;
    assert_peer_gone(&e);

    // The peer closed gracefully (FIN); our data then draws its RST.
    let (client, server) = env.pair().await;
    peer::close(&server).await;
    let e = write_until_error(&env, &client).await;
    assert_peer_gone(&e);

    // Blocked on a full buffer when the RST arrives.
    let (client, server) = env.pair().await;
    let w = spawn_write_all(&env, &client, env.overflow_len());
    env.assert_blocked("write_all of more than the send path holds", &w, 100 * MS)
        .await;
    peer::reset(&server).await;
    let e = env
        .within("blocked write after the peer's RST", PROMPT, w)
        .await
        .expect_err("the peer reset");
    assert_peer_gone(&e);
    env.assert_no_waiters().await;
}

/// #15: a zero-length write returns `Ok(0)` but still reports an expired deadline or a closed
/// stream (`prepareWrite` runs first).
pub async fn b15_zero_length_write_reports_errors<B: SocketBackend>(env: Env<B>) {
    let (_client, server) = env.pair().await;
    assert_eq!(
        env.prompt("zero-length write", server.write(&[])).await,
        Ok(0)
    );
    assert_eq!(
        env.prompt("zero-length write_all", server.write_all(&[]))
            .await,
        Ok(())
    );

    server.set_write_deadline(Some(env.past())).unwrap();
    let e = env
        .prompt("zero-length write, expired", server.write(&[]))
        .await
        .expect_err("expired deadline");
    assert_timeout(&e, Op::Write);
    server.set_write_deadline(None).unwrap();
    assert_eq!(
        env.prompt("zero-length write, deadline cleared", server.write(&[]))
            .await,
        Ok(0)
    );

    server.close().await.unwrap();
    let e = env
        .prompt("zero-length write, closed", server.write(&[]))
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Write);
}

/// #16 (`docs/semantics.md#timeout-does-not-poison`): a `write_all` that times out part-way reports
/// the bytes the stack accepted (`transferred`, Go's `nn`); exactly those bytes reach the peer, and
/// after the deadline is reset the stream works both ways.
pub async fn b16_write_timeout_reports_partial_count_and_conn_stays_usable<B: SocketBackend>(
    env: Env<B>,
) {
    let (client, server) = env.pair().await;
    let data = pattern(env.overflow_len(), 16);
    let t0 = env.now();
    client.set_write_deadline(Some(t0 + 200 * MS)).unwrap();
    let e = env
        .within(
            "write_all with a deadline",
            5 * PROMPT,
            client.write_all(&data),
        )
        .await
        .expect_err("the peer does not read: the write must time out");
    let elapsed = env.since(t0);
    assert_timeout(&e, Op::Write);
    assert!(
        elapsed >= 180 * MS && elapsed < 200 * MS + PROMPT,
        "timed out after {elapsed:?}, deadline 200ms"
    );
    let nn = e.transferred();
    assert!(
        nn > 0 && nn < data.len(),
        "transferred {nn} of {}: want a partial write",
        data.len()
    );

    client.set_write_deadline(None).unwrap();
    let got = env
        .within(
            "peer reads the accepted bytes",
            20 * PROMPT,
            read_exact(&server, nn),
        )
        .await;
    assert!(got == data[..nn], "the accepted prefix was corrupted");
    client.write_all(b"after-timeout").await.unwrap();
    let next = env
        .within("read after the timeout", PROMPT, read_exact(&server, 13))
        .await;
    assert_eq!(
        next, b"after-timeout",
        "bytes beyond `transferred` reached the peer"
    );
    server.write_all(b"ok").await.unwrap();
    assert_eq!(
        env.within("reverse direction", PROMPT, read_exact(&client, 2))
            .await,
        b"ok"
    );
}
