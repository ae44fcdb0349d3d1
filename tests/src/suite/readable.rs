//! R. `TcpStream::readable`: waiting for data without holding a read buffer (netpoll's own
//! API, not a §6 item; tokio has the same call). It must keep the read contract: no lost
//! wake-up, no spurious EOF, the same close and deadline errors as `read`.

use core::time::Duration;

use netpoll_stack::{Error, Op, SocketBackend, TcpStream};

use crate::{assert_closed, assert_timeout, Env, PROMPT};

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
