//! smoltcp's UDP limits (`host/udp.rs`), beyond the conformance suite's shared cases: a
//! datagram that cannot fit is refused, a full receive ring drops datagrams rather than block
//! the sender, and an address the host does not have cannot be bound.

use netpoll_drivers::{Config, WireNet};
use netpoll_stack::{ErrorKind, Op, SocketBackend, UdpSocket};

/// Sends one datagram of `len` bytes from host A to B with A's UDP send ring of `tx_buffer`.
fn send_one(tx_buffer: usize, len: usize) -> Result<usize, netpoll_stack::Error> {
    let mut net = WireNet::builder()
        .configure(move |c: &mut Config| c.udp_tx_buffer = tx_buffer)
        .build()
        .expect("build the wire");
    let (a, to) = (net.a.clone(), net.addr_b(7));
    net.scheduler.block_on(async move {
        let s = UdpSocket::bind(&a, "0.0.0.0:0".parse().unwrap()).unwrap();
        let sent = s.write_to(&vec![1u8; len], to).await;
        s.close().await.unwrap();
        sent
    })
}

#[test]
fn a_datagram_beyond_the_mtu_or_the_send_ring_is_message_too_long() {
    // A 1500-byte IPv4 packet holds 1472 bytes of UDP payload: no fragmentation.
    assert_eq!(send_one(16 * 1024, 1472).unwrap(), 1472);
    let e = send_one(16 * 1024, 1473).unwrap_err();
    assert_eq!((e.op(), e.kind()), (Op::Write, ErrorKind::MessageTooLong));
    // A datagram larger than the whole send ring could never be queued.
    assert_eq!(send_one(1024, 1024).unwrap(), 1024);
    let e = send_one(1024, 1025).unwrap_err();
    assert_eq!((e.op(), e.kind()), (Op::Write, ErrorKind::MessageTooLong));
}

#[test]
fn a_full_receive_ring_drops_datagrams_and_keeps_the_oldest() {
    let mut net = WireNet::builder()
        .configure(|c: &mut Config| c.udp_rx_datagrams = 4)
        .build()
        .expect("build the wire");
    let (a, b, server_addr) = (net.a.clone(), net.b.clone(), net.addr_a(5353));
    let handle = net.a.handle().clone();
    net.scheduler.block_on(async move {
        let server = UdpSocket::bind(&a, server_addr).unwrap();
        let client = UdpSocket::bind(&b, "0.0.0.0:0".parse().unwrap()).unwrap();
        for i in 0..10u8 {
            client.write_to(&[i], server_addr).await.unwrap();
            // One datagram per frame on the wire: let each arrive before the next.
            handle.sleep(core::time::Duration::from_millis(5)).await;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        server
            .set_read_deadline(Some(handle.now() + core::time::Duration::from_millis(100)))
            .unwrap();
        while let Ok((n, _)) = server.read_from(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            got,
            [0, 1, 2, 3],
            "the ring holds the first four; later ones were dropped"
        );
        client.close().await.unwrap();
        server.close().await.unwrap();
    });
}

#[test]
fn binding_an_address_the_host_lacks_fails() {
    let mut net = WireNet::new();
    let a = net.a.clone();
    net.scheduler.block_on(async move {
        let e = UdpSocket::bind(&a, "10.9.9.9:53".parse().unwrap()).unwrap_err();
        assert_eq!(
            (e.op(), e.kind()),
            (Op::Listen, ErrorKind::AddrNotAvailable)
        );
    });
}
