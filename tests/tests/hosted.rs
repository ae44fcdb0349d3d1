//! The conformance suite on the hosted backend: kernel TCP over 127.0.0.1, epoll readiness,
//! on the multi-worker runtime (two workers).

netpoll_conformance::conformance_suite!(netpoll_conformance::hosted::HostedHarness);
netpoll_conformance::udp_suite!(netpoll_conformance::hosted::HostedHarness);
