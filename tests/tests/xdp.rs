//! The conformance suite on smoltcp over an AF_XDP socket on a veth pair, with the kernel's TCP
//! stack as the peer (smoltcp serves, the kernel connects), each case in a network namespace of
//! its own. Skips without root (or without ethtool) outside CI; fails there.

netpoll_conformance::conformance_suite!(netpoll_conformance::xdp::XdpHarness);
netpoll_conformance::udp_suite!(netpoll_conformance::xdp::XdpHarness);
