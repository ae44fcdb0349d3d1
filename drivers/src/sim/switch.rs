//! The switch: per-link impairments and control, in-flight frames, counters and the trace hash.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use netpoll_core::{Clock, Instant};

use crate::clock::SimClock;

/// What a link does to the frames that cross it, in one direction. Rates are in parts per
/// million; every random choice comes from the link's own generator, seeded from the
/// [`SimNet`](crate::SimNet)'s seed, so the same seed and the same program give the same faults.
///
/// The default is a perfect link: no delay, nothing lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairments {
    /// Frames lost.
    pub loss_ppm: u32,
    /// Fixed one-way latency.
    pub delay: Duration,
    /// Extra latency drawn uniformly from `0..=jitter` per frame. Frames still leave a link in
    /// the order they entered it (a FIFO wire); only `reorder_ppm` overtakes.
    pub jitter: Duration,
    /// Frames held back by `reorder_delay` *outside* the link's FIFO order, so frames sent
    /// after them arrive first.
    pub reorder_ppm: u32,
    /// How much later a reordered frame arrives than it would have. Choose more than the gap
    /// between frames (a few milliseconds) or nothing overtakes it.
    pub reorder_delay: Duration,
    /// Frames delivered twice (each copy with its own delay and corruption draw).
    pub duplicate_ppm: u32,
    /// IPv4 frames with one byte flipped past the Ethernet header. The IP and TCP checksums
    /// reject them, so to TCP this is a loss that went through the parser. ARP is never
    /// corrupted: it has no checksum, and on a real link the Ethernet FCS (which we do not
    /// model) would catch the flip.
    pub corrupt_ppm: u32,
}

impl Impairments {
    /// A perfect link (the default).
    pub const NONE: Impairments = Impairments {
        loss_ppm: 0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        reorder_ppm: 0,
        reorder_delay: Duration::ZERO,
        duplicate_ppm: 0,
        corrupt_ppm: 0,
    };
}

/// Frame counters, for the whole switch ([`SimSwitch::stats`]) or one direction of one link
/// ([`SimSwitch::link_stats`]).
///
/// A frame a host sends to several hosts (an ARP broadcast) counts once per link it enters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Frames that entered a link.
    pub sent: u64,
    /// Bytes that entered a link.
    pub bytes: u64,
    /// Frames a host received.
    pub delivered: u64,
    /// Frames lost to `loss_ppm`.
    pub lost: u64,
    /// Frames dropped because the link was partitioned (sent while partitioned, or in flight
    /// when the partition began).
    pub partitioned: u64,
    /// Extra copies made by `duplicate_ppm`.
    pub duplicated: u64,
    /// Copies with a byte flipped by `corrupt_ppm`.
    pub corrupted: u64,
    /// Copies delayed out of order by `reorder_ppm`.
    pub reordered: u64,
    /// Frames queued on a held link (sent while held, or in flight when the hold began).
    pub held: u64,
    /// Frames dropped because the receiving host already had `max_in_flight` frames coming.
    pub overflowed: u64,
}

impl SimStats {
    fn add(&mut self, o: &SimStats) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.partitioned += o.partitioned;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.reordered += o.reordered;
        self.held += o.held;
        self.overflowed += o.overflowed;
    }
}

/// xorshift64*, one per link: small, seeded, and independent of the traffic on other links.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // xorshift has a fixed point at 0.
        Rng(splitmix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next() % 1_000_000 < u64::from(ppm)
    }

    /// Uniform in `0..=max` nanoseconds.
    fn upto(&mut self, max: Duration) -> u64 {
        let max = nanos(max);
        if max == 0 {
            0
        } else {
            self.next() % (max + 1)
        }
    }
}

/// SplitMix64's finaliser: spreads a seed and a small index into unrelated generator states.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What happened to a frame, hashed into the trace.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Fate {
    Queued = 1,
    Lost = 2,
    Partitioned = 3,
    Held = 4,
    Overflowed = 5,
    Received = 6,
    Corrupted = 7,
    Reordered = 8,
    Duplicated = 9,
    Released = 10,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

struct Link {
    imp: Impairments,
    rng: Rng,
    partitioned: bool,
    held: bool,
    held_frames: VecDeque<Vec<u8>>,
    /// The latest delivery time given to an in-order frame: the FIFO floor.
    last_at: u64,
    stats: SimStats,
}

/// A frame on its way to a host.
struct InFlight {
    from: usize,
    frame: Vec<u8>,
}

pub(crate) struct State {
    n: usize,
    macs: Vec<[u8; 6]>,
    /// `links[from * n + to]`; the diagonal is unused.
    links: Vec<Link>,
    /// Per receiving host, frames keyed by (delivery time, send order): deterministic order.
    inbox: Vec<BTreeMap<(u64, u64), InFlight>>,
    seq: u64,
    trace: u64,
    max_in_flight: usize,
}

impl State {
    fn link(&mut self, from: usize, to: usize) -> &mut Link {
        assert!(
            from < self.n && to < self.n && from != to,
            "no link from host {from} to host {to} in a network of {}",
            self.n
        );
        &mut self.links[from * self.n + to]
    }

    fn record(&mut self, now: u64, from: usize, to: usize, fate: Fate, at: u64, frame: &[u8]) {
        let mut h = self.trace;
        h = fnv(h, &now.to_le_bytes());
        h = fnv(h, &(from as u64).to_le_bytes());
        h = fnv(h, &(to as u64).to_le_bytes());
        h = fnv(h, &[fate as u8]);
        h = fnv(h, &at.to_le_bytes());
        h = fnv(h, &(frame.len() as u64).to_le_bytes());
        self.trace = fnv(h, frame);
    }

    /// A host put `frame` on its port: the switch forwards it by destination MAC, flooding
    /// broadcasts and unknown destinations, as a learning switch that knows every port would.
    fn send(&mut self, now: u64, from: usize, frame: Vec<u8>) {
        let Some(dst) = frame.get(..6) else {
            return;
        };
        let dst: [u8; 6] = [dst[0], dst[1], dst[2], dst[3], dst[4], dst[5]];
        let unicast = dst[0] & 1 == 0;
        let target = if unicast {
            self.macs.iter().position(|m| *m == dst)
        } else {
            None
        };
        match target {
            Some(to) if to != from => self.enter(now, from, to, frame),
            // A frame to the sender's own MAC goes nowhere (no hairpin).
            Some(_) => {}
            None => {
                for to in (0..self.n).filter(|&to| to != from) {
                    self.enter(now, from, to, frame.clone());
                }
            }
        }
    }

    /// `frame` enters the link `from → to`.
    fn enter(&mut self, now: u64, from: usize, to: usize, frame: Vec<u8>) {
        let link = self.link(from, to);
        link.stats.sent += 1;
        link.stats.bytes += frame.len() as u64;
        if link.partitioned {
            link.stats.partitioned += 1;
            self.record(now, from, to, Fate::Partitioned, now, &frame);
        } else if link.held {
            link.stats.held += 1;
            self.record(now, from, to, Fate::Held, now, &frame);
            self.link(from, to).held_frames.push_back(frame);
        } else {
            self.transmit(now, from, to, frame);
        }
    }

    /// Applies the link's impairments and schedules the copies that survive.
    fn transmit(&mut self, now: u64, from: usize, to: usize, frame: Vec<u8>) {
        let link = self.link(from, to);
        let imp = link.imp;
        if link.rng.chance(imp.loss_ppm) {
            link.stats.lost += 1;
            self.record(now, from, to, Fate::Lost, now, &frame);
            return;
        }
        let copies = if link.rng.chance(imp.duplicate_ppm) {
            link.stats.duplicated += 1;
            alloc::vec![(frame.clone(), Fate::Queued), (frame, Fate::Duplicated)]
        } else {
            alloc::vec![(frame, Fate::Queued)]
        };
        for (mut f, mut fate) in copies {
            let link = self.link(from, to);
            // IPv4 only: ARP has no checksum to catch the flip (see `corrupt_ppm`).
            let ipv4 = f.len() > 14 && f[12] == 0x08 && f[13] == 0x00;
            if ipv4 && link.rng.chance(imp.corrupt_ppm) {
                let span = (f.len() - 14) as u64;
                let i = 14 + (link.rng.next() % span) as usize;
                // A non-zero mask, so the byte really changes.
                f[i] ^= (link.rng.next() % 255 + 1) as u8;
                link.stats.corrupted += 1;
                fate = Fate::Corrupted;
            }
            let base = now
                .saturating_add(nanos(imp.delay))
                .saturating_add(link.rng.upto(imp.jitter));
            let at = if link.rng.chance(imp.reorder_ppm) {
                link.stats.reordered += 1;
                fate = Fate::Reordered;
                base.saturating_add(nanos(imp.reorder_delay))
            } else {
                let at = base.max(link.last_at);
                link.last_at = at;
                at
            };
            if self.inbox[to].len() >= self.max_in_flight {
                self.link(from, to).stats.overflowed += 1;
                self.record(now, from, to, Fate::Overflowed, at, &f);
                continue;
            }
            self.record(now, from, to, fate, at, &f);
            let seq = self.seq;
            self.seq += 1;
            self.inbox[to].insert((at, seq), InFlight { from, frame: f });
        }
    }

    /// The next frame due at host `to` by `now`.
    pub(crate) fn receive(&mut self, now: u64, to: usize) -> Option<Vec<u8>> {
        let entry = self.inbox[to].first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let InFlight { from, frame } = entry.remove();
        self.link(from, to).stats.delivered += 1;
        self.record(now, from, to, Fate::Received, now, &frame);
        Some(frame)
    }

    /// When the next frame becomes due at any host.
    pub(crate) fn next_delivery(&self) -> Option<u64> {
        self.inbox
            .iter()
            .filter_map(|q| q.first_key_value().map(|(k, _)| k.0))
            .min()
    }

    fn set_partitioned(&mut self, now: u64, from: usize, to: usize, on: bool) {
        let was = core::mem::replace(&mut self.link(from, to).partitioned, on);
        if was != on {
            let state = if on {
                "down (partitioned)"
            } else {
                "up (healed)"
            };
            log::info!("simulated link {from} -> {to} {state}");
        }
        if !on {
            return;
        }
        // Crisp: nothing crosses after the call, not even what was already on the wire.
        let gone: Vec<(u64, u64)> = self.in_flight_keys(from, to);
        for key in gone {
            if let Some(f) = self.inbox[to].remove(&key) {
                self.link(from, to).stats.partitioned += 1;
                self.record(now, from, to, Fate::Partitioned, key.0, &f.frame);
            }
        }
        // Queued on a hold: a partition loses those too.
        let held = core::mem::take(&mut self.link(from, to).held_frames);
        for f in held {
            self.link(from, to).stats.partitioned += 1;
            self.record(now, from, to, Fate::Partitioned, now, &f);
        }
    }

    fn set_held(&mut self, now: u64, from: usize, to: usize, on: bool) {
        let was = core::mem::replace(&mut self.link(from, to).held, on);
        if on && !was {
            // Frames on the wire join the hold queue first, in their delivery order.
            for key in self.in_flight_keys(from, to) {
                if let Some(f) = self.inbox[to].remove(&key) {
                    self.link(from, to).stats.held += 1;
                    self.record(now, from, to, Fate::Held, key.0, &f.frame);
                    self.link(from, to).held_frames.push_back(f.frame);
                }
            }
        } else if !on && was {
            let frames = core::mem::take(&mut self.link(from, to).held_frames);
            for f in frames {
                self.record(now, from, to, Fate::Released, now, &f);
                self.transmit(now, from, to, f);
            }
        }
    }

    fn in_flight_keys(&self, from: usize, to: usize) -> Vec<(u64, u64)> {
        self.inbox[to]
            .iter()
            .filter(|(_, f)| f.from == from)
            .map(|(k, _)| *k)
            .collect()
    }
}

pub(crate) struct SwitchCore {
    pub(crate) state: spin::Mutex<State>,
    pub(crate) clock: Arc<SimClock>,
}

impl SwitchCore {
    pub(crate) fn now(&self) -> u64 {
        self.clock.now().as_nanos()
    }

    pub(crate) fn send(&self, from: usize, frame: Vec<u8>) {
        let now = self.now();
        self.state.lock().send(now, from, frame);
    }
}

/// The in-memory Ethernet switch every host of a [`SimNet`](crate::SimNet) is attached to:
/// link control, impairments, counters and the trace hash. Cloning gives another handle to the
/// same switch, so a task can partition a link in the middle of a run.
///
/// Hosts are numbered `0..n` as in the [`SimNet`](crate::SimNet). A link is one *direction*
/// between two hosts; the two-host calls ([`SimSwitch::partition`], [`SimSwitch::hold`], ...)
/// act on both directions, the `_one_way` ones on `from → to` only.
///
/// # Panics
///
/// Every method that takes host numbers panics on a host that does not exist, or on
/// `from == to` (a host has no link to itself).
#[derive(Clone)]
pub struct SimSwitch {
    pub(crate) core: Arc<SwitchCore>,
}

impl fmt::Debug for SimSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSwitch")
            .field("hosts", &self.hosts())
            .field("trace_hash", &format_args!("{:016x}", self.trace_hash()))
            .field("stats", &self.stats())
            .finish()
    }
}

impl SimSwitch {
    pub(crate) fn new(
        clock: Arc<SimClock>,
        macs: Vec<[u8; 6]>,
        seed: u64,
        default: Impairments,
        max_in_flight: usize,
    ) -> SimSwitch {
        let n = macs.len();
        let links = (0..n * n)
            .map(|i| Link {
                imp: default,
                // Each direction its own stream: traffic on one link never shifts another's.
                rng: Rng::new(seed ^ splitmix(0x6c69_6e6b_0000_0000 | i as u64)),
                partitioned: false,
                held: false,
                held_frames: VecDeque::new(),
                last_at: 0,
                stats: SimStats::default(),
            })
            .collect();
        SimSwitch {
            core: Arc::new(SwitchCore {
                state: spin::Mutex::new(State {
                    n,
                    macs,
                    links,
                    inbox: (0..n).map(|_| BTreeMap::new()).collect(),
                    seq: 0,
                    trace: FNV_OFFSET,
                    max_in_flight: max_in_flight.max(1),
                }),
                clock,
            }),
        }
    }

    /// How many hosts are attached.
    pub fn hosts(&self) -> usize {
        self.core.state.lock().n
    }

    /// The running 64-bit hash (FNV-1a) of every frame event so far: the time, both hosts, the
    /// frame's bytes and what happened to it (queued, lost, duplicated, corrupted, reordered,
    /// held, partitioned, received). Two runs with equal hashes exchanged the same frames at
    /// the same simulated times; print it with a failing seed to prove a replay is exact.
    pub fn trace_hash(&self) -> u64 {
        self.core.state.lock().trace
    }

    /// Counters summed over every link.
    pub fn stats(&self) -> SimStats {
        let s = self.core.state.lock();
        let mut total = SimStats::default();
        for l in &s.links {
            total.add(&l.stats);
        }
        total
    }

    /// Counters of the link `from → to`.
    pub fn link_stats(&self, from: usize, to: usize) -> SimStats {
        self.core.state.lock().link(from, to).stats
    }

    /// Frames on their way (not yet received), over all hosts. Held frames are not counted.
    pub fn in_flight(&self) -> usize {
        self.core.state.lock().inbox.iter().map(BTreeMap::len).sum()
    }

    /// Frames waiting on the held link `from → to`.
    pub fn held_frames(&self, from: usize, to: usize) -> usize {
        self.core.state.lock().link(from, to).held_frames.len()
    }

    /// The impairments of the link `from → to`.
    pub fn impairments(&self, from: usize, to: usize) -> Impairments {
        self.core.state.lock().link(from, to).imp
    }

    /// Changes the impairments of the link `from → to` from now on.
    pub fn set_impairments(&self, from: usize, to: usize, imp: Impairments) {
        self.core.state.lock().link(from, to).imp = imp;
    }

    /// Changes the impairments of every link from now on.
    pub fn set_all_impairments(&self, imp: Impairments) {
        for l in &mut self.core.state.lock().links {
            l.imp = imp;
        }
    }

    /// Cuts both directions between `a` and `b`: frames sent, in flight or held are dropped
    /// until [`SimSwitch::repair`].
    pub fn partition(&self, a: usize, b: usize) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Cuts `from → to` only (an asymmetric failure: `to` still reaches `from`).
    pub fn partition_one_way(&self, from: usize, to: usize) {
        let now = self.core.now();
        self.core.state.lock().set_partitioned(now, from, to, true);
    }

    /// Ends a partition between `a` and `b` (both directions). Lost frames stay lost; TCP
    /// retransmits them.
    pub fn repair(&self, a: usize, b: usize) {
        self.repair_one_way(a, b);
        self.repair_one_way(b, a);
    }

    /// Ends a partition of `from → to`.
    pub fn repair_one_way(&self, from: usize, to: usize) {
        let now = self.core.now();
        self.core.state.lock().set_partitioned(now, from, to, false);
    }

    /// Whether `from → to` is partitioned.
    pub fn is_partitioned(&self, from: usize, to: usize) -> bool {
        self.core.state.lock().link(from, to).partitioned
    }

    /// Holds both directions between `a` and `b`: frames sent (and those in flight) queue, in
    /// order, until [`SimSwitch::release`].
    pub fn hold(&self, a: usize, b: usize) {
        self.hold_one_way(a, b);
        self.hold_one_way(b, a);
    }

    /// Holds `from → to` only.
    pub fn hold_one_way(&self, from: usize, to: usize) {
        let now = self.core.now();
        self.core.state.lock().set_held(now, from, to, true);
    }

    /// Releases a hold between `a` and `b`: the queued frames cross in the order they were
    /// sent, as if sent now (so the link's impairments apply to them), `a → b` first.
    pub fn release(&self, a: usize, b: usize) {
        self.release_one_way(a, b);
        self.release_one_way(b, a);
    }

    /// Releases a hold of `from → to`.
    pub fn release_one_way(&self, from: usize, to: usize) {
        let now = self.core.now();
        self.core.state.lock().set_held(now, from, to, false);
    }

    /// Whether `from → to` is held.
    pub fn is_held(&self, from: usize, to: usize) -> bool {
        self.core.state.lock().link(from, to).held
    }

    /// The simulated time now.
    pub fn now(&self) -> Instant {
        self.core.clock.now()
    }
}
