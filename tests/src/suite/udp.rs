//! U. UDP (`docs/semantics.md#udp`): datagram round trips, the read deadline, close while
//! blocked (checklist #49 among them), truncation reported, the port freed by close.
//!
//! These cases need a [`DatagramBackend`], so they have their own macro,
//! [`crate::udp_suite!`], expanded next to [`crate::conformance_suite!`] by every instance
//! whose backend has UDP (hosted with two workers and with one, the smoltcp wire, both over
//! IPv4 and IPv6, and TAP with the kernel as the client). The simulated network is left out: its links lose and duplicate
//! frames, which UDP passes on to the application by design.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use netpoll_stack::{DatagramBackend, ErrorKind, Op, UdpSocket};

use crate::{assert_closed, assert_timeout, Env, PROMPT};

const MS: Duration = Duration::from_millis(1);

/// A socket on the server host, on an ephemeral port; returns it and its address.
fn bind_server<B: DatagramBackend>(env: &Env<B>) -> (UdpSocket<B>, SocketAddr) {
    let s = UdpSocket::bind(&env.server, SocketAddr::new(env.server_ip, 0))
        .unwrap_or_else(|e| panic!("bind UDP on {}:0: {e}", env.server_ip));
    let addr = s.local_addr().expect("UDP local_addr");
    assert_ne!(addr.port(), 0, "port 0 picks a real port");
    (s, addr)
}

/// A socket on the client host, on the unspecified address of the server's family and an
/// ephemeral port.
fn bind_client<B: DatagramBackend>(env: &Env<B>) -> UdpSocket<B> {
    let any = match env.server_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    UdpSocket::bind(&env.client, SocketAddr::new(any, 0))
        .unwrap_or_else(|e| panic!("bind UDP on {any}:0: {e}"))
}

/// `write_to` one datagram, `read_from` it with its sender, and answer that sender.
pub async fn u73_udp_write_to_read_from_round_trip<B: DatagramBackend>(env: Env<B>) {
    let (server, server_addr) = bind_server(&env);
    let client = bind_client(&env);
    let sent = env
        .prompt("write_to", client.write_to(b"ping", server_addr))
        .await
        .expect("write_to");
    assert_eq!(sent, 4, "a datagram is sent whole");
    let mut buf = [0u8; 64];
    let (n, from) = env
        .within(
            "read_from the client's datagram",
            PROMPT,
            server.read_from(&mut buf),
        )
        .await
        .expect("server read_from");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(
        from.port(),
        client.local_addr().expect("client local_addr").port()
    );
    server.write_to(b"pong!", from).await.expect("reply");
    let (n, from) = env
        .within("read_from the reply", PROMPT, client.read_from(&mut buf))
        .await
        .expect("client read_from");
    assert_eq!((&buf[..n], from), (&b"pong!"[..], server_addr));
    // An empty datagram is a datagram.
    client
        .write_to(b"", server_addr)
        .await
        .expect("empty write_to");
    let (n, _) = env
        .within(
            "read_from an empty datagram",
            PROMPT,
            server.read_from(&mut buf),
        )
        .await
        .expect("empty datagram");
    assert_eq!(n, 0);
    client.close().await.expect("close client");
    server.close().await.expect("close server");
    env.assert_no_waiters().await;
}

/// `connect` then `write` and `read`; `write` needs a peer, `write_to` refuses one (Go:
/// `ErrWriteToConnected`).
pub async fn u74_udp_connect_write_read_round_trip<B: DatagramBackend>(env: Env<B>) {
    let (server, server_addr) = bind_server(&env);
    let client = bind_client(&env);
    let e = client.write(b"x").await.expect_err("write before connect");
    assert_eq!((e.op(), e.kind()), (Op::Write, ErrorKind::NotConnected));
    assert_eq!(
        client.peer_addr().expect_err("no peer yet").kind(),
        ErrorKind::NotConnected
    );
    client.connect(server_addr).expect("connect");
    assert_eq!(client.peer_addr().expect("peer_addr"), server_addr);
    let e = client
        .write_to(b"x", server_addr)
        .await
        .expect_err("write_to on a connected socket");
    assert_eq!((e.op(), e.kind()), (Op::Write, ErrorKind::AlreadyConnected));
    env.prompt("write", client.write(b"hello"))
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let (n, from) = env
        .within("server read_from", PROMPT, server.read_from(&mut buf))
        .await
        .expect("server read_from");
    assert_eq!(&buf[..n], b"hello");
    server.connect(from).expect("server connect");
    server.write(b"world").await.expect("server write");
    let n = env
        .within("client read", PROMPT, client.read(&mut buf))
        .await
        .expect("client read");
    assert_eq!(&buf[..n], b"world");
    client.close().await.expect("close client");
    server.close().await.expect("close server");
}

/// Go's `SetReadDeadline`: a blocked read fails with the timeout error on time, the socket
/// stays usable, and clearing the deadline lets the next read wait for its datagram.
pub async fn u75_udp_read_deadline_fires<B: DatagramBackend>(env: Env<B>) {
    let (server, server_addr) = bind_server(&env);
    let client = bind_client(&env);
    server
        .set_read_deadline(Some(env.after(100 * MS)))
        .expect("set_read_deadline");
    let t0 = env.now();
    let mut buf = [0u8; 64];
    let e = env
        .within(
            "read_from with a deadline",
            PROMPT * 2,
            server.read_from(&mut buf),
        )
        .await
        .expect_err("nothing was sent: the deadline must fire");
    let took = env.since(t0);
    assert_timeout(&e, Op::Read);
    assert_eq!(
        e.to_string(),
        "read udp: i/o timeout",
        "Go's message, with the network"
    );
    assert!(
        took >= 90 * MS && took < PROMPT,
        "100 ms deadline fired after {took:?}"
    );
    // Sticky until changed (Go): a second read fails at once.
    let e = env
        .prompt("read_from past the deadline", server.read_from(&mut buf))
        .await
        .expect_err("still past the deadline");
    assert_timeout(&e, Op::Read);
    server.set_read_deadline(None).expect("clear the deadline");
    client
        .write_to(b"late", server_addr)
        .await
        .expect("write_to");
    let (n, _) = env
        .within(
            "read_from after clearing",
            PROMPT,
            server.read_from(&mut buf),
        )
        .await
        .expect("read after the deadline was cleared");
    assert_eq!(&buf[..n], b"late");
    client.close().await.expect("close client");
    server.close().await.expect("close server");
}

/// `close` unblocks a blocked `read_from` with the closed error of op `read`; later
/// operations fail closed too.
pub async fn u76_udp_close_unblocks_blocked_read<B: DatagramBackend>(env: Env<B>) {
    let (server, server_addr) = bind_server(&env);
    let reader = {
        let s = server.clone();
        env.spawn(async move {
            let mut buf = [0u8; 64];
            s.read_from(&mut buf).await
        })
    };
    env.assert_blocked("read_from with nothing sent", &reader, 100 * MS)
        .await;
    env.prompt("close with a blocked read", server.close())
        .await
        .expect("close");
    let e = env
        .within("blocked read_from after close", PROMPT, reader)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
    let e = server
        .write_to(b"x", server_addr)
        .await
        .expect_err("write_to after close");
    assert_closed(&e, Op::Write);
    let e = server
        .set_read_deadline(None)
        .expect_err("deadline after close");
    assert_closed(&e, Op::Set);
    let e = server.close().await.expect_err("second close");
    assert_closed(&e, Op::Close);
    env.assert_no_waiters().await;
}

/// Checklist #49: a `read_from` with a zero-length buffer parked in the poller is unblocked
/// by close: unlike a stream's, a zero-length datagram read waits for a datagram.
pub async fn e49_udp_close_unblocks_zero_length_read_from<B: DatagramBackend>(env: Env<B>) {
    let (server, _) = bind_server(&env);
    let reader = {
        let s = server.clone();
        env.spawn(async move { s.read_from(&mut []).await })
    };
    env.assert_blocked("zero-length read_from with nothing sent", &reader, 100 * MS)
        .await;
    env.prompt("close with a blocked read", server.close())
        .await
        .expect("close");
    let e = env
        .within("blocked zero-length read_from after close", PROMPT, reader)
        .await
        .expect_err("closed");
    assert_closed(&e, Op::Read);
}

/// A datagram longer than the buffer is reported (`MessageTruncated`, with the bytes that
/// fit in `buf` and counted by `transferred`), not cut silently; the rest is discarded and
/// the next read gets the next datagram whole.
pub async fn u77_udp_truncated_datagram_is_reported<B: DatagramBackend>(env: Env<B>) {
    let (server, server_addr) = bind_server(&env);
    let client = bind_client(&env);
    let long = crate::io::pattern(100, 7);
    client.write_to(&long, server_addr).await.expect("long");
    let mut small = [0u8; 10];
    let e = env
        .within(
            "read_from a long datagram",
            PROMPT,
            server.read_from(&mut small),
        )
        .await
        .expect_err("a 100-byte datagram into 10 bytes is reported");
    assert_eq!((e.op(), e.kind()), (Op::Read, ErrorKind::MessageTruncated));
    assert_eq!(e.transferred(), 10, "the bytes that fit were delivered");
    assert_eq!(&small[..], &long[..10]);
    assert!(!e.is_timeout() && !e.is_closed(), "{e}");
    assert_eq!(
        e.to_string(),
        "read udp: message truncated: datagram longer than the buffer"
    );
    client.write_to(b"next", server_addr).await.expect("next");
    let mut buf = [0u8; 200];
    let (n, _) = env
        .within(
            "read_from after a truncation",
            PROMPT,
            server.read_from(&mut buf),
        )
        .await
        .expect("the next datagram");
    assert_eq!(&buf[..n], b"next", "the long datagram's rest was discarded");
    client.close().await.expect("close client");
    server.close().await.expect("close server");
}

/// `close` frees the port when it returns: binding the same address again works, and a
/// second socket on a bound port is refused meanwhile.
pub async fn u78_udp_close_frees_the_port<B: DatagramBackend>(env: Env<B>) {
    let (server, server_addr) = bind_server(&env);
    let e = UdpSocket::bind(&env.server, server_addr).expect_err("the port is taken");
    assert_eq!((e.op(), e.kind()), (Op::Listen, ErrorKind::AddrInUse));
    server.close().await.expect("close");
    let again = UdpSocket::bind(&env.server, server_addr).expect("bind again after close");
    assert_eq!(again.local_addr().expect("local_addr"), server_addr);
    again.close().await.expect("close again");
}

/// Expands to one `#[test] fn <case>()` per UDP case, running it on `$harness` (whose
/// backend must be a [`DatagramBackend`]).
///
/// Used as `netpoll_conformance::udp_suite!(netpoll_conformance::hosted::HostedHarness);`
/// next to [`crate::conformance_suite!`].
#[macro_export]
macro_rules! udp_suite {
    ($harness:ty) => {
        $crate::conformance_suite!(@cases $harness;
            udp::u73_udp_write_to_read_from_round_trip,
            udp::u74_udp_connect_write_read_round_trip,
            udp::u75_udp_read_deadline_fires,
            udp::u76_udp_close_unblocks_blocked_read,
            udp::u77_udp_truncated_datagram_is_reported,
            udp::u78_udp_close_frees_the_port,
            udp::e49_udp_close_unblocks_zero_length_read_from,
        );
    };
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn` case in this file is listed in `udp_suite!`, and nothing else.
    #[test]
    fn the_macro_lists_every_udp_case() {
        let src = include_str!("udp.rs");
        let mut defined: Vec<String> = src
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .map(|l| format!("udp::{}", &l[..l.find('<').unwrap()]))
            .collect();
        let mut listed = crate::macro_cases(src);
        defined.sort();
        listed.sort();
        assert_eq!(defined, listed);
        assert_eq!(listed.len(), 7);
    }
}
