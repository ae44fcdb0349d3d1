//! The conformance suite on the hosted backend over IPv6: kernel TCP over [::1], epoll
//! readiness, two workers. Same case names as `hosted.rs`.

netpoll_conformance::conformance_suite!(netpoll_conformance::ipv6::HostedV6Harness);
netpoll_conformance::udp_suite!(netpoll_conformance::ipv6::HostedV6Harness);

/// The instance really runs over IPv6: both ends of a connection have IPv6 addresses.
#[test]
fn both_ends_of_a_connection_are_ipv6() {
    netpoll_conformance::ipv6::check_both_ends_are_ipv6::<netpoll_conformance::ipv6::HostedV6Harness>(
    );
}
