//! The conformance suite on the hosted backend with a single-worker runtime (one thread).

netpoll_conformance::conformance_suite!(netpoll_conformance::hosted::HostedSingleHarness);
netpoll_conformance::udp_suite!(netpoll_conformance::hosted::HostedSingleHarness);
