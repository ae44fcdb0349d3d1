//! The conformance suite on smoltcp over an impaired simulated network (both ends smoltcp),
//! each case under `NETPOLL_SIM_SEEDS` seeds (default 100 in CI, 10 otherwise).

netpoll_conformance::conformance_suite!(netpoll_conformance::sim::SimHarness);
