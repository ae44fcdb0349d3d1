//! `Handle::timeout` and `TcpStream::into_split` on every TCP instance that needs no
//! privileges (kernel sockets over IPv4 and IPv6, smoltcp on the in-memory wire over IPv4 and
//! IPv6): the same bodies, so the no_std path (smoltcp on simulated time) is covered as well
//! as the kernel's.

use core::time::Duration;

use netpoll_conformance::{Env, Harness};
use netpoll_stack::SocketBackend;

/// A read that times out is dropped (its wait withdrawn, its lock released), and the next
/// read on the same connection gets the data.
async fn timed_out_read_leaves_the_connection_usable<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let mut buf = [0u8; 8];
    let started = env.now();
    let first = env
        .handle
        .timeout(Duration::from_millis(100), client.read(&mut buf))
        .await;
    let waited = env.now() - started;
    assert!(first.is_err(), "nothing was sent: the read must time out");
    assert!(waited >= Duration::from_millis(90), "early: {waited:?}");
    assert!(waited < Duration::from_secs(1), "late: {waited:?}");
    assert_eq!(
        env.handle.waiters(),
        0,
        "the dropped read withdrew its wait"
    );

    server.write_all(b"data").await.unwrap();
    let n = env
        .handle
        .timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("the data arrives in time")
        .unwrap();
    assert_eq!(&buf[..n], b"data");
}

/// Owned halves in two tasks: the server echoes through them, and dropping its write half
/// sends the FIN that ends the client's read loop.
async fn owned_halves_echo_in_two_tasks<B: SocketBackend>(env: Env<B>) {
    let (client, server) = env.pair().await;
    let (server_read, server_write) = server.into_split();
    let (client_read, client_write) = client.into_split();
    let echo = env.handle.spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            match server_read.read(&mut buf).await.unwrap() {
                0 => break,
                n => server_write.write_all(&buf[..n]).await.unwrap(),
            }
        }
        // `server_write` drops here: the client reads EOF.
    });
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let to_send = payload.clone();
    let sender = env.handle.spawn(async move {
        client_write.write_all(&to_send).await.unwrap();
    });
    let mut echoed = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match client_read.read(&mut buf).await.unwrap() {
            0 => break,
            n => echoed.extend_from_slice(&buf[..n]),
        }
    }
    sender.await;
    echo.await;
    assert_eq!(echoed, payload);
}

/// The halves are tokio `AsyncRead`/`AsyncWrite`: `tokio::io::copy` echoes through them
/// (the io-util crate only, on netpoll's scheduler).
async fn tokio_copy_echoes_through_owned_halves<B: SocketBackend>(env: Env<B>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (client, server) = env.pair().await;
    let echo = env.handle.spawn(async move {
        let (mut read, mut write) = server.into_split();
        let copied = tokio::io::copy(&mut read, &mut write).await.unwrap();
        write.shutdown().await.unwrap();
        copied
    });
    let (mut read, mut write) = client.into_split();
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 249) as u8).collect();
    let to_send = payload.clone();
    let sender = env.handle.spawn(async move {
        write.write_all(&to_send).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    read.read_to_end(&mut echoed).await.unwrap();
    sender.await;
    assert_eq!(echo.await, payload.len() as u64);
    assert_eq!(echoed, payload);
}

macro_rules! instances {
    ($($module:ident => $harness:ty),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn timed_out_read_leaves_the_connection_usable() {
                <$harness>::run(super::timed_out_read_leaves_the_connection_usable);
            }

            #[test]
            fn owned_halves_echo_in_two_tasks() {
                <$harness>::run(super::owned_halves_echo_in_two_tasks);
            }

            #[test]
            fn tokio_copy_echoes_through_owned_halves() {
                <$harness>::run(super::tokio_copy_echoes_through_owned_halves);
            }
        }
    )*};
}

instances! {
    hosted => netpoll_conformance::hosted::HostedHarness,
    hosted_v6 => netpoll_conformance::ipv6::HostedV6Harness,
    smoltcp => netpoll_conformance::smoltcp::WireHarness,
    smoltcp_v6 => netpoll_conformance::ipv6::WireV6Harness,
}
