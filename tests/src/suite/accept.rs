//! C. Accept and listeners: items 17–25 of the conformance checklist in `docs/semantics.md`
//! (and #60, a refused connect).

use core::time::Duration;

use netpoll_stack::{ErrorKind, Op, SocketBackend, TcpListener};

use crate::io::{read_exact, read_to_end};
use crate::{assert_closed, assert_timeout, peer, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

type AcceptTask<B> = netpoll_core::JoinHandle<
    Result<(netpoll_stack::TcpStream<B>, core::net::SocketAddr), netpoll_stack::Error>,
>;

fn spawn_accept<B: SocketBackend>(env: &Env<B>, ln: &TcpListener<B>) -> AcceptTask<B> {
    let ln = ln.clone();
    env.spawn(async move { ln.accept().await })
}

/// #17: accept blocks until a connection is established, then returns a stream that is
/// registered with the poller: its reads park and are woken by data.
pub async fn c17_accept_blocks_until_connection<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let addr = env.addr_of(&ln);
    let acc = spawn_accept(&env, &ln);
    env.assert_blocked("accept with no connection", &acc, 100 * MS)
        .await;

    let client = env.connect(addr).await;
    let (server, peer_addr) = env
        .within("accept after connect", PROMPT, acc)
        .await
        .expect("accept");
    assert_eq!(Ok(peer_addr), client.local_addr(), "accept's peer address");
    assert_eq!(server.peer_addr(), client.local_addr());
    assert_eq!(server.local_addr(), client.peer_addr());

    let r = {
        let s = server.clone();
        env.spawn(async move {
            let mut b = [0u8; 16];
            let n = s.read(&mut b).await?;
            Ok::<_, netpoll_stack::Error>(b[..n].to_vec())
        })
    };
    env.assert_blocked("read on the accepted stream", &r, 50 * MS)
        .await;
    client.write_all(b"hi").await.unwrap();
    let got = env.within("read woken by data", PROMPT, r).await.unwrap();
    assert!(!got.is_empty() && b"hi".starts_with(&got), "read {got:?}");
}

/// #18: closing the listener from another task unblocks a pending accept with the closed
/// error of op `accept`.
pub async fn c18_close_unblocks_accept<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let acc = spawn_accept(&env, &ln);
    env.assert_blocked("accept with no connection", &acc, 100 * MS)
        .await;
    env.prompt("close the listener", ln.close())
        .await
        .expect("first close");
    let e = env
        .within("accept after close", PROMPT, acc)
        .await
        .expect_err("accept must fail once the listener is closed");
    assert_closed(&e, Op::Accept);
    env.assert_no_waiters().await;
}

/// #19: accept after close fails at once; close succeeds the first time only.
pub async fn c19_accept_after_close_fails<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let other = ln.clone();
    env.prompt("close", ln.close()).await.expect("first close");
    for l in [&ln, &other] {
        let e = env
            .prompt("accept after close", l.accept())
            .await
            .expect_err("closed");
        assert_closed(&e, Op::Accept);
    }
    let e = env
        .prompt("second close", other.close())
        .await
        .expect_err("second close must fail");
    assert_closed(&e, Op::Close);
}

/// #20: with a past deadline, accept times out even though a connection is queued, and keeps
/// doing so; clearing the deadline then yields the queued connection.
pub async fn c20_accept_past_deadline_times_out_even_if_queued<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let addr = env.addr_of(&ln);
    // CAUTION: relies on the backlog completing handshakes before accept (the kernel does;
    // `docs/design.md#a-backlog-is-a-bounded-queue` requires it of the userspace stack too).
    let client = env.connect(addr).await;
    env.sleep(20 * MS).await;
    ln.set_deadline(Some(env.past())).unwrap();
    for _ in 0..2 {
        let e = env
            .prompt("accept, past deadline", ln.accept())
            .await
            .expect_err("past deadline: timeout even with a queued connection");
        assert_timeout(&e, Op::Accept);
    }
    ln.set_deadline(None).unwrap();
    let (server, _) = env
        .within("accept after clearing the deadline", PROMPT, ln.accept())
        .await
        .expect("the queued connection");
    client.write_all(b"q").await.unwrap();
    assert_eq!(
        env.within("read", PROMPT, read_exact(&server, 1)).await,
        b"q"
    );
}

/// #21: with a deadline 500 ms out, accept returns connections until the deadline, then times
/// out — not before it, and well before 1 s after it.
pub async fn c21_accept_deadline_returns_conns_then_times_out<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let addr = env.addr_of(&ln);
    let t0 = env.now();
    let deadline = t0 + 500 * MS;
    ln.set_deadline(Some(deadline)).unwrap();
    let mut clients = Vec::new();
    for i in 0..3 {
        let (c, acc) = futures::future::join(env.connect(addr), ln.accept()).await;
        acc.unwrap_or_else(|e| panic!("accept #{i} before the deadline: {e}"));
        clients.push(c);
    }
    assert!(
        env.now() < deadline,
        "3 connections took longer than 500 ms"
    );
    let e = env
        .within("accept until the deadline", 2 * PROMPT, ln.accept())
        .await
        .expect_err("no connection: timeout");
    let elapsed = env.since(t0);
    assert_timeout(&e, Op::Accept);
    assert!(
        elapsed >= 450 * MS && elapsed < 500 * MS + PROMPT,
        "timed out after {elapsed:?}, deadline 500ms"
    );
}

/// #22: a past deadline followed by "no deadline" leaves accept blocked (> 100 ms) until the
/// listener is closed, which reports the closed error (not a timeout).
pub async fn c22_accept_past_then_zero_deadline_blocks<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    ln.set_deadline(Some(env.past())).unwrap();
    ln.set_deadline(None).unwrap();
    let acc = spawn_accept(&env, &ln);
    env.assert_blocked("accept after clearing the deadline", &acc, 150 * MS)
        .await;
    ln.close().await.unwrap();
    let e = env
        .within("accept after close", PROMPT, acc)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Accept);
}

/// #23: "no deadline" followed by now + 10 ms times accept out within 1 s.
pub async fn c23_accept_zero_then_short_deadline_times_out<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    ln.set_deadline(None).unwrap();
    let t0 = env.now();
    ln.set_deadline(Some(t0 + 10 * MS)).unwrap();
    let e = env
        .within("accept with a 10 ms deadline", PROMPT, ln.accept())
        .await
        .expect_err("timeout");
    assert_timeout(&e, Op::Accept);
    assert!(
        env.since(t0) >= 9 * MS,
        "timed out after {:?}",
        env.since(t0)
    );
}

/// #24: a connection reset before it was accepted never surfaces as an accept error; accept
/// goes on to return the next, live connection (Go #6163, #6987).
pub async fn c24_accept_skips_aborted_connection<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let addr = env.addr_of(&ln);
    let aborted = env.connect(addr).await;
    let aborted_addr = aborted.local_addr().unwrap();
    peer::reset(&aborted).await;
    env.sleep(50 * MS).await;
    let live = env.connect(addr).await;
    let live_addr = live.local_addr().unwrap();
    live.write_all(b"live").await.unwrap();

    for _ in 0..2 {
        let (s, from) = env
            .within("accept", PROMPT, ln.accept())
            .await
            .expect("an aborted connection request must not fail accept");
        if from == live_addr {
            assert_eq!(
                env.within("read the live conn", PROMPT, read_exact(&s, 4))
                    .await,
                b"live"
            );
            return;
        }
        // CAUTION: Linux keeps a connection reset while queued and hands it out; it then
        // reads as reset (or EOF). A userspace stack may drop it instead. Either way the abort
        // is not an accept error and the live connection follows.
        assert_eq!(from, aborted_addr, "accept returned an unknown peer");
        let (data, err) = env
            .within("read the aborted conn", PROMPT, read_to_end(&s, 16))
            .await;
        assert!(data.is_empty(), "the aborted connection carried data");
        if let Some(e) = err {
            assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        }
    }
    panic!("the live connection was never accepted");
}

/// #25 \[K\]: listen, close, listen again on the same address succeeds — also when a closed
/// connection left the port in TIME_WAIT (Go sets `SO_REUSEADDR`). Userspace equivalent: close
/// releases the port synchronously.
pub async fn c25_listen_close_listen_same_address<B: SocketBackend>(env: Env<B>) {
    let ln = env.listen();
    let addr = env.addr_of(&ln);
    ln.close().await.unwrap();
    let ln = env
        .listen_at(addr)
        .unwrap_or_else(|e| panic!("listen again on {addr} after close: {e}"));

    // Server closes first: its side of the connection (on the listening port) enters
    // TIME_WAIT on the kernel.
    let (client, server) = env.pair_on(&ln).await;
    server.write_all(b"bye").await.unwrap();
    peer::close(&server).await;
    let (got, err) = env
        .within("client reads to EOF", PROMPT, read_to_end(&client, 16))
        .await;
    assert_eq!((got.as_slice(), err), (&b"bye"[..], None));
    client.close().await.unwrap();
    ln.close().await.unwrap();

    let ln = env.listen_at(addr).unwrap_or_else(|e| {
        panic!("listen again on {addr} with a connection in TIME_WAIT: {e} (SO_REUSEADDR?)")
    });
    let (client, server) = env.pair_on(&ln).await;
    client.write_all(b"again").await.unwrap();
    assert_eq!(
        env.within("read", PROMPT, read_exact(&server, 5)).await,
        b"again"
    );
}

/// #60 \[K\], userspace equivalent: a connect to a port with no listener fails with a
/// "connection refused" error (kernel: `ECONNREFUSED` through `SO_ERROR`; smoltcp: the peer's
/// RST in SYN-SENT), promptly, and leaves nothing registered.
pub async fn c60_connect_to_closed_port_is_refused<B: SocketBackend>(env: Env<B>) {
    // A port that was just listening and is closed now: nobody listens there.
    let ln = env.listen();
    let addr = env.addr_of(&ln);
    ln.close().await.unwrap();
    let pds_before = env.handle.pds_in_use();
    let e = env
        .within(
            "connect to a closed port",
            PROMPT,
            netpoll_stack::TcpStream::connect(&env.client, addr),
        )
        .await
        .expect_err("nobody listens there");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(e.op(), Op::Connect);
    assert!(!e.is_timeout() && !e.is_temporary() && !e.is_closed());
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert_eq!(
        env.handle.pds_in_use(),
        pds_before,
        "a failed connect must release its socket"
    );
}
