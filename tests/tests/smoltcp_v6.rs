//! The conformance suite on smoltcp over the in-memory wire with IPv6 addresses only (both
//! ends smoltcp, neighbours found by NDP). Same case names as `smoltcp.rs`.

netpoll_conformance::conformance_suite!(netpoll_conformance::ipv6::WireV6Harness);
netpoll_conformance::udp_suite!(netpoll_conformance::ipv6::WireV6Harness);

/// The instance really runs over IPv6: both ends of a connection have IPv6 addresses.
#[test]
fn both_ends_of_a_connection_are_ipv6() {
    netpoll_conformance::ipv6::check_both_ends_are_ipv6::<netpoll_conformance::ipv6::WireV6Harness>(
    );
}
