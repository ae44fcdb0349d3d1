//! The conformance suite on smoltcp over the in-memory wire (both ends smoltcp).

netpoll_conformance::conformance_suite!(netpoll_conformance::smoltcp::WireHarness);
netpoll_conformance::udp_suite!(netpoll_conformance::smoltcp::WireHarness);
