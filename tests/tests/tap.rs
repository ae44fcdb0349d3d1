//! The conformance suite on smoltcp over a real TAP device, with the kernel's TCP stack as the
//! peer (smoltcp serves, the kernel connects), each case in a network namespace of its own.
//! Skips without root outside CI; fails there.

netpoll_conformance::conformance_suite!(netpoll_conformance::tap::TapHarness);
netpoll_conformance::udp_suite!(netpoll_conformance::tap::TapHarness);
