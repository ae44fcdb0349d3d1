//! The in-memory wire: two Ethernet devices joined by two frame queues, with seeded loss and
//! corruption, usable in any test without privileges.
//!
//! Waiting on the wire comes in two flavours ([`WireWaiter`]):
//!
//! * **simulated** (no_std): a wait that finds no frame and no notification *advances a
//!   [`SimClock`]* by its timeout instead of sleeping, so TCP timers (retransmits, delayed ACK,
//!   TIME-WAIT) and deadlines run in simulated time, fast and deterministic. A wait without a
//!   timeout that could never end fails with [`DriverError::Deadlock`]. Single-threaded: only
//!   the scheduler that owns the waiter may drive the wire.
//! * **threaded** (`std`): a real condition-variable wait on the real clock, for two schedulers
//!   on two threads, or tasks on other threads.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use netpoll_core::sync::{AtomicBool, Ordering};

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};

use crate::clock::SimClock;
use crate::error::DriverError;
use crate::frame;
use crate::wait::Wait;

/// One end of a [`Wire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first end.
    A,
    /// The second end.
    B,
}

const SIDES: [Side; 2] = [Side::A, Side::B];

impl Side {
    const fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// Which ends a [`WireWaiter`] wakes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watch {
    /// Frames arriving at one end.
    Side(Side),
    /// Frames arriving at either end (one scheduler drives both hosts).
    Both,
}

impl Watch {
    const fn covers(self, i: usize) -> bool {
        match self {
            Watch::Side(s) => s.index() == i,
            Watch::Both => true,
        }
    }
}

/// Seeded fault injection, applied to every frame as it is sent. Rates are in parts per
/// million.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Frames lost.
    pub drop_ppm: u32,
    /// Frames with one byte flipped past the Ethernet header (smoltcp's checksums reject
    /// them: malformed input).
    pub corrupt_ppm: u32,
    /// The generator's seed: the same seed and traffic give the same faults.
    pub seed: u64,
}

/// How a [`Wire`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireConfig {
    /// IP MTU of both ends.
    pub mtu: usize,
    /// Frames a direction holds before further frames are dropped (a NIC ring's size).
    pub max_queue: usize,
    /// Fault injection; none by default.
    pub faults: Faults,
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            mtu: 1500,
            max_queue: 4096,
            faults: Faults::default(),
        }
    }
}

/// What crossed the wire (both directions, statistics only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WireStats {
    /// Frames sent by A and by B.
    pub frames: [u64; 2],
    /// Bytes sent, both directions.
    pub bytes: u64,
    /// Frames lost to fault injection.
    pub dropped: u64,
    /// Frames lost because the receiving queue was full.
    pub overflowed: u64,
    /// Frames corrupted by fault injection.
    pub corrupted: u64,
    /// TCP segments with SYN set (connection requests and their answers).
    pub tcp_syn: u64,
    /// TCP segments with RST set.
    pub tcp_rst: u64,
}

/// xorshift64*: small, seeded, good enough for fault injection.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `ppm` per million.
    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && (self.next() % 1_000_000) < u64::from(ppm)
    }
}

struct FaultState {
    faults: Faults,
    rng: Rng,
}

#[cfg(feature = "std")]
#[derive(Default)]
struct Signal {
    lock: std::sync::Mutex<()>,
    cond: std::sync::Condvar,
    /// A threaded waiter exists: pushes must signal the condition variable.
    threaded: AtomicBool,
}

#[cfg(feature = "std")]
impl Signal {
    fn notify(&self) {
        // Relaxed: `threaded` is set once, before the waiter that needs the signal can wait,
        // and the waiter re-checks its condition under `lock` anyway.
        if self.threaded.load(Ordering::Relaxed) {
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.cond.notify_all();
        }
    }
}

/// Copies of sent frames, kept for [`Wire::take_captured`].
#[derive(Default)]
struct Capture {
    /// Frames still to record.
    left: usize,
    frames: Vec<(Side, Vec<u8>)>,
}

struct WireCore {
    /// `queues[i]`: frames travelling to side `i`.
    queues: [spin::Mutex<VecDeque<Vec<u8>>>; 2],
    /// Checked before `capture` is locked, so a wire that is not capturing pays one load.
    capturing: AtomicBool,
    capture: spin::Mutex<Capture>,
    faults: spin::Mutex<FaultState>,
    stats: spin::Mutex<WireStats>,
    mtu: usize,
    max_queue: usize,
    #[cfg(feature = "std")]
    signal: Signal,
}

impl WireCore {
    fn push(&self, to: usize, mut frame: Vec<u8>) {
        // Relaxed: `capture` is re-checked under its lock; a frame racing `Wire::capture` may
        // go either way.
        if self.capturing.load(Ordering::Relaxed) {
            let mut c = self.capture.lock();
            if c.left > 0 {
                c.left -= 1;
                c.frames.push((SIDES[to], frame.clone()));
                if c.left == 0 {
                    self.capturing.store(false, Ordering::Relaxed);
                }
            }
        }
        {
            let mut stats = self.stats.lock();
            stats.frames[1 - to] += 1;
            stats.bytes += frame.len() as u64;
            if let Some(info) = frame::tcp_info(&frame, Medium::Ethernet) {
                stats.tcp_syn += u64::from(info.syn);
                stats.tcp_rst += u64::from(info.rst);
            }
            let mut f = self.faults.lock();
            let faults = f.faults;
            if f.rng.chance(faults.drop_ppm) {
                stats.dropped += 1;
                return;
            }
            if frame.len() > 14 && f.rng.chance(faults.corrupt_ppm) {
                let span = (frame.len() - 14) as u64;
                let i = 14 + (f.rng.next() % span) as usize;
                frame[i] ^= 0x5a;
                stats.corrupted += 1;
            }
            let mut q = self.queues[to].lock();
            if q.len() >= self.max_queue {
                stats.overflowed += 1;
                return;
            }
            q.push_back(frame);
        }
        #[cfg(feature = "std")]
        self.signal.notify();
    }

    /// Queues `frame` for side `to` as it is: no faults, no statistics.
    fn inject(&self, to: usize, frame: Vec<u8>) -> bool {
        {
            let mut q = self.queues[to].lock();
            if q.len() >= self.max_queue {
                return false;
            }
            q.push_back(frame);
        }
        #[cfg(feature = "std")]
        self.signal.notify();
        true
    }

    fn pending(&self, watch: Watch) -> bool {
        (0..2).any(|i| watch.covers(i) && !self.queues[i].lock().is_empty())
    }
}

/// The wire itself: a cloneable control handle for statistics and faults.
#[derive(Clone)]
pub struct Wire {
    core: Arc<WireCore>,
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Wire {
    /// A wire built from `config`.
    pub fn new(config: WireConfig) -> Wire {
        Wire {
            core: Arc::new(WireCore {
                queues: [
                    spin::Mutex::new(VecDeque::new()),
                    spin::Mutex::new(VecDeque::new()),
                ],
                faults: spin::Mutex::new(FaultState {
                    faults: config.faults,
                    rng: Rng::new(config.faults.seed),
                }),
                stats: spin::Mutex::new(WireStats::default()),
                capturing: AtomicBool::new(false),
                capture: spin::Mutex::new(Capture::default()),
                mtu: config.mtu,
                max_queue: config.max_queue.max(1),
                #[cfg(feature = "std")]
                signal: Signal::default(),
            }),
        }
    }

    /// Both ends of a default wire (MTU 1500, no faults).
    pub fn pair() -> (WireDevice, WireDevice) {
        let wire = Wire::new(WireConfig::default());
        (wire.device(Side::A), wire.device(Side::B))
    }

    /// The device at one end. Make one per side.
    pub fn device(&self, side: Side) -> WireDevice {
        WireDevice {
            core: self.core.clone(),
            side: side.index(),
            rx: Vec::new(),
        }
    }

    /// Replaces the fault settings (and reseeds the generator).
    pub fn set_faults(&self, faults: Faults) {
        *self.core.faults.lock() = FaultState {
            faults,
            rng: Rng::new(faults.seed),
        };
    }

    /// What crossed so far.
    pub fn stats(&self) -> WireStats {
        *self.core.stats.lock()
    }

    /// Frames waiting to be received at `side`.
    pub fn queued(&self, side: Side) -> usize {
        self.core.queues[side.index()].lock().len()
    }

    /// Puts `frame` at the end of `side`'s receive queue, as if it had crossed the wire but
    /// without faults, capture or statistics: raw input for tests and fuzzing. `false` if the
    /// queue is full (the frame is dropped).
    pub fn inject(&self, side: Side, frame: Vec<u8>) -> bool {
        self.core.inject(side.index(), frame)
    }

    /// Records copies of the next `limit` frames sent in either direction, as sent (before
    /// fault injection); 0 stops recording. Recorded frames are kept until
    /// [`Wire::take_captured`].
    pub fn capture(&self, limit: usize) {
        let mut c = self.core.capture.lock();
        c.left = limit;
        // Relaxed: under the capture lock, which `push` takes before recording.
        self.core.capturing.store(limit > 0, Ordering::Relaxed);
    }

    /// The frames recorded since the last call, oldest first, each with the side it was sent
    /// to (so that [`Wire::inject`] with the same side replays it).
    pub fn take_captured(&self) -> Vec<(Side, Vec<u8>)> {
        core::mem::take(&mut self.core.capture.lock().frames)
    }
}

/// One end of a [`Wire`], a smoltcp Ethernet device.
pub struct WireDevice {
    core: Arc<WireCore>,
    side: usize,
    /// The frame being received.
    rx: Vec<u8>,
}

impl fmt::Debug for WireDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireDevice")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl WireDevice {
    /// The wire this device is an end of.
    pub fn wire(&self) -> Wire {
        Wire {
            core: self.core.clone(),
        }
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct WireRx<'a> {
    frame: &'a [u8],
}

impl RxToken for WireRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct WireTx<'a> {
    core: &'a WireCore,
    to: usize,
}

impl fmt::Debug for WireCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WireCore")
    }
}

impl TxToken for WireTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.core.push(self.to, frame);
        r
    }
}

impl Device for WireDevice {
    type RxToken<'a>
        = WireRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = WireTx<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.core.queues[self.side].lock().pop_front()?;
        self.rx = frame;
        Some((
            WireRx { frame: &self.rx },
            WireTx {
                core: &self.core,
                to: 1 - self.side,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(WireTx {
            core: &self.core,
            to: 1 - self.side,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.core.mtu + 14;
        caps
    }
}

enum Mode {
    Simulated(Arc<SimClock>),
    #[cfg(feature = "std")]
    Threaded,
}

/// How a scheduler waits for frames on a [`Wire`].
///
/// * [`WireWaiter::simulated`] (no_std): a wait that finds no frame and no wake *advances a
///   [`SimClock`]* by its timeout instead of sleeping, so TCP timers and deadlines run in
///   simulated time, fast and deterministic. A wait without a timeout that could never end
///   fails with [`DriverError::Deadlock`]. Single-threaded: only the scheduler that owns the
///   waiter may drive the wire.
/// * `WireWaiter::threaded` (`std`): a real condition-variable wait on the real clock, for two
///   schedulers on two threads, or tasks on other threads.
pub struct WireWaiter {
    core: Arc<WireCore>,
    watch: Watch,
    notified: AtomicBool,
    mode: Mode,
}

impl fmt::Debug for WireWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireWaiter")
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl WireWaiter {
    /// A simulated-time waiter: an idle wait advances `clock` instead of sleeping.
    pub fn simulated(wire: &Wire, clock: Arc<SimClock>, watch: Watch) -> Self {
        WireWaiter {
            core: wire.core.clone(),
            watch,
            notified: AtomicBool::new(false),
            mode: Mode::Simulated(clock),
        }
    }

    /// A real-time waiter that blocks the thread (use a real clock with it).
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn threaded(wire: &Wire, watch: Watch) -> Self {
        // Relaxed: set before this waiter exists, so before any wait it could miss a signal in.
        wire.core.signal.threaded.store(true, Ordering::Relaxed);
        WireWaiter {
            core: wire.core.clone(),
            watch,
            notified: AtomicBool::new(false),
            mode: Mode::Threaded,
        }
    }

    /// Consumes a pending wake or finds a waiting frame.
    fn ready(&self) -> bool {
        // Acquire: pairs with the Release store in `wake`, so whatever the waker published
        // before waking (queued egress) is visible to the drive pass that follows.
        self.notified.swap(false, Ordering::Acquire) || self.core.pending(self.watch)
    }
}

impl Wait for WireWaiter {
    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError> {
        match &self.mode {
            Mode::Simulated(clock) => {
                if self.ready() || timeout == Some(Duration::ZERO) {
                    return Ok(());
                }
                match timeout {
                    Some(t) => {
                        clock.advance(t);
                        Ok(())
                    }
                    None => Err(DriverError::Deadlock),
                }
            }
            #[cfg(feature = "std")]
            Mode::Threaded => {
                let signal = &self.core.signal;
                let deadline = timeout.map(|t| std::time::Instant::now() + t);
                let mut guard = signal.lock.lock().unwrap_or_else(|e| e.into_inner());
                // Bounded by the deadline; without one, by the wake that must come.
                loop {
                    if self.ready() {
                        return Ok(());
                    }
                    match deadline {
                        None => {
                            guard = signal.cond.wait(guard).unwrap_or_else(|e| e.into_inner());
                        }
                        Some(d) => {
                            let now = std::time::Instant::now();
                            if now >= d {
                                return Ok(());
                            }
                            guard = signal
                                .cond
                                .wait_timeout(guard, d - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                }
            }
        }
    }

    fn wake(&self) {
        // Release: pairs with the Acquire swap in `ready`.
        self.notified.store(true, Ordering::Release);
        #[cfg(feature = "std")]
        if matches!(self.mode, Mode::Threaded) {
            // Under the signal lock, so a waiter between its check and its wait cannot miss it.
            drop(
                self.core
                    .signal
                    .lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            self.core.signal.cond.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(dev: &mut WireDevice, frame: &[u8]) {
        let tx = dev.transmit(smoltcp::time::Instant::ZERO).unwrap();
        tx.consume(frame.len(), |buf| buf.copy_from_slice(frame));
    }

    fn recv(dev: &mut WireDevice) -> Option<Vec<u8>> {
        let (rx, _) = dev.receive(smoltcp::time::Instant::ZERO)?;
        Some(rx.consume(|f| f.to_vec()))
    }

    #[test]
    fn inject_skips_faults_and_statistics() {
        let wire = Wire::new(WireConfig {
            max_queue: 2,
            faults: Faults {
                drop_ppm: 1_000_000,
                ..Faults::default()
            },
            ..WireConfig::default()
        });
        let mut a = wire.device(Side::A);
        assert!(wire.inject(Side::A, vec![1; 20]));
        assert!(wire.inject(Side::A, vec![2; 20]));
        assert!(!wire.inject(Side::A, vec![3; 20]), "queue full");
        assert_eq!(recv(&mut a), Some(vec![1; 20]));
        assert_eq!(recv(&mut a), Some(vec![2; 20]));
        assert_eq!(recv(&mut a), None);
        assert_eq!(wire.stats(), WireStats::default());
    }

    #[test]
    fn capture_records_sent_frames_up_to_its_limit() {
        let wire = Wire::new(WireConfig::default());
        let (mut a, mut b) = (wire.device(Side::A), wire.device(Side::B));
        send(&mut a, &[0; 20]);
        wire.capture(2);
        send(&mut a, &[1; 20]);
        send(&mut b, &[2; 20]);
        send(&mut b, &[3; 20]);
        let got = wire.take_captured();
        assert_eq!(got, vec![(Side::B, vec![1; 20]), (Side::A, vec![2; 20])]);
        assert!(wire.take_captured().is_empty(), "taken");
        // Replaying a captured frame delivers it again.
        let (side, frame) = got[0].clone();
        assert!(wire.inject(side, frame));
        assert_eq!(
            recv(&mut b).as_deref(),
            Some(&[0u8; 20][..]),
            "sent before capture"
        );
        assert_eq!(recv(&mut b).as_deref(), Some(&[1u8; 20][..]));
        assert_eq!(recv(&mut b).as_deref(), Some(&[1u8; 20][..]));
        assert_eq!(recv(&mut b), None);
    }
}
