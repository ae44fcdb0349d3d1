//! The smoltcp instance over an impaired simulated network: two smoltcp hosts on a
//! [`netpoll_drivers::SimNet`] switch (10.0.0.1 serves, 10.0.0.2 connects), one scheduler,
//! simulated time, every link direction delayed, jittered, reordered and duplicated, and lossy
//! and corrupting too for the cases whose bounds allow it ([`NEEDS_LOSSLESS`] lists the
//! others). Each case runs under many seeds.
//!
//! * `NETPOLL_SIM_SEEDS=n`: run each case under seeds `0..n` (default: 100 when `CI` is set,
//!   as in `.ci/run`; 10 otherwise).
//! * `NETPOLL_SIM_SEED=s`: run each case under seed `s` only (replay a failure; the failure
//!   message names the seed and the run's trace hash, which a replay reproduces exactly).

use core::future::Future;
use core::net::IpAddr;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use netpoll_drivers::{sim_ip, Config, Impairments, SimDevice, SimNet, SimSwitch, SmolBackend};

use crate::{Checked, Env, Harness};

/// Delay, jitter, reordering and duplication, both directions: nothing is lost, so every
/// segment arrives within a few milliseconds, but out of order and twice now and then.
pub const LOSSLESS: Impairments = Impairments {
    loss_ppm: 0,
    delay: Duration::from_millis(1),
    jitter: Duration::from_millis(2),
    reorder_ppm: 20_000,
    reorder_delay: Duration::from_millis(4),
    duplicate_ppm: 10_000,
    corrupt_ppm: 0,
};

/// [`LOSSLESS`] plus 2 % loss and 0.5 % corruption: TCP has to retransmit.
pub const LOSSY: Impairments = Impairments {
    loss_ppm: 20_000,
    corrupt_ppm: 5_000,
    ..LOSSLESS
};

/// Cases that run on [`LOSSLESS`] links instead of [`LOSSY`] ones.
///
/// CAUTION: each of these bounds a network exchange by less than what one lost segment costs,
/// and smoltcp's minimum retransmission timeout is 1 s: one loss turns a bounded exchange into
/// a reported "hang". Their semantics (no lost wake-up, deadlines on time, errors of the right
/// shape) do not depend on loss, so they keep every impairment that still delivers each
/// segment within milliseconds: delay, jitter, reordering and duplication. Found by running
/// every case on [`LOSSY`] links under 100 seeds; each failure was a bound below, never a
/// wrong result.
///
/// * An operation that waits for data, a FIN or an RST from the peer inside [`crate::PROMPT`]
///   (1 s) or [`Env::within`](crate::Env::within) a second: the `a0x`, `b13`, `b16`, `c17`,
///   `c20`, `c24`, `c25`, `c60`, `d2x`/`d3x`/`d4x`, `e4x` and `r6x`/`r7x` cases listed.
/// * `a10`, `d37`, `d40`: a round trip inside 1 s after concurrent readers, a huge deadline
///   or the deadline stress.
/// * `c21`: connections must be accepted before a short accept deadline.
/// * `a02`, `a08`, `b11`: bulk transfers (1 MiB, 1000 round trips, 4 MiB) bounded by 20 s;
///   smoltcp recovers most losses inside a window only by a retransmission timeout.
pub const NEEDS_LOSSLESS: &[&str] = &[
    "a01_read_returns_available_data",
    "a02_read_returns_data_then_eof_after_peer_close",
    "a03_blocked_read_wakes_with_eof_on_peer_close",
    "a04_zero_length_read_returns_at_once",
    "a06_read_after_shutdown_read_returns_eof",
    "a07_read_after_peer_reset_is_not_eof",
    "a08_ping_pong_and_bulk_transfer_lose_no_wakeups",
    "a10_concurrent_reads_are_serialised",
    "b11_write_all_loops_over_partial_writes",
    "b13_write_after_shutdown_write_fails_and_peer_reads_eof",
    "b16_write_timeout_reports_partial_count_and_conn_stays_usable",
    "c17_accept_blocks_until_connection",
    "c20_accept_past_deadline_times_out_even_if_queued",
    "c21_accept_deadline_returns_conns_then_times_out",
    "c24_accept_skips_aborted_connection",
    "c25_listen_close_listen_same_address",
    "c60_connect_to_closed_port_is_refused",
    "d26_read_past_deadline_times_out_with_data_ready",
    "d27_write_past_deadline_times_out",
    "d30_read_timeout_is_sticky",
    "d33_cleared_deadline_leaves_op_blocked",
    "d34_read_and_write_deadlines_are_independent",
    "d36_deadline_now_is_expired_and_none_is_no_deadline",
    "d37_huge_deadline_never_expires",
    "d39_stale_deadline_timer_has_no_effect",
    "d40_concurrent_deadline_stress",
    "d41_buffers_untouched_after_return",
    "e42_close_unblocks_blocked_read",
    "e46_ops_after_close_fail",
    "r61_readable_waits_for_data_then_read_gets_it",
    "r62_readable_sees_data_queued_before_it",
    "r63_readable_returns_at_eof",
    "r65_readable_obeys_the_read_deadline",
    "r66_readable_queues_behind_a_read",
    "r67_try_read_and_try_write_never_wait",
    "r69_read_after_a_reset_returns_at_once",
    "r70_buffered_data_then_reset_never_hangs",
    "r71_try_read_alone_gets_buffered_data",
];

/// How many seeds each case runs under, and from which.
fn seeds() -> core::ops::Range<u64> {
    let var = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
    };
    if let Some(seed) = var("NETPOLL_SIM_SEED") {
        return seed..seed + 1;
    }
    // Every seed costs a full run of the case: CI runs 100, a local `cargo test` a few.
    let default = if std::env::var_os("CI").is_some() {
        100
    } else {
        10
    };
    0..var("NETPOLL_SIM_SEEDS").unwrap_or(default)
}

std::thread_local! {
    /// The seed and impairments the next [`SimHarness::run`] on this thread builds with.
    static RUN: Cell<(u64, Impairments)> = const { Cell::new((0, LOSSLESS)) };
    /// The trace hash and simulated time (ns) the last run on this thread ended with.
    static LAST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Records the switch's trace hash when a run ends, also when it ends in a panic.
struct Recorder(SimSwitch);

impl Drop for Recorder {
    fn drop(&mut self) {
        LAST.set((self.0.trace_hash(), self.0.now().as_nanos()));
    }
}

/// Runs each case on a fresh impaired [`SimNet`] per seed (two smoltcp hosts, one scheduler,
/// simulated clock), for every seed of `NETPOLL_SIM_SEEDS`.
#[derive(Debug)]
pub struct SimHarness;

impl Harness for SimHarness {
    type Backend = SmolBackend<SimDevice>;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce(Env<Self::Backend>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (seed, imp) = RUN.get();
        let mut net = SimNet::builder(2)
            .seed(seed)
            .impairments(imp)
            .build()
            .expect("build the simulated network");
        let _recorder = Recorder(net.switch.clone());
        let config = Config::default();
        // Frames in flight are still in the sender's buffer until acknowledged, so delay does
        // not add to what one stream can hand the network.
        let max_buffered = config.tx_buffer + config.rx_buffer;
        let env = Env::new(
            net.host(0).clone(),
            net.host(1).clone(),
            IpAddr::V4(sim_ip(0)),
            max_buffered,
        );
        net.block_on(body(env));
    }

    fn run_case<F, Fut>(name: &'static str, body: F)
    where
        F: Fn(Env<Checked<Self::Backend>>) -> Fut + Copy,
        Fut: Future<Output = ()>,
    {
        let (imp, profile) = if NEEDS_LOSSLESS.contains(&name) {
            (LOSSLESS, "lossless")
        } else {
            (LOSSY, "lossy")
        };
        for seed in seeds() {
            RUN.set((seed, imp));
            let r = catch_unwind(AssertUnwindSafe(|| {
                crate::run_case::<Self, F, Fut>(name, body);
            }));
            if let Err(panic) = r {
                let (trace, at) = LAST.get();
                eprintln!(
                    "{name}: failed on {profile} links with seed {seed} (trace {trace:016x} at \
                     {:?} simulated); replay with NETPOLL_SIM_SEED={seed}",
                    Duration::from_nanos(at)
                );
                resume_unwind(panic);
            }
        }
    }
}
