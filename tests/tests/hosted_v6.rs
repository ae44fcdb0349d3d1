//! The conformance suite on the hosted backend over IPv6: kernel TCP over [::1], epoll
//! readiness, two workers. Same case names as `hosted.rs`.

netpoll_conformance::conformance_suite!(netpoll_conformance::ipv6::HostedV6Harness);
netpoll_conformance::udp_suite!(netpoll_conformance::ipv6::HostedV6Harness);

/// The instance really runs over IPv6: both ends of a connection have IPv6 addresses.
#[test]
fn both_ends_of_a_connection_are_ipv6() {
    use netpoll_conformance::Harness;
    use netpoll_stack::TcpStream;

    netpoll_conformance::ipv6::HostedV6Harness::run(|env| async move {
        let listener = env.listen();
        let server_addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(&env.client, server_addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        for addr in [
            server_addr,
            peer,
            client.local_addr().unwrap(),
            server.peer_addr().unwrap(),
        ] {
            assert!(addr.is_ipv6(), "{addr}");
        }
        client.write_all(b"v6").await.unwrap();
        let mut buf = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            got += server.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(&buf, b"v6");
    });
}
